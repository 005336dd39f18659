"""admissions: wards, rooms and beds; admissions and their bed stays; one charge per night.

What the database guarantees by itself:
- a bed holds at most one active admission, and a patient has at most one (partial unique indexes);
- a bed's state is one of the five, and an occupied bed is the only kind an active admission holds
  (checked by the handlers under row locks; the indexes are the last word under concurrency);
- a night is charged at most once per admission (unique (admission_id, night)).

Revision ID: admissions_0002
Revises: admissions_0001
"""

from alembic import op

revision = "admissions_0002"
down_revision = "admissions_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE ward (
            id uuid PRIMARY KEY,
            name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
            ward_type text NOT NULL CHECK (ward_type ~ '^[a-z][a-z0-9_]{0,31}$'),
            daily_rate numeric(12, 2) NOT NULL CHECK (daily_rate >= 0),
            currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            created_by uuid NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now())"""
    )
    op.execute(
        """CREATE TABLE room (
            id uuid PRIMARY KEY,
            ward_id uuid NOT NULL REFERENCES ward (id),
            label text NOT NULL,
            UNIQUE (ward_id, label))"""
    )
    op.execute(
        """CREATE TABLE bed (
            id uuid PRIMARY KEY,
            ward_id uuid NOT NULL REFERENCES ward (id),
            room_id uuid NOT NULL REFERENCES room (id),
            label text NOT NULL,
            state text NOT NULL DEFAULT 'available'
                CHECK (state IN ('available', 'occupied', 'cleaning', 'closed', 'isolation')),
            version integer NOT NULL DEFAULT 1,
            updated_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (ward_id, label))"""
    )
    op.execute("CREATE INDEX bed_free ON bed (ward_id, label) WHERE state = 'available'")
    op.execute(
        """CREATE TABLE admission (
            id uuid PRIMARY KEY,
            patient_id uuid NOT NULL,
            practitioner_id uuid NOT NULL,
            ward_id uuid NOT NULL REFERENCES ward (id),
            bed_id uuid NOT NULL REFERENCES bed (id),
            status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'discharged')),
            admitted_at timestamptz NOT NULL,
            discharged_at timestamptz,
            admitted_by uuid NOT NULL,
            discharged_by uuid,
            version integer NOT NULL DEFAULT 1,
            CHECK ((status = 'discharged') = (discharged_at IS NOT NULL)),
            CHECK (discharged_at IS NULL OR discharged_at >= admitted_at))"""
    )
    op.execute("CREATE UNIQUE INDEX admission_one_per_bed ON admission (bed_id) WHERE status = 'active'")
    op.execute("CREATE UNIQUE INDEX admission_one_per_patient ON admission (patient_id) WHERE status = 'active'")
    op.execute("CREATE INDEX admission_by_patient ON admission (patient_id, admitted_at DESC)")
    op.execute(
        """CREATE TABLE bed_stay (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            admission_id uuid NOT NULL REFERENCES admission (id),
            ward_id uuid NOT NULL REFERENCES ward (id),
            bed_id uuid NOT NULL REFERENCES bed (id),
            started_at timestamptz NOT NULL,
            ended_at timestamptz,
            CHECK (ended_at IS NULL OR ended_at >= started_at))"""
    )
    op.execute("CREATE UNIQUE INDEX bed_stay_one_open ON bed_stay (admission_id) WHERE ended_at IS NULL")
    op.execute("CREATE INDEX bed_stay_by_admission ON bed_stay (admission_id, started_at)")
    op.execute(
        """CREATE TABLE bed_charge (
            id uuid PRIMARY KEY,
            admission_id uuid NOT NULL REFERENCES admission (id),
            night date NOT NULL,
            ward_id uuid NOT NULL REFERENCES ward (id),
            ward_type text NOT NULL,
            amount numeric(12, 2) NOT NULL CHECK (amount >= 0),
            currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            posted_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT bed_charge_once_per_night UNIQUE (admission_id, night))"""
    )


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
