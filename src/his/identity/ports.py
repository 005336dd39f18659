"""What identity's use cases work through: the accounts, the refresh-token families (the
sessions), the signing keys and the attempts the throttles count, inside a unit of work
(``his.kernel.ports``). The store implements them on PostgreSQL (``his.identity.store``);
``his.testing.identity`` in memory, for unit tests. Both pass the same contract tests
(``tests/integration/test_identity_contract.py``).

Moments are the service clock's (``at``, ``now``), never the database server's. A ``lock``
holds what it names until the unit ends, so that units running at once take their turns.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from his.identity.domain import RefreshToken, StaffMember, User
from his.identity.keys import StoredKey
from his.kernel.ports import Units, Work


class Users(Protocol):
    """The accounts, one per address (``email_key``)."""

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
        """A new account, created ``at``; ``EmailTakenError`` if one has its ``email_key``.
        ``verified``: its address counts as confirmed from ``at`` (an administrator made it);
        otherwise it cannot sign in until ``verify_email``."""
        ...

    async def has_admin(self, *, lock: bool = False) -> bool:
        """Whether an account has the ADMIN role; ``lock``: the administrators' lock, so that
        of two units creating the first one, the second finds the first's."""
        ...

    async def by_email(self, email_key: str) -> User | None: ...

    async def get(self, user_id: uuid.UUID) -> User | None: ...

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None: ...

    async def require_password_change(self, user_id: uuid.UUID, required: bool) -> None:
        """Whether the account's next sign-in must change its password."""
        ...

    async def set_full_name(self, user_id: uuid.UUID, full_name: str) -> None: ...

    async def verify_email(self, user_id: uuid.UUID, at: datetime) -> bool:
        """The account's address is confirmed ``at``: True if it was not before."""
        ...

    async def set_roles(self, user_id: uuid.UUID, roles: Sequence[str]) -> None: ...

    async def set_disabled(self, user_id: uuid.UUID, at: datetime | None) -> None:
        """Disable the account ``at`` (a leaver), or enable it again (None)."""
        ...

    async def active_admins(self, *, lock: bool = False) -> int:
        """How many accounts have the ADMIN role and are not disabled; ``lock``: the
        administrators' lock (as ``has_admin``), so that two units removing an administrator at
        once cannot both find another one left."""
        ...

    async def set_totp_pending(self, user_id: uuid.UUID, secret: bytes | None) -> None:
        """Keep the (encrypted) secret of an enrolment begun, or forget it (None)."""
        ...

    async def enable_totp(self, user_id: uuid.UUID, secret: bytes, *, step: int, at: datetime) -> None:
        """The account signs in with this (encrypted) secret from ``at`` on; ``step`` was used."""
        ...

    async def reset_totp(self, user_id: uuid.UUID) -> None:
        """Forget the account's second factor, and any enrolment begun."""
        ...

    async def use_totp_step(self, user_id: uuid.UUID, step: int) -> bool:
        """Record that a code of ``step`` was accepted, unless one of this step or a later one was
        (then False: a code is used once). Atomic: of two units using one step, one wins."""
        ...

    async def search(self, q: str, *, limit: int) -> list[User]:
        """Accounts whose address or name contains ``q`` (case-insensitively; every account if
        ``q`` is empty), by name then id, at most ``limit``."""
        ...

    async def staff(self, ids: Sequence[uuid.UUID]) -> list[StaffMember]:
        """The accounts among ``ids`` that the staff directory names (``domain.in_directory``: a
        staff role, not disabled), each once with its staff roles, in no particular order; ids
        of no such account are left out. One query, however many ids."""
        ...


class RefreshTokens(Protocol):
    """Refresh tokens, kept as their hashes, each in a family (one sign-in: a session) that
    rotation keeps together."""

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
        """A token issued ``at`` to an existing account, in a session signed in ``started_at``
        (None: ``at``, a new sign-in)."""
        ...

    async def get(self, token_hash: bytes, *, lock: bool = False) -> RefreshToken | None:
        """The token with this hash; ``lock`` holds it until the unit ends."""
        ...

    async def mark_rotated(self, token_id: str, at: datetime) -> None: ...

    async def revoke_family(self, family_id: str, at: datetime) -> int:
        """Revoke the family's tokens not revoked yet; how many."""
        ...

    async def revoke_others(self, user_id: uuid.UUID, keep: str | None, at: datetime) -> int:
        """Revoke every family of the user but ``keep``; how many tokens."""
        ...

    async def revoked_since(self, since: datetime) -> list[tuple[str, datetime]]:
        """The families revoked at ``since`` or later, each with its last revocation (in no
        particular order)."""
        ...


class SigningKeys(Protocol):
    """The key ring: the keys that sign access tokens, and those still published in the JWKS."""

    async def current(self, now: datetime, *, lock: bool = False) -> list[StoredKey]:
        """The keys not retired at ``now``, newest first; ``lock``: the key ring's lock, so that
        one unit at a time decides whether a new key is due."""
        ...

    async def add(self, key: StoredKey) -> None:
        """Keep a new key (a key with its ``kid`` kept already is left as it is)."""
        ...


class Attempts(Protocol):
    """The attempts the throttles count (sign-ins, registrations, password changes), by key."""

    async def recent(self, key: str, since: datetime, newest: int | None) -> list[datetime]:
        """The key's attempts after ``since``, newest first, at most ``newest`` of them (all if
        None). Holds the key's lock until the unit ends, so the count and the attempt recorded
        after it are one step for attempts made at once."""
        ...

    async def add(self, key: str, at: datetime) -> None: ...

    async def forget(self, key: str, at: datetime) -> None:
        """Remove one attempt of the key made ``at`` (it succeeded)."""
        ...

    async def clear(self, key: str) -> None:
        """Remove every attempt of the key."""
        ...

    async def clear_prefix(self, prefix: str) -> int:
        """Remove every attempt of every key that starts with ``prefix``; how many."""
        ...

    async def counts(self, keys: Sequence[str], since: datetime) -> dict[str, int]:
        """How many attempts each of ``keys`` has after ``since`` (keys with none are left out);
        one query, without the keys' locks."""
        ...

    async def prune(self, before: datetime) -> int:
        """Remove the attempts made before ``before``; how many."""
        ...


class RecoveryCodes(Protocol):
    """The recovery codes of accounts with a second factor, kept as their hashes."""

    async def replace(self, user_id: uuid.UUID, hashes: Sequence[bytes]) -> None:
        """The account's codes are these from now on (the old ones, used or not, are gone)."""
        ...

    async def use(self, user_id: uuid.UUID, code_hash: bytes, at: datetime) -> bool:
        """Mark the account's code with this hash used ``at``, if it has one unused; whether it did."""
        ...

    async def remaining(self, user_id: uuid.UUID) -> int: ...


class MfaPolicy(Protocol):
    """The roles whose accounts must sign in with a second factor."""

    async def roles(self) -> set[str]: ...

    async def set_roles(self, roles: Sequence[str], *, at: datetime, by: uuid.UUID) -> None:
        """These roles, and no others, need a second factor from ``at`` on."""
        ...


class OneTimeLinks(Protocol):
    """One-time links e-mailed to an account (to reset a forgotten password, or to confirm the
    address of a new one), kept as their tokens' hashes."""

    async def add(self, token_hash: bytes, user_id: uuid.UUID, *, at: datetime, expires_at: datetime) -> None:
        """A new link for the account, made ``at``; its links not used yet stop working."""
        ...

    async def holder(self, token_hash: bytes, now: datetime) -> uuid.UUID | None:
        """The account of the link with this hash if it still works at ``now`` (not used, not
        voided, not expired), else None."""
        ...

    async def use(self, token_hash: bytes, now: datetime) -> uuid.UUID | None:
        """Use the link if it still works at ``now``: its account, or None. Atomic: of two units
        using one link, one wins."""
        ...


class IdentityWork(Work, Protocol):
    """A unit of work of identity."""

    @property
    def users(self) -> Users: ...

    @property
    def refresh_tokens(self) -> RefreshTokens: ...

    @property
    def signing_keys(self) -> SigningKeys: ...

    @property
    def attempts(self) -> Attempts: ...

    @property
    def recovery_codes(self) -> RecoveryCodes: ...

    @property
    def mfa_policy(self) -> MfaPolicy: ...

    @property
    def password_resets(self) -> OneTimeLinks: ...

    @property
    def email_verifications(self) -> OneTimeLinks: ...


#: Where identity's units of work come from.
IdentityUnits = Units[IdentityWork]
