"""practitioners: practitioner profiles, shifts, leaves, availability."""
