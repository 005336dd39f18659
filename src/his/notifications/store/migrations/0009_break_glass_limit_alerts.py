"""notifications: a second kind of alert for administrators: a clinician went over the limit of
break-the-glass grants within the window (patients' ``emergency_access.over_limit`` event).

Revision ID: notifications_0009
Revises: notifications_0008
"""

from alembic import op

revision = "notifications_0009"
down_revision = "notifications_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE alert DROP CONSTRAINT alert_kind_check")
    op.execute(
        "ALTER TABLE alert ADD CONSTRAINT alert_kind_check "
        "CHECK (kind IN ('break_glass', 'break_glass_limit', 'lab_result'))"
    )


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
