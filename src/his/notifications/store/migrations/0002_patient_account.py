"""notifications: which account owns which patient (from patient.registered), for owner checks.

Revision ID: notifications_0002
Revises: notifications_0001
"""

from alembic import op

revision = "notifications_0002"
down_revision = "notifications_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE patient_account (patient_id uuid PRIMARY KEY, account_id uuid NOT NULL)")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
