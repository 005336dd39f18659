"""notifications: alerts addressed to one user (first kind: an abnormal or critical lab result,
for the doctor who ordered it), once per order.

An alert's audience is a role ("ADMIN") or one user ("user:<uuid>").

Revision ID: notifications_0005
Revises: notifications_0004
"""

from alembic import op

revision = "notifications_0005"
down_revision = "notifications_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE alert DROP CONSTRAINT alert_kind_check")
    op.execute("ALTER TABLE alert ADD CONSTRAINT alert_kind_check CHECK (kind IN ('break_glass', 'lab_result'))")
    op.execute(
        "ALTER TABLE alert ADD CONSTRAINT alert_audience_check "
        "CHECK (audience ~ '^[A-Z_]+$' OR audience ~ '^user:[0-9a-f-]{36}$')"
    )
    op.execute("CREATE UNIQUE INDEX alert_lab_result_once ON alert ((detail ->> 'order_id')) WHERE kind = 'lab_result'")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
