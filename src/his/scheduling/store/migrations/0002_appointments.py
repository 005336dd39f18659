"""scheduling: appointments that can never collide, patients known from events, the waitlist.

The two exclusion constraints are the whole double-booking guarantee: among appointments that
hold time (booked, checked in, completed) no practitioner and no patient has two overlapping
ranges. Ranges are half-open, so back-to-back appointments are allowed.

Revision ID: scheduling_0002
Revises: scheduling_0001
"""

from alembic import op

revision = "scheduling_0002"
down_revision = "scheduling_0001"
branch_labels = None
depends_on = None

HOLDING = "status IN ('booked', 'checked_in', 'completed')"


def upgrade() -> None:
    op.execute(
        f"""CREATE TABLE appointment (
            id uuid PRIMARY KEY,
            patient_id uuid NOT NULL,
            practitioner_id uuid NOT NULL,
            service text NOT NULL,
            during tstzrange NOT NULL CHECK (NOT isempty(during) AND lower_inc(during) AND NOT upper_inc(during)),
            status text NOT NULL CHECK (status IN ('booked', 'checked_in', 'completed', 'cancelled', 'no_show')),
            version integer NOT NULL DEFAULT 1,
            booked_by uuid NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT appointment_practitioner_free
                EXCLUDE USING gist (practitioner_id WITH =, during WITH &&) WHERE ({HOLDING}),
            CONSTRAINT appointment_patient_free
                EXCLUDE USING gist (patient_id WITH =, during WITH &&) WHERE ({HOLDING}))"""
    )
    op.execute("CREATE INDEX appointment_by_patient ON appointment (patient_id, lower(during))")
    op.execute(
        """CREATE TABLE known_patient (
            patient_id uuid PRIMARY KEY,
            account_id uuid UNIQUE,
            learned_at timestamptz NOT NULL DEFAULT now())"""
    )
    op.execute(
        """CREATE TABLE waitlist_entry (
            id uuid PRIMARY KEY,
            patient_id uuid NOT NULL,
            practitioner_id uuid NOT NULL,
            service text NOT NULL,
            status text NOT NULL CHECK (status IN ('waiting', 'offered', 'booked', 'withdrawn')),
            offered_during tstzrange,
            offer_expires_at timestamptz,
            created_by uuid NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CHECK ((status = 'offered') = (offered_during IS NOT NULL)))"""
    )
    op.execute(
        "CREATE UNIQUE INDEX waitlist_one_open_entry ON waitlist_entry (patient_id, practitioner_id, service) "
        "WHERE status IN ('waiting', 'offered')"
    )
    op.execute("CREATE INDEX waitlist_queue ON waitlist_entry (practitioner_id, created_at) WHERE status = 'waiting'")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
