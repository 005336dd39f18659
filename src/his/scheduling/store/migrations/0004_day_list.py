"""scheduling: a practitioner's day list (``GET /appointments?practitioner_id=…&date=…``) reads their
appointments in every state that start in a day: an index by practitioner and start, as
``appointment_by_patient`` is by patient (the exclusion constraint's index holds only the
appointments that hold time, and by overlap, not by start). The few appointments of one start
are ordered by id in the query.

Revision ID: scheduling_0004
Revises: scheduling_0003
"""

from alembic import op

revision = "scheduling_0004"
down_revision = "scheduling_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX appointment_by_practitioner ON appointment (practitioner_id, lower(during))")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
