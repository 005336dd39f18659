"""identity: the gateway asks every second which sessions were signed out lately.

Revision ID: identity_0004
Revises: identity_0003
"""

from alembic import op

revision = "identity_0004"
down_revision = "identity_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX refresh_token_revoked_at ON refresh_token (revoked_at) WHERE revoked_at IS NOT NULL")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
