"""notifications: a delivery keeps the trace context of the event that queued it, so sending it
is a span of that event's trace (a booking's confirmation is in the booking's trace).

Revision ID: notifications_0006
Revises: notifications_0005
"""

from alembic import op

revision = "notifications_0006"
down_revision = "notifications_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE delivery ADD COLUMN traceparent text")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
