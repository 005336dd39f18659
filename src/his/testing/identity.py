"""Identity's ports in memory (``his.identity.ports``).

The state is identity's four tables as the store keeps them: accounts (``app_user``), refresh
tokens by their hashes (``refresh_token``), the key ring (``signing_key``) and the attempts the
throttles count (``login_failure``). What the tables refuse, the fakes refuse, with the errors
PostgreSQL raises: text with a NUL character (``CharacterNotInRepertoireError``, an
``asyncpg.DataError``, which the services answer 422), roles outside ``app_user``'s CHECK or none
(``CheckViolationError``, checked before the unique keys, as PostgreSQL does), a taken primary
key or token hash (``UniqueViolationError``) and a token of no account
(``ForeignKeyViolationError``). A taken address answers as the store's ``ON CONFLICT DO
NOTHING`` does (``EmailTakenError``), and so does a key already kept (nothing). A refused
statement aborts the unit of work as it aborts PostgreSQL's transaction: every later call in it
fails, and so does the unit if it ends without the error (a read runs no transaction: nothing
aborts it). Locks are nothing here (units run one
at a time); moments come back in UTC, as ``timestamptz`` gives them.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import asyncpg

from his.access import Role
from his.identity.domain import EmailTakenError, RefreshToken, StaffMember, User, in_directory, staff_roles
from his.identity.keys import StoredKey
from his.kernel.clock import Clock, utc_now
from his.testing.units import FakeUnits, FakeWork

#: The roles ``app_user``'s CHECK allows (the migration's ``ROLES``).
ROLES = frozenset(
    role.strip().strip("'")
    for role in importlib.import_module("his.identity.store.migrations.0002_users_tokens_keys").ROLES.split(",")
)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class StoredToken:
    """A row of ``refresh_token``."""

    id: uuid.UUID
    token_hash: bytes
    family_id: uuid.UUID
    user_id: uuid.UUID
    issued_at: datetime
    expires_at: datetime
    rotated_at: datetime | None = None
    revoked_at: datetime | None = None
    session_started_at: datetime | None = None


@dataclass
class IdentityState:
    """Identity's tables."""

    users: dict[uuid.UUID, User] = field(default_factory=dict)
    refresh_tokens: dict[uuid.UUID, StoredToken] = field(default_factory=dict)
    signing_keys: dict[str, StoredKey] = field(default_factory=dict)
    #: ``login_failure``: (key, at), in the order they were counted.
    attempts: list[tuple[str, datetime]] = field(default_factory=list)
    #: ``recovery_code``: (user id, code hash) → when it was used (None: not yet).
    recovery_codes: dict[tuple[uuid.UUID, bytes], datetime | None] = field(default_factory=dict)
    #: ``mfa_policy``: the roles that need a second factor.
    mfa_roles: set[str] = field(default_factory=set)
    #: ``password_reset``: token hash → (user id, expires at, used at).
    resets: dict[bytes, tuple[uuid.UUID, datetime, datetime | None]] = field(default_factory=dict)
    #: ``email_verification``: the same.
    verifications: dict[bytes, tuple[uuid.UUID, datetime, datetime | None]] = field(default_factory=dict)


class _Repository:
    def __init__(self, work: FakeIdentityWork, state: IdentityState) -> None:
        self.work, self.state = work, state

    def text(self, *values: str) -> None:
        """Refuse text a ``text`` column cannot hold (a NUL character), as every statement given
        it as a parameter does; first, fail as any statement does in an aborted unit."""
        self.work.going_on()
        if any("\x00" in v for v in values):
            self.work.refuse(asyncpg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'))


class FakeUsers(_Repository):
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
        self.text(email, email_key, full_name, password_hash, *roles)
        if not roles or not set(roles) <= ROLES:
            self.work.refuse(asyncpg.CheckViolationError('new row violates check constraint "app_user_roles_check"'))
        if any(u.email_key == email_key for u in self.state.users.values()):
            raise EmailTakenError(email_key)  # ON CONFLICT (email_key) DO NOTHING: no row, no error
        if user_id in self.state.users:
            self.work.refuse(asyncpg.UniqueViolationError('violates "app_user_pkey"'))
        self.state.users[user_id] = User(
            id=user_id,
            email=email,
            email_key=email_key,
            full_name=full_name,
            password_hash=password_hash,
            roles=tuple(roles),
            created_at=_utc(at),
            email_verified_at=_utc(at) if verified else None,
        )

    async def has_admin(self, *, lock: bool = False) -> bool:
        self.work.going_on()
        return any(Role.ADMIN.value in u.roles for u in self.state.users.values())

    async def by_email(self, email_key: str) -> User | None:
        self.text(email_key)
        return next((u for u in self.state.users.values() if u.email_key == email_key), None)

    async def get(self, user_id: uuid.UUID) -> User | None:
        self.work.going_on()
        return self.state.users.get(user_id)

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        self.text(password_hash)
        if user_id in self.state.users:
            self.state.users[user_id] = replace(self.state.users[user_id], password_hash=password_hash)

    def _change(self, user_id: uuid.UUID, **changes: object) -> None:
        if user_id in self.state.users:
            self.state.users[user_id] = replace(self.state.users[user_id], **changes)  # type: ignore[arg-type]

    async def require_password_change(self, user_id: uuid.UUID, required: bool) -> None:
        self.work.going_on()
        self._change(user_id, password_change_required=required)

    async def set_full_name(self, user_id: uuid.UUID, full_name: str) -> None:
        self.text(full_name)
        self._change(user_id, full_name=full_name)

    async def verify_email(self, user_id: uuid.UUID, at: datetime) -> bool:
        self.work.going_on()
        user = self.state.users.get(user_id)
        if user is None or user.email_verified_at is not None:
            return False
        self._change(user_id, email_verified_at=_utc(at))
        return True

    async def set_roles(self, user_id: uuid.UUID, roles: Sequence[str]) -> None:
        self.text(*roles)
        if not roles or not set(roles) <= ROLES:
            self.work.refuse(asyncpg.CheckViolationError('new row violates check constraint "app_user_roles_check"'))
        self._change(user_id, roles=tuple(sorted(set(roles))))

    async def set_disabled(self, user_id: uuid.UUID, at: datetime | None) -> None:
        self.work.going_on()
        self._change(user_id, disabled_at=_utc(at) if at else None)

    async def active_admins(self, *, lock: bool = False) -> int:
        self.work.going_on()
        return sum(Role.ADMIN.value in u.roles and u.disabled_at is None for u in self.state.users.values())

    async def set_totp_pending(self, user_id: uuid.UUID, secret: bytes | None) -> None:
        self.work.going_on()
        self._change(user_id, totp_pending=secret)

    async def enable_totp(self, user_id: uuid.UUID, secret: bytes, *, step: int, at: datetime) -> None:
        self.work.going_on()
        self._change(user_id, totp_secret=secret, totp_enabled_at=_utc(at), totp_last_step=step, totp_pending=None)

    async def reset_totp(self, user_id: uuid.UUID) -> None:
        self.work.going_on()
        self._change(user_id, totp_secret=None, totp_pending=None, totp_enabled_at=None, totp_last_step=None)

    async def use_totp_step(self, user_id: uuid.UUID, step: int) -> bool:
        self.work.going_on()
        user = self.state.users.get(user_id)
        if user is None or (user.totp_last_step is not None and user.totp_last_step >= step):
            return False
        self._change(user_id, totp_last_step=step)
        return True

    async def search(self, q: str, *, limit: int) -> list[User]:
        self.text(q)
        needle = q.lower()
        found = [u for u in self.state.users.values() if needle in u.email_key or needle in u.full_name.lower()]
        return sorted(found, key=lambda u: (u.full_name, str(u.id)))[:limit]

    async def staff(self, ids: Sequence[uuid.UUID]) -> list[StaffMember]:
        self.work.going_on()
        chosen = (self.state.users.get(i) for i in set(ids))
        return [
            StaffMember(id=u.id, full_name=u.full_name, roles=staff_roles(u.roles))
            for u in chosen
            if u is not None and in_directory(u.roles, u.disabled_at)
        ]


class FakeRefreshTokens(_Repository):
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
        self.work.going_on()
        if token_id in self.state.refresh_tokens:
            self.work.refuse(asyncpg.UniqueViolationError('violates "refresh_token_pkey"'))
        if any(t.token_hash == token_hash for t in self.state.refresh_tokens.values()):
            self.work.refuse(asyncpg.UniqueViolationError('violates "refresh_token_token_hash_key"'))
        if user_id not in self.state.users:
            self.work.refuse(asyncpg.ForeignKeyViolationError('violates "refresh_token_user_id_fkey"'))
        self.state.refresh_tokens[token_id] = StoredToken(
            token_id,
            token_hash,
            family_id,
            user_id,
            _utc(at),
            _utc(expires_at),
            session_started_at=_utc(started_at or at),
        )

    async def get(self, token_hash: bytes, *, lock: bool = False) -> RefreshToken | None:
        self.work.going_on()
        for t in self.state.refresh_tokens.values():
            if t.token_hash == token_hash:
                return RefreshToken(
                    id=str(t.id),
                    family_id=str(t.family_id),
                    user_id=str(t.user_id),
                    expires_at=t.expires_at,
                    rotated_at=t.rotated_at,
                    revoked_at=t.revoked_at,
                    started_at=t.session_started_at,
                )
        return None

    async def mark_rotated(self, token_id: str, at: datetime) -> None:
        self.work.going_on()
        tid = uuid.UUID(token_id)
        if tid in self.state.refresh_tokens:
            self.state.refresh_tokens[tid] = replace(self.state.refresh_tokens[tid], rotated_at=_utc(at))

    def _revoke(self, chosen: list[StoredToken], at: datetime) -> int:
        for t in chosen:
            self.state.refresh_tokens[t.id] = replace(t, revoked_at=_utc(at))
        return len(chosen)

    async def revoke_family(self, family_id: str, at: datetime) -> int:
        self.work.going_on()
        family = uuid.UUID(family_id)
        tokens = self.state.refresh_tokens.values()
        return self._revoke([t for t in tokens if t.family_id == family and t.revoked_at is None], at)

    async def revoke_others(self, user_id: uuid.UUID, keep: str | None, at: datetime) -> int:
        self.work.going_on()
        kept = uuid.UUID(keep) if keep else None
        tokens = self.state.refresh_tokens.values()
        return self._revoke(
            [t for t in tokens if t.user_id == user_id and t.revoked_at is None and t.family_id != kept], at
        )

    async def revoked_since(self, since: datetime) -> list[tuple[str, datetime]]:
        self.work.going_on()
        last: dict[uuid.UUID, datetime] = {}
        for t in self.state.refresh_tokens.values():
            if t.revoked_at is not None and t.revoked_at >= since:
                last[t.family_id] = max(last.get(t.family_id, t.revoked_at), t.revoked_at)
        return [(str(family), at) for family, at in last.items()]


class FakeSigningKeys(_Repository):
    async def current(self, now: datetime, *, lock: bool = False) -> list[StoredKey]:
        self.work.going_on()
        keys = [k for k in self.state.signing_keys.values() if k.retires_at > now]
        return sorted(keys, key=lambda k: k.created_at, reverse=True)

    async def add(self, key: StoredKey) -> None:
        self.text(key.kid)
        if key.kid not in self.state.signing_keys:  # ON CONFLICT (kid) DO NOTHING
            self.state.signing_keys[key.kid] = replace(
                key, created_at=_utc(key.created_at), retires_at=_utc(key.retires_at)
            )


class FakeAttempts(_Repository):
    async def recent(self, key: str, since: datetime, newest: int | None) -> list[datetime]:
        self.text(key)
        found = sorted((at for k, at in self.state.attempts if k == key and at > since), reverse=True)
        return found if newest is None else found[:newest]

    async def add(self, key: str, at: datetime) -> None:
        self.text(key)
        self.state.attempts.append((key, _utc(at)))

    async def forget(self, key: str, at: datetime) -> None:
        self.text(key)
        for n, (k, when) in enumerate(self.state.attempts):
            if k == key and when == at:
                del self.state.attempts[n]
                return

    async def clear(self, key: str) -> None:
        self.text(key)
        self.state.attempts[:] = [(k, at) for k, at in self.state.attempts if k != key]

    async def clear_prefix(self, prefix: str) -> int:
        self.text(prefix)
        kept = [(k, at) for k, at in self.state.attempts if not k.startswith(prefix)]
        cleared = len(self.state.attempts) - len(kept)
        self.state.attempts[:] = kept
        return cleared

    async def counts(self, keys: Sequence[str], since: datetime) -> dict[str, int]:
        self.text(*keys)
        out: dict[str, int] = {}
        for k, at in self.state.attempts:
            if k in keys and at > since:
                out[k] = out.get(k, 0) + 1
        return out

    async def prune(self, before: datetime) -> int:
        self.work.going_on()
        kept = [(k, at) for k, at in self.state.attempts if not at < before]
        pruned = len(self.state.attempts) - len(kept)
        self.state.attempts[:] = kept
        return pruned


class FakeRecoveryCodes(_Repository):
    async def replace(self, user_id: uuid.UUID, hashes: Sequence[bytes]) -> None:
        self.work.going_on()
        if hashes and user_id not in self.state.users:
            self.work.refuse(asyncpg.ForeignKeyViolationError('violates "recovery_code_user_id_fkey"'))
        codes = self.state.recovery_codes
        for key in [k for k in codes if k[0] == user_id]:
            del codes[key]
        for h in hashes:
            codes[(user_id, h)] = None

    async def use(self, user_id: uuid.UUID, code_hash: bytes, at: datetime) -> bool:
        self.work.going_on()
        key = (user_id, code_hash)
        if key in self.state.recovery_codes and self.state.recovery_codes[key] is None:
            self.state.recovery_codes[key] = _utc(at)
            return True
        return False

    async def remaining(self, user_id: uuid.UUID) -> int:
        self.work.going_on()
        return sum(u == user_id and at is None for (u, _), at in self.state.recovery_codes.items())


class FakeMfaPolicy(_Repository):
    async def roles(self) -> set[str]:
        self.work.going_on()
        return set(self.state.mfa_roles)

    async def set_roles(self, roles: Sequence[str], *, at: datetime, by: uuid.UUID) -> None:
        self.text(*roles)
        if not set(roles) <= ROLES:
            self.work.refuse(asyncpg.CheckViolationError('violates check constraint "mfa_policy_role_check"'))
        self.state.mfa_roles = set(roles)


class FakeOneTimeLinks(_Repository):
    """``password_reset`` (``state.resets``) or ``email_verification`` (``state.verifications``)."""

    def __init__(self, work: FakeIdentityWork, state: IdentityState, table: str) -> None:
        super().__init__(work, state)
        self.table = table
        self.links = state.resets if table == "password_reset" else state.verifications

    async def add(self, token_hash: bytes, user_id: uuid.UUID, *, at: datetime, expires_at: datetime) -> None:
        self.work.going_on()
        if user_id not in self.state.users:
            self.work.refuse(asyncpg.ForeignKeyViolationError(f'violates "{self.table}_user_id_fkey"'))
        if token_hash in self.links:
            self.work.refuse(asyncpg.UniqueViolationError(f'violates "{self.table}_pkey"'))
        for key, (holder, expires, used) in list(self.links.items()):
            if holder == user_id and used is None:
                self.links[key] = (holder, expires, _utc(at))
        self.links[token_hash] = (user_id, _utc(expires_at), None)

    async def holder(self, token_hash: bytes, now: datetime) -> uuid.UUID | None:
        self.work.going_on()
        found = self.links.get(token_hash)
        return found[0] if found and found[2] is None and found[1] > now else None

    async def use(self, token_hash: bytes, now: datetime) -> uuid.UUID | None:
        user_id = await self.holder(token_hash, now)
        if user_id is not None:
            self.links[token_hash] = (user_id, self.links[token_hash][1], _utc(now))
        return user_id


class FakeIdentityWork(FakeWork):
    def __init__(self, state: IdentityState, clock: Clock) -> None:
        super().__init__(clock)
        self.users = FakeUsers(self, state)
        self.refresh_tokens = FakeRefreshTokens(self, state)
        self.signing_keys = FakeSigningKeys(self, state)
        self.attempts = FakeAttempts(self, state)
        self.recovery_codes = FakeRecoveryCodes(self, state)
        self.mfa_policy = FakeMfaPolicy(self, state)
        self.password_resets = FakeOneTimeLinks(self, state, "password_reset")
        self.email_verifications = FakeOneTimeLinks(self, state, "email_verification")


class FakeIdentity(FakeUnits[IdentityState, FakeIdentityWork]):
    """Identity's units of work in memory, with no accounts, tokens, keys or attempts."""

    def __init__(self, clock: Clock = utc_now, state: IdentityState | None = None) -> None:
        super().__init__(state or IdentityState(), FakeIdentityWork, clock)
