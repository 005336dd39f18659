"""identity: an address is confirmed before its account signs in.

``email_verified_at`` is when the address was confirmed. Accounts made before this revision
count as confirmed from their creation: administrators made the staff's, and the patients'
have been signing in. ``email_verification`` keeps the one-time links e-mailed at
self-registration as ``password_reset`` keeps the reset links: the SHA-256 of the token, used
once, briefly, a newer one voiding the older.

Revision ID: identity_0008
Revises: identity_0007
"""

from alembic import op

revision = "identity_0008"
down_revision = "identity_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE app_user ADD COLUMN email_verified_at timestamptz")
    op.execute("UPDATE app_user SET email_verified_at = created_at")
    op.execute(
        """CREATE TABLE email_verification (
            token_hash bytea PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES app_user (id),
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            used_at timestamptz,
            voided boolean NOT NULL DEFAULT false
        )"""
    )
    op.execute("CREATE INDEX email_verification_user ON email_verification (user_id) WHERE used_at IS NULL")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
