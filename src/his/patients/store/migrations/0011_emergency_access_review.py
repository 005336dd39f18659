"""patients: the review of break-the-glass grants (ADR 0030).

Each grant gets its review (state, reviewer, time, note: the note stays here, never on the bus)
and whether it went over its clinician's limit; ``emergency_read`` notes what patients gave the
clinician under the grant (resource, action, time), so the review queue shows what was read.
Grants made before this revision are pending.

Revision ID: patients_0011
Revises: patients_0010
"""

from alembic import op

revision = "patients_0011"
down_revision = "patients_0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """ALTER TABLE emergency_grant
               ADD COLUMN over_limit boolean NOT NULL DEFAULT false,
               ADD COLUMN review_state text NOT NULL DEFAULT 'pending'
                   CHECK (review_state IN ('pending', 'reviewed', 'escalated')),
               ADD COLUMN reviewed_by uuid,
               ADD COLUMN reviewed_at timestamptz,
               ADD COLUMN review_note text CHECK (length(review_note) <= 2000),
               ADD CHECK ((review_state = 'pending') = (reviewed_by IS NULL)),
               ADD CHECK ((reviewed_by IS NULL) = (reviewed_at IS NULL))"""
    )
    op.execute("CREATE INDEX emergency_grant_of_user ON emergency_grant (user_id, granted_at DESC)")
    op.execute(
        "CREATE INDEX emergency_grant_pending ON emergency_grant (granted_at DESC, id) WHERE review_state = 'pending'"
    )
    op.execute(
        """CREATE TABLE emergency_read (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            grant_id uuid NOT NULL REFERENCES emergency_grant (id),
            resource text NOT NULL,
            action text NOT NULL,
            at timestamptz NOT NULL
        )"""
    )
    op.execute("CREATE INDEX emergency_read_of_grant ON emergency_read (grant_id, at)")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
