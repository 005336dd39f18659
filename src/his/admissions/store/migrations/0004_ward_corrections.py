"""admissions: wards can be corrected (``PATCH /wards/{id}``): a version and who changed them last.

Revision ID: admissions_0004
Revises: admissions_0003
"""

from alembic import op

revision = "admissions_0004"
down_revision = "admissions_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE ward ADD COLUMN version integer NOT NULL DEFAULT 1")
    op.execute("ALTER TABLE ward ADD COLUMN updated_at timestamptz")
    op.execute("ALTER TABLE ward ADD COLUMN updated_by uuid")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
