"""notifications: kernel tables and the delivery history.

Revision ID: notifications_0001
Revises:
"""

from alembic import op

from his.kernel.db import kernel_tables_sql

revision = "notifications_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    for stmt in kernel_tables_sql():
        op.execute(stmt)
    op.execute(
        """CREATE TABLE delivery (
            id uuid PRIMARY KEY,
            patient_id uuid NOT NULL,
            template text NOT NULL,
            channel text NOT NULL,
            status text NOT NULL CHECK (status IN ('queued', 'sent', 'failed', 'suppressed')),
            cause_event_id uuid NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    op.execute("CREATE INDEX delivery_patient ON delivery (patient_id, created_at)")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
