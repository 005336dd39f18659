"""identity: users, password hashes, roles, refresh tokens, signing keys."""
