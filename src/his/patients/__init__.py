"""patients: the patient master index. Personal data lives here and only here."""
