"""audit: the append-only, hash-chained log; the runtime role may only insert and read it.

Revision ID: audit_0002
Revises: audit_0001
"""

from alembic import op

revision = "audit_0002"
down_revision = "audit_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE audit_log (
            seq bigint PRIMARY KEY CHECK (seq > 0),
            event_id uuid NOT NULL UNIQUE,
            at timestamptz NOT NULL,
            source text NOT NULL,
            actor_id uuid NOT NULL,
            actor_roles text[] NOT NULL,
            patient_id uuid,
            action text NOT NULL,
            resource text NOT NULL,
            purpose text NOT NULL,
            outcome text NOT NULL,
            trace_id text,
            prev_hash bytea NOT NULL,
            hash bytea NOT NULL
        )"""
    )
    op.execute("CREATE INDEX audit_log_patient ON audit_log (patient_id, seq)")
    # Append-only for the service: no UPDATE, DELETE or TRUNCATE, whatever the default grants.
    op.execute("REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM his_audit")
    op.execute(
        """CREATE TABLE patient_account (
            patient_id uuid PRIMARY KEY,
            account_id uuid NOT NULL
        )"""
    )
    op.execute("CREATE INDEX patient_account_account ON patient_account (account_id)")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
