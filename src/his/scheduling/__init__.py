"""scheduling: slots, appointments, waitlist."""
