"""identity: the gap-free counter of its access records (ADR 0028), now that each change to an
account is a record of the audit chain (ADR 0031).

Each access event identity commits takes the next number from it in the same statement as its
outbox row; the audit verifier names every number that never reached the audit trail.

Revision ID: identity_0009
Revises: identity_0008
"""

from alembic import op

from his.kernel.db import producer_seq_sql

revision = "identity_0009"
down_revision = "identity_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for stmt in producer_seq_sql():
        op.execute(stmt)


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
