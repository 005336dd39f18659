"""audit: append-only, hash-chained log of PHI access and security events."""
