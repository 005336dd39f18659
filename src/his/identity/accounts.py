"""An administrator's use cases on accounts: list and search them, change roles, disable a
leaver and enable again, require a new password, unlock.

Whatever takes rights away (roles changed, disabled, a new password required, the second factor
reset) signs out every
session of the account in the same transaction: its access tokens are then refused within about
a second, by the gateway and by each service (``his.kernel.revocations``), and its refresh tokens
at once. Each change is an event of its own, naming the administrator who made it, and a record
of the audit chain naming the account and the administrator (``his.identity.auditing``). The hospital
never loses its last active administrator: such a change is refused (``LastAdministratorError``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

from his.access import Role
from his.events.audit import Action
from his.events.identity import (
    PasswordChangeRequired,
    SecondFactorReset,
    UserDisabled,
    UserEnabled,
    UserRolesChanged,
    UserUnlocked,
)
from his.identity.auditing import record_account_change
from his.identity.domain import (
    Account,
    LastAdministratorError,
    NoSuchAccountError,
    User,
    account_key,
    account_of,
    leaves_no_admin,
    pair_prefix,
)
from his.identity.ports import IdentityUnits, IdentityWork
from his.identity.throttles import Refusals, Throttle
from his.kernel.security import Principal

#: How many accounts one page of the list holds at most.
MAX_PAGE = 200


class Accounts:
    """The administrators' use cases over identity's units of work."""

    def __init__(
        self, units: IdentityUnits, throttle: Throttle | None = None, refusals: Refusals | None = None
    ) -> None:
        self.units = units
        self.throttle = throttle or Throttle()
        #: The sign-in refusals this process remembers (``Identity.refusals``).
        self.refusals = refusals or Refusals()

    async def search(self, q: str, *, limit: int = 50) -> list[Account]:
        """Accounts whose address or name contains ``q`` (every account when it is blank), by
        name, at most ``limit``."""
        async with self.units.read() as u:
            users = await u.users.search(" ".join(q.split()).lower(), limit=min(limit, MAX_PAGE))
            return await self._accounts(u, users)

    async def get(self, user_id: uuid.UUID) -> Account:
        async with self.units.read() as u:
            user = await u.users.get(user_id)
            if user is None:
                raise NoSuchAccountError(str(user_id))
            return (await self._accounts(u, [user]))[0]

    async def _accounts(self, u: IdentityWork, users: Sequence[User]) -> list[Account]:
        """Each of ``users`` as listed, ``locked`` when its attempts reached the per-account
        ceiling (sign-ins to it are then refused from every address until some age out)."""
        since = u.clock() - timedelta(seconds=self.throttle.window_seconds)
        counts = await u.attempts.counts([account_key(x.email_key) for x in users], since)
        ceiling = self.throttle.account_limit
        return [account_of(x, locked=counts.get(account_key(x.email_key), 0) >= ceiling) for x in users]

    async def update(
        self,
        user_id: uuid.UUID,
        *,
        by: Principal,
        roles: Sequence[Role] | None = None,
        active: bool | None = None,
        password_change_required: bool | None = None,
        reset_second_factor: bool = False,
    ) -> Account:
        """Change what is given (None: unchanged); ``reset_second_factor``: remove the account's
        second factor and recovery codes (a lost phone), to enrol again. ``by``: the administrator.
        ``NoSuchAccountError``;
        ``LastAdministratorError`` if no active administrator would be left."""
        new_roles = tuple(sorted({r.value for r in roles})) if roles is not None else None
        async with self.units.uow() as uow:
            user = await uow.users.get(user_id)
            if user is None:
                raise NoSuchAccountError(str(user_id))
            if new_roles is not None or active is not None:
                admins = await uow.users.active_admins(lock=True)
                others = admins - (user.disabled_at is None and Role.ADMIN.value in user.roles)
                if leaves_no_admin(user, roles=new_roles, active=active, other_admins=others):
                    raise LastAdministratorError("the hospital must keep an active administrator")
            sign_out = await self._apply(
                uow, user, by=by, roles=new_roles, active=active, password_change_required=password_change_required
            )
            if reset_second_factor and (user.totp_enabled_at is not None or user.totp_pending is not None):
                await uow.users.reset_totp(user.id)
                await uow.recovery_codes.replace(user.id, [])
                uow.add(SecondFactorReset(user_id=user.id, changed_by=_id(by)), aggregate_id=user.id)
                _recorded(uow, user, by, "second_factor", action="delete")
                sign_out = True
            if sign_out:
                await uow.refresh_tokens.revoke_others(user_id, keep=None, at=uow.clock())
        return await self.get(user_id)

    async def _apply(
        self,
        uow: IdentityWork,
        user: User,
        *,
        by: Principal,
        roles: tuple[str, ...] | None,
        active: bool | None,
        password_change_required: bool | None,
    ) -> bool:
        """Make the changes and record their events and audit records; whether the account's
        sessions must end."""
        sign_out, admin = False, _id(by)
        if roles is not None and roles != user.roles:
            await uow.users.set_roles(user.id, roles)
            uow.add(UserRolesChanged(user_id=user.id, roles=list(roles), changed_by=admin), aggregate_id=user.id)
            _recorded(uow, user, by, "roles")
            sign_out = True
        if active is False and user.disabled_at is None:
            await uow.users.set_disabled(user.id, uow.clock())
            uow.add(UserDisabled(user_id=user.id, changed_by=admin), aggregate_id=user.id)
            _recorded(uow, user, by, "disabled")
            sign_out = True
        elif active is True and user.disabled_at is not None:
            await uow.users.set_disabled(user.id, None)
            uow.add(UserEnabled(user_id=user.id, changed_by=admin), aggregate_id=user.id)
            _recorded(uow, user, by, "enabled")
        if password_change_required is not None and password_change_required != user.password_change_required:
            await uow.users.require_password_change(user.id, password_change_required)
            _recorded(uow, user, by, "password_change_required")
            if password_change_required:
                uow.add(PasswordChangeRequired(user_id=user.id, changed_by=admin), aggregate_id=user.id)
                sign_out = True
        return sign_out

    async def unlock(self, user_id: uuid.UUID, *, by: Principal) -> Account:
        """Forget the failed sign-ins that hold the account's sign-ins back, from every address."""
        async with self.units.uow() as uow:
            user = await uow.users.get(user_id)
            if user is None:
                raise NoSuchAccountError(str(user_id))
            await uow.attempts.clear(account_key(user.email_key))
            await uow.attempts.clear_prefix(pair_prefix(user.email_key))
            uow.add(UserUnlocked(user_id=user.id, changed_by=_id(by)), aggregate_id=user.id)
            _recorded(uow, user, by, "unlocked")
        self.refusals.forget([account_key(user.email_key), pair_prefix(user.email_key)])
        return await self.get(user_id)


def _id(who: Principal) -> uuid.UUID:
    return uuid.UUID(who.subject)


def _recorded(uow: IdentityWork, user: User, by: Principal, what: str, *, action: Action = "update") -> None:
    """The audit record of a change ``by`` made to ``user``'s account (``record_account_change``)."""
    record_account_change(uow, user.id, by=_id(by), roles=by.roles, what=what, action=action)
