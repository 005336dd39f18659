"""billing: coverage changes ordered by when they were made, and wards' corrected tariffs.

- ``coverage.changed_at``: when patients made the change (its event's time), which orders the
  changes of one day, so that a stale change replayed from the DLQ never wins over a correction.
- ``ward_tariff``: wards' tariffs as admissions corrected them (``his.admissions.ward.updated.v1``):
  a bed night posted earlier in a currency billing does not invoice in is billed at the corrected
  tariff when it is replayed from the DLQ.

Revision ID: billing_0004
Revises: billing_0003
"""

from alembic import op

revision = "billing_0004"
down_revision = "billing_0003"
branch_labels = None
depends_on = None

MONEY = "numeric(12,2)"

STATEMENTS = [
    "ALTER TABLE coverage ADD COLUMN changed_at timestamptz",
    "UPDATE coverage SET changed_at = recorded_at",
    "ALTER TABLE coverage ALTER COLUMN changed_at SET NOT NULL",
    "DROP INDEX coverage_by_patient",
    "CREATE INDEX coverage_by_patient ON coverage (patient_id, effective_from DESC, changed_at DESC, id DESC)",
    f"""CREATE TABLE ward_tariff (
        event_id uuid PRIMARY KEY,
        ward_id uuid NOT NULL,
        ward_type text NOT NULL,
        daily_rate {MONEY} NOT NULL CHECK (daily_rate >= 0),
        currency text NOT NULL CHECK (currency ~ '^[A-Z]{{3}}$'),
        changed_at timestamptz NOT NULL)""",
    "CREATE INDEX ward_tariff_by_ward ON ward_tariff (ward_id, changed_at DESC)",
]


def upgrade() -> None:
    for stmt in STATEMENTS:
        op.execute(stmt)


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
