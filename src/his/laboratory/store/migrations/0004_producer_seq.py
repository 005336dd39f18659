"""laboratory: the gap-free counter of its access records (ADR 0028).

Each access event the service commits takes the next number from it in the same statement as
its outbox row; the audit verifier names every number that never reached the audit trail.

Revision ID: laboratory_0004
Revises: laboratory_0003
"""

from alembic import op

from his.kernel.db import producer_seq_sql

revision = "laboratory_0004"
down_revision = "laboratory_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for stmt in producer_seq_sql():
        op.execute(stmt)


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
