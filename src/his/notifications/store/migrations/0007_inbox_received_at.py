"""notifications: the inbox is pruned by age, so its receipt time is indexed.

The outbox relay deletes inbox rows older than ``HIS_INBOX_RETENTION_DAYS`` (longer than any
stream keeps an event, so every redelivery still finds its row).

Revision ID: notifications_0007
Revises: notifications_0006
"""

from alembic import op

revision = "notifications_0007"
down_revision = "notifications_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX inbox_received_at ON inbox (received_at)")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
