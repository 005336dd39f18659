"""laboratory: the inbox is pruned by age, so its receipt time is indexed.

The outbox relay deletes inbox rows older than ``HIS_INBOX_RETENTION_DAYS`` (longer than any
stream keeps an event, so every redelivery still finds its row).

Revision ID: laboratory_0003
Revises: laboratory_0002
"""

from alembic import op

revision = "laboratory_0003"
down_revision = "laboratory_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX inbox_received_at ON inbox (received_at)")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
