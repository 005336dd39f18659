"""identity: an administrator can require a new password; a session's sign-in time bounds it.

``password_change_required``: the next sign-in must change the password before a token is issued.
``session_started_at``: when the sign-in that began a refresh-token family happened; rotation
copies it, so a session ends ``SESSION_MAX_AGE`` after its sign-in however often it is refreshed.
Tokens issued before this migration count from their own issue.

Revision ID: identity_0005
Revises: identity_0004
"""

from alembic import op

revision = "identity_0005"
down_revision = "identity_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE app_user ADD COLUMN password_change_required boolean NOT NULL DEFAULT false")
    op.execute("ALTER TABLE refresh_token ADD COLUMN session_started_at timestamptz")
    op.execute("UPDATE refresh_token SET session_started_at = issued_at")
    op.execute("ALTER TABLE refresh_token ALTER COLUMN session_started_at SET NOT NULL")
    op.execute("CREATE INDEX refresh_token_user ON refresh_token (user_id) WHERE revoked_at IS NULL")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
