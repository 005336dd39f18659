"""identity: users, refresh-token families, signing keys, login failures.

Revision ID: identity_0002
Revises: identity_0001
"""

from alembic import op

revision = "identity_0002"
down_revision = "identity_0001"
branch_labels = None
depends_on = None

ROLES = "'ADMIN','RECEPTIONIST','DOCTOR','NURSE','LAB_TECH','BILLING','PATIENT','AUDITOR'"


def upgrade() -> None:
    op.execute(
        f"""CREATE TABLE app_user (
            id uuid PRIMARY KEY,
            email text NOT NULL,
            email_key text NOT NULL UNIQUE,
            full_name text NOT NULL,
            password_hash text NOT NULL,
            roles text[] NOT NULL CHECK (cardinality(roles) > 0 AND roles <@ ARRAY[{ROLES}]::text[]),
            created_at timestamptz NOT NULL DEFAULT now(),
            disabled_at timestamptz
        )"""
    )
    op.execute(
        """CREATE TABLE refresh_token (
            id uuid PRIMARY KEY,
            token_hash bytea NOT NULL UNIQUE,
            family_id uuid NOT NULL,
            user_id uuid NOT NULL REFERENCES app_user (id),
            issued_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            rotated_at timestamptz,
            revoked_at timestamptz
        )"""
    )
    op.execute("CREATE INDEX refresh_token_family ON refresh_token (family_id)")
    op.execute(
        """CREATE TABLE signing_key (
            kid text PRIMARY KEY,
            private_pem bytea NOT NULL,
            public_jwk jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            retires_at timestamptz NOT NULL
        )"""
    )
    op.execute("CREATE TABLE login_failure (key text NOT NULL, at timestamptz NOT NULL DEFAULT now())")
    op.execute("CREATE INDEX login_failure_key_at ON login_failure (key, at)")


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
