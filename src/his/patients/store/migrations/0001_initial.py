"""patients: kernel tables and the patient master index.

Revision ID: patients_0001
Revises:
"""

from alembic import op

from his.kernel.db import kernel_tables_sql

revision = "patients_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    for stmt in kernel_tables_sql():
        op.execute(stmt)
    op.execute("CREATE SEQUENCE mrn_seq")
    op.execute(
        """CREATE TABLE patient (
            id uuid PRIMARY KEY,
            mrn text NOT NULL UNIQUE,
            given_name text NOT NULL,
            family_name text NOT NULL,
            birth_date date NOT NULL,
            sex text NOT NULL CHECK (sex IN ('female', 'male', 'other', 'unknown')),
            email text,
            phone text,
            created_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    op.execute("CREATE INDEX patient_family_name ON patient (lower(family_name))")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
