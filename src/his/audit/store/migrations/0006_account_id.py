"""audit: a record names the account it concerns (a change to an account: roles, disabled …).

``account_id`` is null on every record written before it and on every access that concerns no
account; those are hashed without it, as they were. A record that names an account is hashed
with it (ADR 0031). The index serves an account's trail (``GET /api/audit/accounts/{id}``).

Revision ID: audit_0006
Revises: audit_0005
"""

from alembic import op

revision = "audit_0006"
down_revision = "audit_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE audit_log ADD COLUMN account_id uuid")
    op.execute("CREATE INDEX audit_log_account ON audit_log (account_id, seq) WHERE account_id IS NOT NULL")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
