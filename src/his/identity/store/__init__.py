"""Tables and queries of the identity service."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from his.identity.domain import Backoff, RefreshToken
from his.kernel.db import Connection


class EmailTakenError(Exception):
    """An account with this e-mail address exists."""


async def insert_user(
    conn: Connection, *, email: str, email_key: str, full_name: str, password_hash: str, roles: list[str]
) -> uuid.UUID:
    user_id = uuid.uuid4()
    done = await conn.fetchval(
        """INSERT INTO app_user (id, email, email_key, full_name, password_hash, roles)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (email_key) DO NOTHING RETURNING id""",
        user_id,
        email,
        email_key,
        full_name,
        password_hash,
        roles,
    )
    if done is None:
        raise EmailTakenError(email_key)
    return user_id


async def has_admin(conn: Connection) -> bool:
    """Whether the hospital has an administrator (an account with the ADMIN role)."""
    return bool(await conn.fetchval("SELECT 1 FROM app_user WHERE 'ADMIN' = ANY(roles) LIMIT 1"))


async def user_by_email(conn: Connection, email_key: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT id, password_hash, roles, disabled_at FROM app_user WHERE email_key = $1", email_key
    )
    return dict(row) if row else None


async def user_by_id(conn: Connection, user_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT id, roles, disabled_at FROM app_user WHERE id = $1", user_id)
    return dict(row) if row else None


async def credentials_by_id(conn: Connection, user_id: uuid.UUID) -> dict[str, Any] | None:
    """What a password change checks: the hash, and what the policy compares a new password with."""
    row = await conn.fetchrow(
        "SELECT id, email_key, full_name, password_hash, disabled_at FROM app_user WHERE id = $1", user_id
    )
    return dict(row) if row else None


async def update_hash(conn: Connection, user_id: uuid.UUID, password_hash: str) -> None:
    await conn.execute("UPDATE app_user SET password_hash = $2 WHERE id = $1", user_id, password_hash)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def insert_refresh(
    conn: Connection, *, token: str, family_id: uuid.UUID, user_id: uuid.UUID, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO refresh_token (id, token_hash, family_id, user_id, expires_at) VALUES ($1, $2, $3, $4, $5)",
        uuid.uuid4(),
        token_hash(token),
        family_id,
        user_id,
        expires_at,
    )


async def refresh_for_update(conn: Connection, token: str) -> RefreshToken | None:
    row = await conn.fetchrow(
        """SELECT id, family_id, user_id, expires_at, rotated_at, revoked_at FROM refresh_token
           WHERE token_hash = $1 FOR UPDATE""",
        token_hash(token),
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
    )


async def mark_rotated(conn: Connection, token_id: str) -> None:
    await conn.execute("UPDATE refresh_token SET rotated_at = now() WHERE id = $1", uuid.UUID(token_id))


async def revoked_sessions(conn: Connection, since: datetime) -> list[tuple[str, datetime]]:
    """Sessions (refresh-token families) revoked at ``since`` or later, with when."""
    rows = await conn.fetch(
        """SELECT family_id, max(revoked_at) AS revoked_at FROM refresh_token
           WHERE revoked_at >= $1 GROUP BY family_id""",
        since,
    )
    return [(str(r["family_id"]), r["revoked_at"]) for r in rows]


async def revoke_family(conn: Connection, family_id: str) -> int:
    result = await conn.execute(
        "UPDATE refresh_token SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL", uuid.UUID(family_id)
    )
    return int(result.split()[-1])


async def revoke_other_sessions(conn: Connection, user_id: uuid.UUID, keep: str | None) -> int:
    """Revoke every session (refresh-token family) of the user but ``keep``."""
    result = await conn.execute(
        """UPDATE refresh_token SET revoked_at = now()
           WHERE user_id = $1 AND revoked_at IS NULL AND family_id IS DISTINCT FROM $2::uuid""",
        user_id,
        uuid.UUID(keep) if keep else None,
    )
    return int(result.split()[-1])


@dataclass(frozen=True)
class Claim:
    """An attempt counted against a key (``at``: when, to forget it later), or refused (``at`` is
    None) with the seconds until one would be counted."""

    at: datetime | None
    wait: float = 0.0


async def _lock_and_read(conn: Connection, key: str, since: datetime, newest: int | None) -> list[datetime]:
    """Take the key's lock (to the transaction's end) and read its attempts since ``since``, newest first."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", key)
    rows = await conn.fetch(
        "SELECT at FROM login_failure WHERE key = $1 AND at > $2 ORDER BY at DESC LIMIT $3", key, since, newest
    )
    return [r["at"] for r in rows]


async def _record(conn: Connection, key: str, now: datetime) -> Claim:
    await conn.execute("INSERT INTO login_failure (key, at) VALUES ($1, $2)", key, now)
    return Claim(now)


async def claim_attempt(conn: Connection, key: str, limit: int, window_seconds: float, now: datetime) -> Claim:
    """Count an attempt against ``key`` if it has fewer than ``limit`` in the last ``window_seconds``.

    Call it in a transaction: the key's advisory lock serialises the count and the insert, so
    attempts sent at once cannot all be counted before any of them is recorded.
    """
    window = timedelta(seconds=window_seconds)
    recent = await _lock_and_read(conn, key, now - window, limit)
    if len(recent) >= limit:  # once the limit-th newest leaves the window, one more fits
        return Claim(None, (recent[limit - 1] + window - now).total_seconds())
    return await _record(conn, key, now)


async def claim_with_backoff(conn: Connection, key: str, backoff: Backoff, now: datetime) -> Claim:
    """Count an attempt against ``key`` if the backoff its recent attempts earned has passed
    since the last of them (locked and counted as ``claim_attempt``)."""
    recent = await _lock_and_read(conn, key, now - timedelta(seconds=backoff.window_seconds), None)
    wait = backoff.after(len(recent))
    if recent and recent[0] + timedelta(seconds=wait) > now:
        return Claim(None, (recent[0] + timedelta(seconds=wait) - now).total_seconds())
    return await _record(conn, key, now)


async def forget_attempt(conn: Connection, key: str, at: datetime) -> None:
    """Remove one attempt claimed at ``at`` (it succeeded)."""
    await conn.execute(
        "DELETE FROM login_failure WHERE ctid = (SELECT ctid FROM login_failure WHERE key = $1 AND at = $2 LIMIT 1)",
        key,
        at,
    )


async def clear_failures(conn: Connection, key: str) -> None:
    await conn.execute("DELETE FROM login_failure WHERE key = $1", key)


async def prune_attempts(conn: Connection, before: datetime) -> int:
    """Forget attempts older than any window still counts (``before``)."""
    result = await conn.execute("DELETE FROM login_failure WHERE at < $1", before)
    return int(result.split()[-1])


async def signing_keys(conn: Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT kid, private_pem, public_jwk, created_at, retires_at FROM signing_key "
        "WHERE retires_at > now() ORDER BY created_at DESC"
    )
    return [dict(r) | {"public_jwk": orjson.loads(r["public_jwk"])} for r in rows]


async def insert_signing_key(
    conn: Connection,
    *,
    kid: str,
    private_pem: bytes,
    public_jwk: dict[str, Any],
    created_at: datetime,
    retires_at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO signing_key (kid, private_pem, public_jwk, created_at, retires_at)
           VALUES ($1, $2, $3::jsonb, $4, $5) ON CONFLICT (kid) DO NOTHING""",
        kid,
        private_pem,
        orjson.dumps(public_jwk).decode(),
        created_at,
        retires_at,
    )
