"""notifications: deliveries become a schedule (due time, attempts, context), and preferences.

A delivery is queued once per causing event, template and channel (unique), so redelivered
events never queue a second message; a reminder is queued once per appointment time.

Revision ID: notifications_0004
Revises: notifications_0003
"""

from alembic import op

revision = "notifications_0004"
down_revision = "notifications_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE delivery DROP CONSTRAINT delivery_status_check")
    op.execute(
        "ALTER TABLE delivery ADD CONSTRAINT delivery_status_check "
        "CHECK (status IN ('queued', 'sent', 'failed', 'suppressed', 'cancelled'))"
    )
    op.execute("ALTER TABLE delivery ADD COLUMN due_at timestamptz NOT NULL DEFAULT now()")
    op.execute("ALTER TABLE delivery ADD COLUMN attempts integer NOT NULL DEFAULT 0")
    op.execute("ALTER TABLE delivery ADD COLUMN last_error text")
    op.execute("ALTER TABLE delivery ADD COLUMN sent_at timestamptz")
    op.execute("ALTER TABLE delivery ADD COLUMN appointment_id uuid")
    op.execute("ALTER TABLE delivery ADD COLUMN context jsonb NOT NULL DEFAULT '{}'::jsonb")
    op.execute("CREATE UNIQUE INDEX delivery_once ON delivery (cause_event_id, template, channel)")
    op.execute("CREATE INDEX delivery_due ON delivery (due_at) WHERE status = 'queued'")
    op.execute(
        "CREATE UNIQUE INDEX reminder_once ON delivery (appointment_id, channel, (context->>'start')) "
        "WHERE template = 'appointment_reminder' AND status IN ('queued', 'sent')"
    )
    op.execute(
        """CREATE TABLE preference (
            patient_id uuid PRIMARY KEY,
            email boolean NOT NULL DEFAULT true,
            sms boolean NOT NULL DEFAULT false,
            opted_out boolean NOT NULL DEFAULT false,
            updated_at timestamptz NOT NULL DEFAULT now())"""
    )


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
