"""audit: records flag emergency (break-the-glass) access.

Existing records keep NULL: they were hashed without the field and still verify. Every record
appended from now on has true or false, and the field is part of its hash.

Revision ID: audit_0003
Revises: audit_0002
"""

from alembic import op

revision = "audit_0003"
down_revision = "audit_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE audit_log ADD COLUMN flagged boolean")
    op.execute("CREATE INDEX audit_log_flagged ON audit_log (seq) WHERE flagged")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
