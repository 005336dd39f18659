"""identity: one-time links that reset a forgotten password.

Only the SHA-256 of a link's token is kept. A link works once (``used_at``) and briefly
(``expires_at``); asking again voids the links not used yet (``used_at`` set, ``voided``).

Revision ID: identity_0007
Revises: identity_0006
"""

from alembic import op

revision = "identity_0007"
down_revision = "identity_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE password_reset (
            token_hash bytea PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES app_user (id),
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            used_at timestamptz,
            voided boolean NOT NULL DEFAULT false
        )"""
    )
    op.execute("CREATE INDEX password_reset_user ON password_reset (user_id) WHERE used_at IS NULL")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
