"""practitioners: time booked with each practitioner, learnt from scheduling's events.

Revision ID: practitioners_0003
Revises: practitioners_0002
"""

from alembic import op

revision = "practitioners_0003"
down_revision = "practitioners_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE booked_time (
            appointment_id uuid PRIMARY KEY,
            practitioner_id uuid NOT NULL,
            during tstzrange NOT NULL,
            learned_at timestamptz NOT NULL DEFAULT now())"""
    )
    op.execute("CREATE INDEX booked_time_by_practitioner ON booked_time USING gist (practitioner_id, during)")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
