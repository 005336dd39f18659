"""patients: care relationships, break-the-glass grants, and which users are clinicians.

Revision ID: patients_0003
Revises: patients_0002
"""

from alembic import op

revision = "patients_0003"
down_revision = "patients_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Clinician accounts (DOCTOR, NURSE), learnt from identity's user.registered events: a care
    # relationship may only name one of them, never an id from another id space.
    op.execute(
        """CREATE TABLE clinician (
            user_id uuid PRIMARY KEY,
            roles text[] NOT NULL,
            known_since timestamptz NOT NULL DEFAULT now()
        )"""
    )
    op.execute(
        """CREATE TABLE care_relationship (
            id uuid PRIMARY KEY,
            patient_id uuid NOT NULL REFERENCES patient (id),
            user_id uuid NOT NULL,
            source text NOT NULL CHECK (source IN ('assignment', 'appointment', 'admission')),
            valid_from timestamptz NOT NULL,
            valid_until timestamptz,
            created_by uuid,
            ended_by uuid,
            created_at timestamptz NOT NULL DEFAULT now(),
            CHECK (valid_until IS NULL OR valid_until >= valid_from)
        )"""
    )
    op.execute("CREATE INDEX care_relationship_member ON care_relationship (patient_id, user_id, valid_from)")
    op.execute(
        """CREATE TABLE emergency_grant (
            id uuid PRIMARY KEY,
            patient_id uuid NOT NULL REFERENCES patient (id),
            user_id uuid NOT NULL,
            user_roles text[] NOT NULL,
            reason text NOT NULL CHECK (char_length(reason) BETWEEN 20 AND 500),
            granted_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            CHECK (expires_at > granted_at)
        )"""
    )
    op.execute("CREATE INDEX emergency_grant_holder ON emergency_grant (patient_id, user_id, expires_at)")
    op.execute("CREATE INDEX emergency_grant_recent ON emergency_grant (granted_at DESC, id)")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
