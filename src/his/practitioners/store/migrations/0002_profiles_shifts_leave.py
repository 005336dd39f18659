"""practitioners: profiles, shifts (never overlapping for one person) and leave requests.

Revision ID: practitioners_0002
Revises: practitioners_0001
"""

from alembic import op

revision = "practitioners_0002"
down_revision = "practitioners_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE practitioner (
            id uuid PRIMARY KEY,
            full_name text NOT NULL CHECK (length(full_name) BETWEEN 1 AND 200),
            specialty text NOT NULL,
            user_id uuid UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now())"""
    )
    op.execute(
        """CREATE TABLE shift (
            id uuid PRIMARY KEY,
            practitioner_id uuid NOT NULL REFERENCES practitioner (id),
            during tstzrange NOT NULL CHECK (NOT isempty(during) AND lower_inc(during) AND NOT upper_inc(during)),
            created_by uuid,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT shift_no_overlap EXCLUDE USING gist (practitioner_id WITH =, during WITH &&))"""
    )
    op.execute(
        """CREATE TABLE leave_request (
            id uuid PRIMARY KEY,
            practitioner_id uuid NOT NULL REFERENCES practitioner (id),
            during tstzrange NOT NULL CHECK (NOT isempty(during)),
            status text NOT NULL CHECK (status IN ('requested', 'approved', 'rejected', 'cancelled')),
            requested_by uuid,
            decided_by uuid,
            decided_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now())"""
    )
    op.execute("CREATE INDEX leave_by_practitioner ON leave_request USING gist (practitioner_id, during)")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
