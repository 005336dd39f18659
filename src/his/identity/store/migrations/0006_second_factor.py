"""identity: the second factor (TOTP), recovery codes and the roles that must have one.

``totp_secret`` and ``totp_pending`` are encrypted (AES-256-GCM, bound to the account's id);
``totp_last_step`` keeps each code from being used twice. Only the SHA-256 of a recovery code is
kept. ``mfa_policy`` lists the roles whose accounts sign in with a second factor.

Revision ID: identity_0006
Revises: identity_0005
"""

from alembic import op

revision = "identity_0006"
down_revision = "identity_0005"
branch_labels = None
depends_on = None

ROLES = "'ADMIN','RECEPTIONIST','DOCTOR','NURSE','LAB_TECH','BILLING','PATIENT','AUDITOR'"


def upgrade() -> None:
    op.execute(
        """ALTER TABLE app_user
           ADD COLUMN totp_secret bytea,
           ADD COLUMN totp_pending bytea,
           ADD COLUMN totp_enabled_at timestamptz,
           ADD COLUMN totp_last_step bigint,
           ADD CHECK ((totp_secret IS NULL) = (totp_enabled_at IS NULL))"""
    )
    op.execute(
        """CREATE TABLE recovery_code (
            user_id uuid NOT NULL REFERENCES app_user (id),
            code_hash bytea NOT NULL,
            used_at timestamptz,
            PRIMARY KEY (user_id, code_hash)
        )"""
    )
    op.execute(
        f"""CREATE TABLE mfa_policy (
            role text PRIMARY KEY CHECK (role IN ({ROLES})),
            set_at timestamptz NOT NULL,
            set_by uuid
        )"""
    )


def downgrade() -> None:
    raise NotImplementedError("forward-only migrations")
