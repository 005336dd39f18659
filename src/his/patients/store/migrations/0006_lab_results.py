"""patients: the chart's copy of lab results, from the laboratory's ``order.resulted`` events.

One row per (order, test): the consumer's inbox makes each event apply once, and the unique key
is the backstop should an order's results ever arrive again under another event id.

Revision ID: patients_0006
Revises: patients_0005
"""

from alembic import op

revision = "patients_0006"
down_revision = "patients_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE lab_result (
            order_id uuid NOT NULL,
            code text NOT NULL CHECK (code ~ '^[A-Z0-9]{1,16}$'),
            patient_id uuid NOT NULL REFERENCES patient (id),
            ordered_by uuid NOT NULL,
            priority text NOT NULL,
            position smallint NOT NULL,
            value text NOT NULL CHECK (length(value) BETWEEN 1 AND 64),
            unit text,
            reference_low numeric,
            reference_high numeric,
            flag text NOT NULL CHECK (flag IN ('N', 'L', 'H', 'LL', 'HH', 'A')),
            resulted_at timestamptz NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT lab_result_once UNIQUE (order_id, code))"""
    )
    op.execute("CREATE INDEX lab_result_by_patient ON lab_result (patient_id, resulted_at DESC, order_id)")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
