"""notifications: alerts for staff of one role (first kind: break-the-glass, for ADMIN).

Revision ID: notifications_0003
Revises: notifications_0002
"""

from alembic import op

revision = "notifications_0003"
down_revision = "notifications_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE alert (
            id uuid PRIMARY KEY,
            kind text NOT NULL CHECK (kind IN ('break_glass')),
            audience text NOT NULL,
            patient_id uuid,
            actor_id uuid,
            detail jsonb NOT NULL DEFAULT '{}',
            cause_event_id uuid NOT NULL UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    op.execute("CREATE INDEX alert_audience ON alert (audience, created_at DESC, id)")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
