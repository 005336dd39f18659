"""console: kernel tables (outbox, inbox) and the sessions of signed-in browsers.

A session is kept under the SHA-256 of its cookie, never the cookie; its access and refresh
tokens are one ciphertext bound to that digest (``his.kernel.crypto.FieldCipher``).

Revision ID: console_0001
Revises:
"""

from alembic import op

from his.kernel.db import kernel_tables_sql

revision = "console_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    for stmt in kernel_tables_sql():
        op.execute(stmt)
    op.execute("CREATE INDEX inbox_received_at ON inbox (received_at)")
    op.execute(
        """CREATE TABLE session (
            id bytea PRIMARY KEY CHECK (octet_length(id) = 32),
            user_id uuid NOT NULL,
            roles text[] NOT NULL,
            csrf text NOT NULL CHECK (length(csrf) >= 32),
            locale text NOT NULL CHECK (locale IN ('en', 'tr')),
            tokens bytea NOT NULL,
            created_at timestamptz NOT NULL,
            seen_at timestamptz NOT NULL,
            CHECK (seen_at >= created_at)
        )"""
    )
    op.execute("CREATE INDEX session_seen_at ON session (seen_at)")
    op.execute("CREATE INDEX session_created_at ON session (created_at)")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
