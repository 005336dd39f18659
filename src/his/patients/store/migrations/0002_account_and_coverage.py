"""patients: link to a user account (one patient per account) and insurance coverage.

Revision ID: patients_0002
Revises: patients_0001
"""

from alembic import op

revision = "patients_0002"
down_revision = "patients_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE patient ADD COLUMN user_id uuid UNIQUE")
    op.execute("ALTER TABLE patient ADD COLUMN coverage_payer text")
    op.execute("ALTER TABLE patient ADD COLUMN coverage_member_id text")
    op.execute(
        "ALTER TABLE patient ADD CONSTRAINT coverage_complete "
        "CHECK ((coverage_payer IS NULL) = (coverage_member_id IS NULL))"
    )
    op.execute("CREATE INDEX patient_family_prefix ON patient (lower(family_name) text_pattern_ops)")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
