"""patients: medical-record entries written by clinicians; their text is encrypted at rest.

Revision ID: patients_0004
Revises: patients_0003
"""

from alembic import op

revision = "patients_0004"
down_revision = "patients_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE record_entry (
            id uuid PRIMARY KEY,
            patient_id uuid NOT NULL REFERENCES patient (id),
            kind text NOT NULL CHECK (kind IN ('note', 'diagnosis', 'allergy', 'medication', 'observation')),
            code text CHECK (code ~ '^[A-Za-z0-9.\\-]{1,32}$'),
            text_cipher bytea NOT NULL,
            author_id uuid NOT NULL,
            author_roles text[] NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now())"""
    )
    op.execute("CREATE INDEX record_entry_by_patient ON record_entry (patient_id, created_at DESC)")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
