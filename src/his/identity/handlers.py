"""Use cases of the identity service: register, log in, refresh, log out, keys.

They work through identity's units of work (``his.identity.ports.IdentityUnits``: the store's on
PostgreSQL, ``his.testing.identity``'s in memory) and tell the time by the service's clock, the
one the units run by: the throttles count attempts by it, tokens are issued, rotated and revoked
at its moments, and keys are created and retired by it.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from his.access import Role
from his.events.identity import PasswordChanged, UserRegistered
from his.identity.auditing import record_account_change
from his.identity.domain import (
    ACCESS_TOKEN_TTL,
    ADMIN_FULL_NAME,
    REFRESH_TOKEN_TTL,
    REVOCATION_LEEWAY,
    EmailUnverifiedError,
    InvalidCredentialsError,
    PasswordChangeRequiredError,
    PasswordPolicy,
    RefreshOutcome,
    StaffMember,
    User,
    WeakPasswordError,
    account_key,
    in_order,
    judge_refresh,
    normalise_email,
    token_hash,
)
from his.identity.keys import ROTATE_AFTER, SigningKey, sign_access_token
from his.identity.mfa import Enrolment, secrets_cipher
from his.identity.passwords import Passwords
from his.identity.ports import IdentityUnits, IdentityWork
from his.identity.second_factor import SecondFactor
from his.identity.throttles import (
    Refusals,
    Registrations,
    Throttle,
    ThrottledError,
    claim_attempt,
    claim_with_backoff,
    granted,
)
from his.kernel.clock import Clock
from his.kernel.security import AUDIENCE, ISSUER


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 - a token type, not a secret
    #: The recovery codes of a second factor whose enrolment this sign-in confirmed (shown once).
    recovery_codes: tuple[str, ...] = ()


class KeyRing:
    """The signing keys kept by identity (``SigningKeys``); creates the first one and rotates on
    schedule, by ``clock`` (the one the units run by)."""

    def __init__(self, units: IdentityUnits, passphrase: bytes, clock: Clock) -> None:
        self.units = units
        self.passphrase = passphrase
        self.clock = clock
        self._active: SigningKey | None = None
        self._lock = asyncio.Lock()

    async def active(self) -> SigningKey:
        """The key that signs now. Call it outside a unit of work: it may open one of its own."""
        now = self.clock()
        key = self._active
        if key is not None and now - key.created_at < ROTATE_AFTER:
            return key
        async with self._lock:
            self._active = await self._load_or_create(now)
            return self._active

    async def _load_or_create(self, now: datetime) -> SigningKey:
        async with self.units.uow() as uow:
            for stored in await uow.signing_keys.current(now, lock=True):
                if now - stored.created_at < ROTATE_AFTER:
                    return SigningKey.load(stored.private_pem, self.passphrase, stored.created_at)
            key = SigningKey.generate(now)
            await uow.signing_keys.add(key.stored(self.passphrase))
            return key

    async def jwks(self) -> dict[str, list[dict[str, str]]]:
        await self.active()
        now = self.clock()
        async with self.units.read() as u:
            return {"keys": [stored.public_jwk for stored in await u.signing_keys.current(now)]}


#: How often a process forgets attempts older than every window.
PRUNE_EVERY = timedelta(minutes=10)


class Identity:
    """Identity's use cases over its units of work and its key ring."""

    def __init__(
        self,
        units: IdentityUnits,
        keys: KeyRing,
        *,
        clock: Clock,
        passwords: Passwords | None = None,
        policy: PasswordPolicy | None = None,
        throttle: Throttle | None = None,
        registrations: Registrations | None = None,
    ) -> None:
        self.units = units
        self.keys = keys
        self.passwords = passwords or Passwords()
        self.policy = policy or PasswordPolicy()
        self.throttle = throttle or Throttle()
        self.registrations = registrations or Registrations()
        #: The service's clock, the one the units run by: the throttles count attempts by it.
        self.clock = clock
        self.refusals = Refusals()
        self.second = SecondFactor(units, secrets_cipher(keys.passphrase), self.throttle)
        self._registering = asyncio.Semaphore(1)
        self._pruned = datetime.min.replace(tzinfo=UTC)

    async def claim_registration(self, client_ip: str) -> None:
        """Count a self-registration against the limits of its address and of everyone
        (``ThrottledError`` past them); ``his.identity.registration`` does the rest."""
        r, now = self.registrations, self.clock()
        keys = {f"register-ip:{client_ip}": r.per_address, "register:all": r.overall}
        # One registration's claims at a time (the database would serialise them anyway): the
        # rest of a flood waits here, and is refused from memory once the first refusal is known.
        async with self._registering:
            self.refusals.check(keys, now)
            try:
                async with self.units.uow() as uow:
                    for key, limit in keys.items():
                        granted(key, await claim_attempt(uow.attempts, key, limit, r.window_seconds, now))
            except ThrottledError as exc:
                self.refusals.remember(exc, now)
                raise

    def _check(self, email: str, password: str, full_name: str) -> tuple[str, str]:
        email_key = normalise_email(email)
        full_name = " ".join(full_name.split())
        if not full_name:
            raise ValueError("full_name must not be blank")
        self.policy.check(password, email=email_key, full_name=full_name)
        return email_key, full_name

    async def register(
        self,
        *,
        email: str,
        password: str,
        full_name: str,
        roles: list[Role] | None = None,
        created_by: uuid.UUID | None = None,
        creator_roles: Iterable[str] = (),
    ) -> uuid.UUID:
        """Create an account whose address counts as confirmed (an administrator made it, or
        ``his.identity.registration`` after its own checks). Without ``roles`` it is a PATIENT
        account. ``created_by`` (holding ``creator_roles``): the administrator who made it, named
        by the account's first audit record."""
        email_key, full_name = self._check(email, password, full_name)
        hashed = await self.passwords.hash(password)
        async with self.units.uow() as uow:
            user_id = await self.insert(
                uow,
                email=email,
                email_key=email_key,
                full_name=full_name,
                password_hash=hashed,
                roles=roles,
                created_by=created_by,
                verified=True,
            )
            if created_by is not None:
                record_account_change(uow, user_id, by=created_by, roles=creator_roles, what="account", action="create")
        return user_id

    async def ensure_admin(self, *, email: str, password: str, change_required: bool = False) -> bool:
        """Create the hospital's administrator unless it has one (``python -m his.identity.admin``,
        which `his up` runs at every start): True if this call created it.

        Raises ``WeakPasswordError`` or ``InvalidEmailError`` (saying why) when it would create one
        from an address or a password the rules refuse, ``EmailTakenError`` when another
        account has the address. Two at once create one: the second finds the first's.
        ``change_required``: the password was generated, and the first sign-in must change it.
        """
        async with self.units.read() as u:
            if await u.users.has_admin():
                return False
        email_key, full_name = self._check(email, password, ADMIN_FULL_NAME)
        hashed = await self.passwords.hash(password)
        async with self.units.uow() as uow:
            if await uow.users.has_admin(lock=True):
                return False
            await self.insert(
                uow,
                email=email,
                email_key=email_key,
                full_name=full_name,
                password_hash=hashed,
                roles=[Role.ADMIN],
                created_by=None,
                verified=True,
            )
            if change_required:
                admin = await uow.users.by_email(email_key)
                assert admin is not None  # inserted above, in this unit
                await uow.users.require_password_change(admin.id, True)
        return True

    async def insert(
        self,
        uow: IdentityWork,
        *,
        email: str,
        email_key: str,
        full_name: str,
        password_hash: str,
        roles: list[Role] | None,
        created_by: uuid.UUID | None,
        verified: bool,
    ) -> uuid.UUID:
        role_names = sorted({r.value for r in (roles or [Role.PATIENT])})
        user_id = uuid.uuid4()
        await uow.users.add(
            user_id=user_id,
            email=email.strip(),
            email_key=email_key,
            full_name=full_name,
            password_hash=password_hash,
            roles=role_names,
            at=uow.clock(),
            verified=verified,
        )
        uow.add(UserRegistered(user_id=user_id, roles=role_names, created_by=created_by), aggregate_id=user_id)
        return user_id

    async def login(self, *, email: str, password: str, client_ip: str, code: str | None = None) -> Tokens:
        """Sign in, with a code from the second factor (or a recovery code) when the account has
        one. When the password is right: ``SecondFactorRequiredError`` without the code it needs,
        ``EnrolmentRequiredError`` when its role needs a second factor it has not got,
        ``PasswordChangeRequiredError`` when the password must be changed first
        (``login_changing_password``). A wrong code is an ``InvalidCredentialsError``, counted
        as a wrong password is."""
        user, signed_in = await self._authenticate(email, password, client_ip)
        if not code and (missing := await self.second.missing(user)) is not None:
            await self._forgive(signed_in, missing)
        if user.password_change_required:
            await self._forgive(
                signed_in, PasswordChangeRequiredError("the password must be changed before signing in")
            )
        key = await self.keys.active()
        async with self.units.uow() as uow:
            codes = await self.second.check(uow, user, code)
            await signed_in(uow)
            tokens = await self._issue(uow, key, user.id, list(user.roles), family_id=uuid.uuid4())
        return replace(tokens, recovery_codes=tuple(codes))

    async def _forgive(self, signed_in: Callable[[IdentityWork], Awaitable[None]], refusal: Exception) -> NoReturn:
        """Forgive a sign-in attempt whose password was right (its failures are not counted
        against the account), then refuse it with ``refusal``."""
        async with self.units.uow() as uow:
            await signed_in(uow)
        raise refusal

    async def enrol_at_sign_in(self, *, email: str, password: str, client_ip: str) -> Enrolment:
        """Begin enrolling a second factor with the password (throttled as a sign-in): for an
        account whose role needs one it has not got, which therefore cannot sign in to get a
        token. A sign-in with the first code confirms it."""
        user, signed_in = await self._authenticate(email, password, client_ip)
        async with self.units.uow() as uow:
            await signed_in(uow)
        return await self.second.enrol(user.id)

    async def login_changing_password(
        self, *, email: str, password: str, new_password: str, client_ip: str, code: str | None = None
    ) -> Tokens:
        """Sign in and change the password at once: what a sign-in that must change it does
        (``PasswordChangeRequiredError`` from ``login``), and anyone may. Throttled as a sign-in;
        the second factor is needed as by ``login``; ``WeakPasswordError`` if the new password
        breaks the policy or equals the old one (what needs the account, such as its name in the
        password, only once the old one was right, so that the answer never tells whether an
        address has an account). Every other session of the account is signed out."""
        if new_password == password:
            raise WeakPasswordError("the new password must differ from the current one")
        self.policy.check(new_password)  # what the account's name adds is checked once it is known
        user, signed_in = await self._authenticate(email, password, client_ip)
        try:
            self.policy.check(new_password, email=user.email_key, full_name=user.full_name)
        except WeakPasswordError as exc:
            await self._forgive(signed_in, exc)
        if not code and (missing := await self.second.missing(user)) is not None:
            await self._forgive(signed_in, missing)
        hashed = await self.passwords.hash(new_password)
        key = await self.keys.active()
        async with self.units.uow() as uow:
            codes = await self.second.check(uow, user, code)
            await signed_in(uow)
            await uow.users.set_password_hash(user.id, hashed)
            await uow.users.require_password_change(user.id, False)
            await uow.refresh_tokens.revoke_others(user.id, keep=None, at=uow.clock())
            uow.add(PasswordChanged(user_id=user.id, how="sign_in"), aggregate_id=user.id)
            record_account_change(uow, user.id, by=user.id, roles=user.roles, what="password")
            tokens = await self._issue(uow, key, user.id, list(user.roles), family_id=uuid.uuid4())
        return replace(tokens, recovery_codes=tuple(codes))

    async def _authenticate(
        self, email: str, password: str, client_ip: str, *, unconfirmed: bool = False
    ) -> tuple[User, Callable[[IdentityWork], Awaitable[None]]]:
        """The active account whose password this is (``InvalidCredentialsError`` otherwise,
        ``ThrottledError`` past the limits), and what to do in the unit that signs it in: forgive
        this attempt and upgrade the hash if it was made with weaker parameters. An account whose
        address is not confirmed yet is refused (``EmailUnverifiedError``, once the password was
        right) unless ``unconfirmed``: confirming it."""
        try:
            email_key = normalise_email(email)
        except ValueError:
            email_key = email.strip().lower()[:254]
        t, now = self.throttle, self.clock()
        ip, pair, account = f"ip:{client_ip}", f"acct-ip:{email_key} {client_ip}", account_key(email_key)
        # The attempt counts against the address, the account at this address and the account
        # from before its password is checked, so guesses sent at once cannot all pass the counts
        # before the first of them is recorded (always in this order: no deadlock). A refused
        # attempt is rolled back: it checked no password, so it costs the guesser nothing more.
        self.refusals.check((ip, pair, account), now)
        try:
            async with self.units.uow() as uow:
                ip_at = granted(ip, await claim_attempt(uow.attempts, ip, t.ip_limit, t.window_seconds, now))
                granted(pair, await claim_with_backoff(uow.attempts, pair, t.pair, now))
                account_at = granted(
                    account, await claim_attempt(uow.attempts, account, t.account_limit, t.window_seconds, now)
                )
                user = await uow.users.by_email(email_key)
        except ThrottledError as exc:
            self.refusals.remember(exc, now)
            raise
        await self._prune(now)
        stored = user.password_hash if user and user.disabled_at is None else None
        ok, upgraded = await self.passwords.verify(stored, password)
        if not ok or user is None:
            raise InvalidCredentialsError("invalid email or password")  # the attempts stay counted
        found = user

        async def signed_in(uow: IdentityWork) -> None:
            # Only this attempt leaves the address's and the account's counts: one success must
            # not wipe the failures of others behind the same address, or of guessers elsewhere.
            # Its own failures at this address are forgiven.
            await uow.attempts.forget(ip, ip_at)
            await uow.attempts.forget(account, account_at)
            await uow.attempts.clear(pair)
            if upgraded is not None:
                await uow.users.set_password_hash(found.id, upgraded)

        if found.email_verified_at is None and not unconfirmed:
            await self._forgive(
                signed_in, EmailUnverifiedError("the address must be confirmed first, with the link e-mailed to it")
            )
        return found, signed_in

    async def _prune(self, now: datetime) -> None:
        """Forget attempts older than every window, at most once per ``PRUNE_EVERY`` per process."""
        if now - self._pruned < PRUNE_EVERY:
            return
        self._pruned = now
        t = self.throttle
        longest = max(t.window_seconds, t.pair.window_seconds, self.registrations.window_seconds)
        async with self.units.uow() as uow:
            await uow.attempts.prune(now - timedelta(seconds=longest))

    async def refresh(self, token: str) -> Tokens:
        key = await self.keys.active()
        async with self.units.uow() as uow:
            now = uow.clock()
            stored = await uow.refresh_tokens.get(token_hash(token), lock=True)
            if stored is None:
                raise InvalidCredentialsError("unknown refresh token")
            outcome = judge_refresh(stored, now)
            if outcome is RefreshOutcome.ROTATE:
                user = await uow.users.get(uuid.UUID(stored.user_id))
                if user is not None and user.disabled_at is None and not user.password_change_required:
                    await uow.refresh_tokens.mark_rotated(stored.id, now)
                    return await self._issue(
                        uow,
                        key,
                        user.id,
                        list(user.roles),
                        family_id=uuid.UUID(stored.family_id),
                        started_at=stored.started_at,
                    )
            if outcome is RefreshOutcome.REUSED:
                await uow.refresh_tokens.revoke_family(stored.family_id, now)
        # Committed (a reuse revoked the family); the caller learns only that it failed.
        raise InvalidCredentialsError(f"refresh refused: {outcome.value}")

    async def logout(self, token: str) -> None:
        async with self.units.uow() as uow:
            stored = await uow.refresh_tokens.get(token_hash(token), lock=True)
            if stored is not None:
                await uow.refresh_tokens.revoke_family(stored.family_id, uow.clock())

    async def revoked_sessions(self, since: datetime | None) -> tuple[datetime, list[tuple[str, datetime]]]:
        """The time of the answer, and the sessions revoked since ``since`` (default: as far back
        as an access token lives), each with the time until which its access tokens are refused
        (the last one it issued has expired by then)."""
        remembered = ACCESS_TOKEN_TTL + REVOCATION_LEEWAY
        async with self.units.read() as u:
            now = u.clock()
            rows = await u.refresh_tokens.revoked_since(max(since, now - remembered) if since else now - remembered)
        return now, [(sid, at + remembered) for sid, at in rows]

    async def change_password(self, *, user_id: uuid.UUID, session: str | None, current: str, new: str) -> None:
        """Change one's own password. The current one must be given (a stolen access token alone
        cannot take the account over) and wrong guesses are throttled like logins; every other
        session of the user is signed out, the one asking stays.

        Raises ``WeakPasswordError`` (the new one breaks the policy or equals the current one),
        ``InvalidCredentialsError`` (wrong current password, or no such active user) and
        ``ThrottledError``.
        """
        async with self.units.read() as u:
            user = await u.users.get(user_id)
        if user is None or user.disabled_at is not None:
            raise InvalidCredentialsError("no such active user")
        if new == current:
            raise WeakPasswordError("the new password must differ from the current one")
        self.policy.check(new, email=user.email_key, full_name=user.full_name)
        key, window = f"password:{user_id}", self.throttle.window_seconds
        async with self.units.uow() as uow:
            granted(key, await claim_attempt(uow.attempts, key, self.throttle.account_limit, window, self.clock()))
        ok, _ = await self.passwords.verify(user.password_hash, current)
        if not ok:
            raise InvalidCredentialsError("the current password is wrong")  # the attempt stays counted
        hashed = await self.passwords.hash(new)
        async with self.units.uow() as uow:
            await uow.attempts.clear(key)
            await uow.users.set_password_hash(user_id, hashed)
            await uow.users.require_password_change(user_id, False)
            await uow.refresh_tokens.revoke_others(user_id, keep=session, at=uow.clock())
            uow.add(PasswordChanged(user_id=user_id, how="own"), aggregate_id=user_id)
            record_account_change(uow, user_id, by=user_id, roles=user.roles, what="password")

    async def staff_directory(self, ids: Sequence[uuid.UUID]) -> list[StaffMember]:
        """The members of staff among ``ids``, in the order given, each once: accounts with a
        staff role that are not disabled (a patient's account and an unknown id are left out).
        Any signed-in caller may ask (the route demands a token): it names staff, not patients,
        so nothing is recorded in the audit trail. One read, one query, however many ids."""
        async with self.units.read() as u:
            found = await u.users.staff(list(dict.fromkeys(ids)))
        return in_order(ids, found)

    async def _issue(
        self,
        uow: IdentityWork,
        key: SigningKey,
        user_id: uuid.UUID,
        roles: list[str],
        *,
        family_id: uuid.UUID,
        started_at: datetime | None = None,
    ) -> Tokens:
        """A new access token signed with ``key`` and a new refresh token in ``family_id``, issued
        now by the unit's clock, in a session signed in ``started_at`` (None: now)."""
        now = uow.clock()
        access, ttl = sign_access_token(
            key, subject=str(user_id), roles=roles, issuer=ISSUER, audience=AUDIENCE, now=now, session=str(family_id)
        )
        refresh = secrets.token_urlsafe(32)
        await uow.refresh_tokens.add(
            token_id=uuid.uuid4(),
            token_hash=token_hash(refresh),
            family_id=family_id,
            user_id=user_id,
            at=now,
            expires_at=now + REFRESH_TOKEN_TTL,
            started_at=started_at or now,
        )
        return Tokens(access_token=access, refresh_token=refresh, expires_in=ttl)
