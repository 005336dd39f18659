"""patients: invitations that let a patient link their record to their own account (the portal).

Reception issues an invitation for one patient; its code goes to the patient's e-mail address or
phone and is redeemed once, before it expires, from a PATIENT account that has no record yet.
Only the code's SHA-256 is stored (``code_digest``); a newer invitation supersedes the patient's
outstanding one (``revoked_at``), so each patient has at most one that can still be redeemed.

Revision ID: patients_0009
Revises: patients_0008
"""

from alembic import op

revision = "patients_0009"
down_revision = "patients_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE invitation (
            id uuid PRIMARY KEY,
            patient_id uuid NOT NULL REFERENCES patient (id),
            code_digest bytea NOT NULL UNIQUE CHECK (length(code_digest) = 32),
            channel text NOT NULL CHECK (channel IN ('email', 'sms')),
            issued_by uuid NOT NULL,
            issued_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            redeemed_at timestamptz,
            redeemed_by uuid,
            revoked_at timestamptz,
            CHECK (expires_at > issued_at),
            CHECK ((redeemed_at IS NULL) = (redeemed_by IS NULL)),
            CHECK (redeemed_at IS NULL OR revoked_at IS NULL)
        )"""
    )
    op.execute(
        "CREATE UNIQUE INDEX invitation_outstanding ON invitation (patient_id) "
        "WHERE redeemed_at IS NULL AND revoked_at IS NULL"
    )


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
