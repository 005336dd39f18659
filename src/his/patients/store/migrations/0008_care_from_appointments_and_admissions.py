"""patients: care relationships that follow from appointments and admissions.

A practitioner is in the care of a patient they have an appointment with (from its booking to a
day after its end; a cancellation ends it) or that they admitted (from the admission to a day
after the discharge). Patients learns these from scheduling's and admissions' events, and which
user account a practitioner is from practitioners' events. The events of one appointment travel
on different consumers, so they may arrive in any order: each row is merged commutatively (the
latest version's end, the earliest start, the first cancellation).

``care_link`` is every care relationship, assigned or from an event, with the user it names:
what the access rule reads.

Revision ID: patients_0008
Revises: patients_0007
"""

from alembic import op

revision = "patients_0008"
down_revision = "patients_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE known_practitioner (
            practitioner_id uuid PRIMARY KEY,
            account_id uuid NOT NULL
        )"""
    )
    op.execute("CREATE INDEX known_practitioner_account ON known_practitioner (account_id)")
    op.execute(
        """CREATE TABLE practitioner_care (
            source text NOT NULL CHECK (source IN ('appointment', 'admission')),
            source_id uuid NOT NULL,
            patient_id uuid NOT NULL,
            practitioner_id uuid,
            version int NOT NULL DEFAULT 0,
            valid_from timestamptz NOT NULL,
            valid_until timestamptz,
            ended_at timestamptz,
            PRIMARY KEY (source, source_id)
        )"""
    )
    op.execute("CREATE INDEX practitioner_care_patient ON practitioner_care (patient_id, practitioner_id)")
    op.execute(
        """CREATE VIEW care_link AS
            SELECT id, patient_id, user_id, source, valid_from, valid_until FROM care_relationship
            UNION ALL
            SELECT c.source_id, c.patient_id, k.account_id, c.source, c.valid_from,
                   CASE WHEN c.ended_at IS NULL THEN c.valid_until
                        ELSE greatest(c.valid_from, least(c.valid_until, c.ended_at)) END
            FROM practitioner_care c JOIN known_practitioner k ON k.practitioner_id = c.practitioner_id"""
    )


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
