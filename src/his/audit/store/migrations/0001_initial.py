"""audit: kernel tables (outbox, inbox).

Revision ID: audit_0001
Revises:
"""

from alembic import op

from his.kernel.db import kernel_tables_sql

revision = "audit_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    for stmt in kernel_tables_sql():
        op.execute(stmt)


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
