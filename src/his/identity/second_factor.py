"""The second factor's use cases: enrol an authenticator and confirm it, check the code at each
sign-in, and the roles that must have one (``his.identity.mfa`` holds the rules).

At sign-in the password is checked first (``Identity``); then an account with a second factor
needs a code from it or an unused recovery code, and an account whose role the policy names but
that has none yet must enrol before it signs in: with a token (``POST /api/auth/mfa/totp``) or, at
a sign-in that cannot get one, with its password (``POST /api/auth/login/totp``), then a sign-in
with the first code confirms the enrolment and returns the recovery codes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from his.events.identity import SecondFactorEnabled, SecondFactorPolicyChanged
from his.identity.auditing import record_account_change
from his.identity.domain import InvalidCredentialsError, User
from his.identity.mfa import (
    AlreadyEnrolledError,
    Enrolment,
    EnrolmentRequiredError,
    NotEnrollingError,
    SecondFactorRequiredError,
    aad,
    matching_step,
    new_enrolment,
    new_recovery_codes,
    recovery_hash,
)
from his.identity.ports import IdentityUnits, IdentityWork
from his.identity.throttles import Throttle, claim_attempt, granted
from his.kernel.crypto import FieldCipher
from his.kernel.security import Principal

#: The aggregate of the policy's events: there is one policy.
POLICY_ID = uuid.uuid5(uuid.NAMESPACE_URL, "his.identity/second-factor-policy")


@dataclass
class SecondFactor:
    units: IdentityUnits
    #: Encrypts the TOTP secrets (``mfa.secrets_cipher``).
    cipher: FieldCipher
    throttle: Throttle

    async def missing(self, user: User) -> Exception | None:
        """Why ``user``, whose password was right, cannot sign in without a code: it has a second
        factor, or its role needs one it has not got. None: it can."""
        if user.totp_enabled_at is not None:
            return SecondFactorRequiredError("a code from the authenticator app is needed")
        if await self._required(user):
            return EnrolmentRequiredError("this role signs in with a second factor: enrol an authenticator app")
        return None

    async def _required(self, user: User) -> bool:
        async with self.units.read() as u:
            return bool(set(user.roles) & await u.mfa_policy.roles())

    async def check(self, uow: IdentityWork, user: User, code: str | None) -> list[str]:
        """Pass ``user``'s second factor in the unit that signs it in, or raise: a wrong code is an
        ``InvalidCredentialsError``. The recovery codes of an enrolment the code confirmed (none
        otherwise)."""
        now = uow.clock()
        if user.totp_secret is not None:
            if code is None:
                raise SecondFactorRequiredError("a code from the authenticator app is needed")
            step = matching_step(self.cipher.decrypt(user.totp_secret, aad(user.id)), code, now)
            if step is not None and await uow.users.use_totp_step(user.id, step):
                return []
            if await uow.recovery_codes.use(user.id, recovery_hash(code), now):
                return []
            raise InvalidCredentialsError("invalid code")
        if user.totp_pending is not None and code:
            step = matching_step(self.cipher.decrypt(user.totp_pending, aad(user.id)), code, now)
            if step is None:
                raise InvalidCredentialsError("invalid code")
            return await self._enable(uow, user, user.totp_pending, step)
        if set(user.roles) & await uow.mfa_policy.roles():
            raise EnrolmentRequiredError("this role signs in with a second factor: enrol an authenticator app")
        return []

    async def enrol(self, user_id: uuid.UUID) -> Enrolment:
        """Begin an enrolment (a new secret, replacing one begun before). ``AlreadyEnrolledError``
        if the account has a second factor; ``InvalidCredentialsError`` if it is not active."""
        async with self.units.uow() as uow:
            user = await uow.users.get(user_id)
            if user is None or user.disabled_at is not None:
                raise InvalidCredentialsError("no such active user")
            if user.totp_enabled_at is not None:
                raise AlreadyEnrolledError("this account has a second factor; an administrator can reset it")
            enrolment = new_enrolment(user.email)
            await uow.users.set_totp_pending(user.id, self.cipher.encrypt(enrolment.secret, aad(user.id)))
        return enrolment

    async def confirm(self, user_id: uuid.UUID, code: str) -> list[str]:
        """Confirm the enrolment begun with the first code from the app: the account signs in
        with its second factor from now on. Its ten recovery codes, shown this once. Wrong codes
        are throttled as wrong passwords are (``ThrottledError``)."""
        key, t = f"totp:{user_id}", self.throttle
        async with self.units.uow() as uow:
            granted(key, await claim_attempt(uow.attempts, key, t.account_limit, t.window_seconds, uow.clock()))
            user = await uow.users.get(user_id)
        if user is None or user.disabled_at is not None:
            raise InvalidCredentialsError("no such active user")
        if user.totp_enabled_at is not None:
            raise AlreadyEnrolledError("this account has a second factor already")
        if user.totp_pending is None:
            raise NotEnrollingError("no enrolment was begun")
        async with self.units.uow() as uow:
            step = matching_step(self.cipher.decrypt(user.totp_pending, aad(user.id)), code, uow.clock())
            if step is None:
                raise InvalidCredentialsError("invalid code")  # the attempt stays counted
            await uow.attempts.clear(key)
            return await self._enable(uow, user, user.totp_pending, step)

    async def _enable(self, uow: IdentityWork, user: User, secret: bytes, step: int) -> list[str]:
        await uow.users.enable_totp(user.id, secret, step=step, at=uow.clock())
        codes = new_recovery_codes()
        await uow.recovery_codes.replace(user.id, [recovery_hash(c) for c in codes])
        uow.add(SecondFactorEnabled(user_id=user.id), aggregate_id=user.id)
        return codes

    async def policy(self) -> list[str]:
        async with self.units.read() as u:
            return sorted(await u.mfa_policy.roles())

    async def set_policy(self, roles: Sequence[str], *, by: Principal) -> list[str]:
        """These roles, and no others, sign in with a second factor from now on; ``by``: the
        administrator. A change is an event and a record of the audit chain naming no account."""
        chosen, admin = sorted(set(roles)), uuid.UUID(by.subject)
        async with self.units.uow() as uow:
            if set(chosen) != await uow.mfa_policy.roles():
                await uow.mfa_policy.set_roles(chosen, at=uow.clock(), by=admin)
                uow.add(SecondFactorPolicyChanged(roles=chosen, changed_by=admin), aggregate_id=POLICY_ID)
                record_account_change(uow, None, by=admin, roles=by.roles, what="second_factor_policy")
        return chosen
