"""admissions: wards, rooms, beds, admissions, transfers, nightly bed charges."""
