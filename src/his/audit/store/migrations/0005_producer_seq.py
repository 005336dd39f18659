"""audit: each record keeps its producer's number; the checkpoint witness's count is kept here too.

``producer_seq`` is the access's number in its producer's gap-free sequence (ADR 0028): records
written before it have NULL and are hashed without it, every numbered record is hashed with it.
``checkpoint_count`` holds the number and MAC of the last checkpoint written to the witness file,
so a file whose last lines were cut off is seen by the verifier.

Revision ID: audit_0005
Revises: audit_0004
"""

from alembic import op

revision = "audit_0005"
down_revision = "audit_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE audit_log ADD COLUMN producer_seq bigint")
    op.execute("CREATE INDEX audit_log_producer ON audit_log (source, producer_seq) WHERE producer_seq IS NOT NULL")
    op.execute(
        """CREATE TABLE checkpoint_count (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            n bigint NOT NULL,
            mac bytea NOT NULL
        )"""
    )


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
