"""Tables and queries of the identity service: its ports (``his.identity.ports``) on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import orjson

from his.access import STAFF
from his.identity.domain import EmailTakenError, RefreshToken, StaffMember, User, staff_roles
from his.identity.keys import StoredKey, jwk_of
from his.kernel.db import Connection, Record, Unit, UnitOfWork, UnitsOn

__all__ = ["EmailTakenError", "IdentityStore", "IdentityUnit"]

#: The roles that put an account in the staff directory (``domain.in_directory``).
STAFF_ROLES = sorted(r.value for r in STAFF)
USER_COLUMNS = (
    "id, email, email_key, full_name, password_hash, roles, created_at, disabled_at, password_change_required,"
    " totp_secret, totp_pending, totp_enabled_at, totp_last_step, email_verified_at"
)


def _user(row: Record) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        email_key=row["email_key"],
        full_name=row["full_name"],
        password_hash=row["password_hash"],
        roles=tuple(row["roles"]),
        created_at=row["created_at"],
        disabled_at=row["disabled_at"],
        password_change_required=row["password_change_required"],
        totp_secret=row["totp_secret"],
        totp_pending=row["totp_pending"],
        totp_enabled_at=row["totp_enabled_at"],
        totp_last_step=row["totp_last_step"],
        email_verified_at=row["email_verified_at"],
    )


def _count(status: str) -> int:
    """The rows an UPDATE or DELETE touched, from its command tag."""
    return int(status.rsplit(maxsplit=1)[-1])


class PgUsers:
    """Identity's ``Users`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(
        self,
        *,
        user_id: uuid.UUID,
        email: str,
        email_key: str,
        full_name: str,
        password_hash: str,
        roles: Sequence[str],
        at: datetime,
        verified: bool,
    ) -> None:
        done = await self.conn.fetchval(
            """INSERT INTO app_user (id, email, email_key, full_name, password_hash, roles, created_at,
                                     email_verified_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (email_key) DO NOTHING RETURNING id""",
            user_id,
            email,
            email_key,
            full_name,
            password_hash,
            list(roles),
            at,
            at if verified else None,
        )
        if done is None:
            raise EmailTakenError(email_key)

    async def has_admin(self, *, lock: bool = False) -> bool:
        if lock:
            await self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('his.identity.admin'))")
        return bool(await self.conn.fetchval("SELECT 1 FROM app_user WHERE 'ADMIN' = ANY(roles) LIMIT 1"))

    async def by_email(self, email_key: str) -> User | None:
        row = await self.conn.fetchrow(f"SELECT {USER_COLUMNS} FROM app_user WHERE email_key = $1", email_key)
        return _user(row) if row else None

    async def get(self, user_id: uuid.UUID) -> User | None:
        row = await self.conn.fetchrow(f"SELECT {USER_COLUMNS} FROM app_user WHERE id = $1", user_id)
        return _user(row) if row else None

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        await self.conn.execute("UPDATE app_user SET password_hash = $2 WHERE id = $1", user_id, password_hash)

    async def require_password_change(self, user_id: uuid.UUID, required: bool) -> None:
        await self.conn.execute("UPDATE app_user SET password_change_required = $2 WHERE id = $1", user_id, required)

    async def set_full_name(self, user_id: uuid.UUID, full_name: str) -> None:
        await self.conn.execute("UPDATE app_user SET full_name = $2 WHERE id = $1", user_id, full_name)

    async def verify_email(self, user_id: uuid.UUID, at: datetime) -> bool:
        done = await self.conn.fetchval(
            "UPDATE app_user SET email_verified_at = $2 WHERE id = $1 AND email_verified_at IS NULL RETURNING id",
            user_id,
            at,
        )
        return done is not None

    async def set_roles(self, user_id: uuid.UUID, roles: Sequence[str]) -> None:
        await self.conn.execute("UPDATE app_user SET roles = $2 WHERE id = $1", user_id, sorted(set(roles)))

    async def set_disabled(self, user_id: uuid.UUID, at: datetime | None) -> None:
        await self.conn.execute("UPDATE app_user SET disabled_at = $2 WHERE id = $1", user_id, at)

    async def active_admins(self, *, lock: bool = False) -> int:
        if lock:
            await self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('his.identity.admin'))")
        return int(
            await self.conn.fetchval("SELECT count(*) FROM app_user WHERE 'ADMIN' = ANY(roles) AND disabled_at IS NULL")
        )

    async def set_totp_pending(self, user_id: uuid.UUID, secret: bytes | None) -> None:
        await self.conn.execute("UPDATE app_user SET totp_pending = $2 WHERE id = $1", user_id, secret)

    async def enable_totp(self, user_id: uuid.UUID, secret: bytes, *, step: int, at: datetime) -> None:
        await self.conn.execute(
            """UPDATE app_user SET totp_secret = $2, totp_enabled_at = $3, totp_last_step = $4, totp_pending = NULL
               WHERE id = $1""",
            user_id,
            secret,
            at,
            step,
        )

    async def reset_totp(self, user_id: uuid.UUID) -> None:
        await self.conn.execute(
            """UPDATE app_user SET totp_secret = NULL, totp_pending = NULL, totp_enabled_at = NULL,
                                   totp_last_step = NULL
               WHERE id = $1""",
            user_id,
        )

    async def use_totp_step(self, user_id: uuid.UUID, step: int) -> bool:
        done = await self.conn.fetchval(
            """UPDATE app_user SET totp_last_step = $2
               WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2) RETURNING id""",
            user_id,
            step,
        )
        return done is not None

    async def search(self, q: str, *, limit: int) -> list[User]:
        pattern = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = await self.conn.fetch(
            f"""SELECT {USER_COLUMNS} FROM app_user
                WHERE email_key LIKE $1 OR lower(full_name) LIKE $1
                ORDER BY full_name, id LIMIT $2""",
            pattern,
            limit,
        )
        return [_user(r) for r in rows]

    async def staff(self, ids: Sequence[uuid.UUID]) -> list[StaffMember]:
        rows = await self.conn.fetch(
            """SELECT id, full_name, roles FROM app_user
               WHERE id = ANY($1::uuid[]) AND disabled_at IS NULL AND roles && $2::text[]""",
            list(ids),
            STAFF_ROLES,
        )
        return [StaffMember(id=r["id"], full_name=r["full_name"], roles=staff_roles(r["roles"])) for r in rows]


class PgRefreshTokens:
    """Identity's ``RefreshTokens`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(
        self,
        *,
        token_id: uuid.UUID,
        token_hash: bytes,
        family_id: uuid.UUID,
        user_id: uuid.UUID,
        at: datetime,
        expires_at: datetime,
        started_at: datetime | None = None,
    ) -> None:
        await self.conn.execute(
            """INSERT INTO refresh_token (id, token_hash, family_id, user_id, issued_at, expires_at, session_started_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            token_id,
            token_hash,
            family_id,
            user_id,
            at,
            expires_at,
            started_at or at,
        )

    async def get(self, token_hash: bytes, *, lock: bool = False) -> RefreshToken | None:
        row = await self.conn.fetchrow(
            f"""SELECT id, family_id, user_id, expires_at, rotated_at, revoked_at, session_started_at
                FROM refresh_token
                WHERE token_hash = $1{" FOR UPDATE" if lock else ""}""",
            token_hash,
        )
        if row is None:
            return None
        return RefreshToken(
            id=str(row["id"]),
            family_id=str(row["family_id"]),
            user_id=str(row["user_id"]),
            expires_at=row["expires_at"],
            rotated_at=row["rotated_at"],
            revoked_at=row["revoked_at"],
            started_at=row["session_started_at"],
        )

    async def mark_rotated(self, token_id: str, at: datetime) -> None:
        await self.conn.execute("UPDATE refresh_token SET rotated_at = $2 WHERE id = $1", uuid.UUID(token_id), at)

    async def revoke_family(self, family_id: str, at: datetime) -> int:
        return _count(
            await self.conn.execute(
                "UPDATE refresh_token SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
                uuid.UUID(family_id),
                at,
            )
        )

    async def revoke_others(self, user_id: uuid.UUID, keep: str | None, at: datetime) -> int:
        return _count(
            await self.conn.execute(
                """UPDATE refresh_token SET revoked_at = $3
                   WHERE user_id = $1 AND revoked_at IS NULL AND family_id IS DISTINCT FROM $2::uuid""",
                user_id,
                uuid.UUID(keep) if keep else None,
                at,
            )
        )

    async def revoked_since(self, since: datetime) -> list[tuple[str, datetime]]:
        rows = await self.conn.fetch(
            """SELECT family_id, max(revoked_at) AS revoked_at FROM refresh_token
               WHERE revoked_at >= $1 GROUP BY family_id""",
            since,
        )
        return [(str(r["family_id"]), r["revoked_at"]) for r in rows]


class PgSigningKeys:
    """Identity's ``SigningKeys`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def current(self, now: datetime, *, lock: bool = False) -> list[StoredKey]:
        if lock:
            await self.conn.execute("SELECT pg_advisory_xact_lock(hashtext('his.identity.signing_key'))")
        rows = await self.conn.fetch(
            "SELECT kid, private_pem, public_jwk, created_at, retires_at FROM signing_key "
            "WHERE retires_at > $1 ORDER BY created_at DESC",
            now,
        )
        return [
            StoredKey(
                kid=r["kid"],
                private_pem=bytes(r["private_pem"]),
                public_jwk=jwk_of(orjson.loads(r["public_jwk"])),
                created_at=r["created_at"],
                retires_at=r["retires_at"],
            )
            for r in rows
        ]

    async def add(self, key: StoredKey) -> None:
        await self.conn.execute(
            """INSERT INTO signing_key (kid, private_pem, public_jwk, created_at, retires_at)
               VALUES ($1, $2, $3::jsonb, $4, $5) ON CONFLICT (kid) DO NOTHING""",
            key.kid,
            key.private_pem,
            orjson.dumps(key.public_jwk).decode(),
            key.created_at,
            key.retires_at,
        )


class PgAttempts:
    """Identity's ``Attempts`` (the table ``login_failure``) on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def recent(self, key: str, since: datetime, newest: int | None) -> list[datetime]:
        # The key's advisory lock, to the transaction's end, serialises the count and the insert.
        await self.conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", key)
        rows = await self.conn.fetch(
            "SELECT at FROM login_failure WHERE key = $1 AND at > $2 ORDER BY at DESC LIMIT $3", key, since, newest
        )
        return [r["at"] for r in rows]

    async def add(self, key: str, at: datetime) -> None:
        await self.conn.execute("INSERT INTO login_failure (key, at) VALUES ($1, $2)", key, at)

    async def forget(self, key: str, at: datetime) -> None:
        await self.conn.execute(
            """DELETE FROM login_failure
               WHERE ctid = (SELECT ctid FROM login_failure WHERE key = $1 AND at = $2 LIMIT 1)""",
            key,
            at,
        )

    async def clear(self, key: str) -> None:
        await self.conn.execute("DELETE FROM login_failure WHERE key = $1", key)

    async def prune(self, before: datetime) -> int:
        return _count(await self.conn.execute("DELETE FROM login_failure WHERE at < $1", before))

    async def clear_prefix(self, prefix: str) -> int:
        return _count(await self.conn.execute("DELETE FROM login_failure WHERE starts_with(key, $1)", prefix))

    async def counts(self, keys: Sequence[str], since: datetime) -> dict[str, int]:
        rows = await self.conn.fetch(
            "SELECT key, count(*) AS n FROM login_failure WHERE key = ANY($1::text[]) AND at > $2 GROUP BY key",
            list(keys),
            since,
        )
        return {r["key"]: int(r["n"]) for r in rows}


class PgRecoveryCodes:
    """Identity's ``RecoveryCodes`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def replace(self, user_id: uuid.UUID, hashes: Sequence[bytes]) -> None:
        await self.conn.execute("DELETE FROM recovery_code WHERE user_id = $1", user_id)
        await self.conn.executemany(
            "INSERT INTO recovery_code (user_id, code_hash) VALUES ($1, $2)", [(user_id, h) for h in hashes]
        )

    async def use(self, user_id: uuid.UUID, code_hash: bytes, at: datetime) -> bool:
        done = await self.conn.fetchval(
            """UPDATE recovery_code SET used_at = $3
               WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL RETURNING user_id""",
            user_id,
            code_hash,
            at,
        )
        return done is not None

    async def remaining(self, user_id: uuid.UUID) -> int:
        return int(
            await self.conn.fetchval(
                "SELECT count(*) FROM recovery_code WHERE user_id = $1 AND used_at IS NULL", user_id
            )
        )


class PgMfaPolicy:
    """Identity's ``MfaPolicy`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def roles(self) -> set[str]:
        return {r["role"] for r in await self.conn.fetch("SELECT role FROM mfa_policy")}

    async def set_roles(self, roles: Sequence[str], *, at: datetime, by: uuid.UUID) -> None:
        await self.conn.execute("DELETE FROM mfa_policy WHERE NOT role = ANY($1::text[])", list(roles))
        await self.conn.executemany(
            "INSERT INTO mfa_policy (role, set_at, set_by) VALUES ($1, $2, $3) ON CONFLICT (role) DO NOTHING",
            [(r, at, by) for r in sorted(set(roles))],
        )


class PgOneTimeLinks:
    """Identity's ``OneTimeLinks`` on one connection of a unit of work, in ``table``:
    ``password_reset`` or ``email_verification`` (the same columns)."""

    def __init__(self, conn: Connection, table: str) -> None:
        if table not in {"password_reset", "email_verification"}:  # a name put into the statements
            raise ValueError(f"no table of one-time links is called {table!r}")
        self.conn, self.table = conn, table

    async def add(self, token_hash: bytes, user_id: uuid.UUID, *, at: datetime, expires_at: datetime) -> None:
        await self.conn.execute(
            f"UPDATE {self.table} SET used_at = $2, voided = true WHERE user_id = $1 AND used_at IS NULL", user_id, at
        )
        await self.conn.execute(
            f"INSERT INTO {self.table} (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            token_hash,
            user_id,
            at,
            expires_at,
        )

    async def holder(self, token_hash: bytes, now: datetime) -> uuid.UUID | None:
        user_id: uuid.UUID | None = await self.conn.fetchval(
            f"SELECT user_id FROM {self.table} WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
            token_hash,
            now,
        )
        return user_id

    async def use(self, token_hash: bytes, now: datetime) -> uuid.UUID | None:
        user_id: uuid.UUID | None = await self.conn.fetchval(
            f"""UPDATE {self.table} SET used_at = $2
               WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING user_id""",
            token_hash,
            now,
        )
        return user_id


class IdentityUnit(Unit):
    """A unit of work of identity on PostgreSQL."""

    def __init__(self, uow: UnitOfWork) -> None:
        super().__init__(uow)
        self.users = PgUsers(self.conn)
        self.refresh_tokens = PgRefreshTokens(self.conn)
        self.signing_keys = PgSigningKeys(self.conn)
        self.attempts = PgAttempts(self.conn)
        self.recovery_codes = PgRecoveryCodes(self.conn)
        self.mfa_policy = PgMfaPolicy(self.conn)
        self.password_resets = PgOneTimeLinks(self.conn, "password_reset")
        self.email_verifications = PgOneTimeLinks(self.conn, "email_verification")


class IdentityStore(UnitsOn[IdentityUnit]):
    """Identity's units of work (``his.identity.ports.IdentityUnits``) on its database."""

    def unit(self, uow: UnitOfWork) -> IdentityUnit:
        return IdentityUnit(uow)
