"""Internal HTTP API of identity for administrators: accounts (list, search, roles, disable and
enable, a new password required, second factor reset, unlock) and the second factor's policy.
The gateway exposes it under /api/admin; ``his.identity.api.http`` includes its router."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from his.access import Role
from his.identity.accounts import MAX_PAGE, Accounts
from his.identity.domain import Account, LastAdministratorError, NoSuchAccountError
from his.identity.handlers import Identity
from his.kernel.problems import HTTPException
from his.kernel.security import Principal
from his.kernel.web import Caller, Moment, errors, provided, public

router = APIRouter(tags=["admin"])
Users = Annotated[Identity, Depends(provided(Identity))]
Admin = Annotated[Accounts, Depends(provided(Accounts))]


class AccountEntry(BaseModel):
    """An account as an administrator sees it (never its password or its hash)."""

    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    email: str
    full_name: str
    roles: list[Role]
    #: False once disabled: it cannot sign in and its tokens are refused.
    active: bool
    #: Sign-ins to it are held back after too many wrong passwords (`POST …/unlock` clears them).
    locked: bool
    #: Whether it signs in with a second factor.
    mfa: bool
    #: Its next sign-in must change the password.
    password_change_required: bool
    created_at: Moment

    @classmethod
    def of(cls, account: Account) -> AccountEntry:
        return cls.model_validate(account)


class AccountList(BaseModel):
    items: list[AccountEntry]


def admin_only(who: Principal) -> Principal:
    if not who.has_any(Role.ADMIN):
        raise HTTPException(403, "ADMIN role required")
    return who


@router.get("/admin/users", tags=["admin"], responses=errors(403), openapi_extra=public("/api/admin/users"))
async def list_users(
    who: Caller,
    accounts: Admin,
    q: Annotated[str, Query(max_length=200, description="part of an address or a name")] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> AccountList:
    """ADMIN lists the accounts whose address or name contains `q` (all when it is empty), by
    name, at most `limit`."""
    admin_only(who)
    return AccountList(items=[AccountEntry.of(a) for a in await accounts.search(q, limit=limit)])


@router.get(
    "/admin/users/{user_id}", tags=["admin"], responses=errors(403, 404), openapi_extra=public("/api/admin/users/{id}")
)
async def get_user(user_id: uuid.UUID, who: Caller, accounts: Admin) -> AccountEntry:
    """ADMIN reads one account as the list shows it."""
    admin_only(who)
    try:
        return AccountEntry.of(await accounts.get(user_id))
    except NoSuchAccountError:
        raise HTTPException(404, "no such account") from None


class AccountChange(BaseModel):
    """What to change (a field left out is unchanged)."""

    model_config = ConfigDict(extra="forbid")
    roles: list[Role] | None = Field(default=None, min_length=1, max_length=8)
    active: bool | None = None
    password_change_required: bool | None = None
    #: `false` removes the account's second factor (a lost phone): it enrols again.
    mfa: Literal[False] | None = None


@router.patch(
    "/admin/users/{user_id}",
    tags=["admin"],
    responses=errors(403, 404, (409, "no active administrator would be left")),
    openapi_extra=public("/api/admin/users/{id}"),
)
async def update_user(user_id: uuid.UUID, body: AccountChange, who: Caller, accounts: Admin) -> AccountEntry:
    """ADMIN changes an account's roles, disables it (`active: false`: a leaver) or enables it
    again, requires a new password at its next sign-in, or removes its second factor (`mfa:
    false`, a lost phone). Whatever takes rights away signs out every session of the account:
    its tokens are refused everywhere within about a second.
    The hospital's last active administrator cannot be disabled or lose ADMIN (409)."""
    by = admin_only(who)
    try:
        return AccountEntry.of(
            await accounts.update(
                user_id,
                by=by,
                roles=body.roles,
                active=body.active,
                password_change_required=body.password_change_required,
                reset_second_factor=body.mfa is False,
            )
        )
    except NoSuchAccountError:
        raise HTTPException(404, "no such account") from None
    except LastAdministratorError as exc:
        raise HTTPException(409, str(exc)) from None


@router.post(
    "/admin/users/{user_id}/unlock",
    tags=["admin"],
    responses=errors(403, 404),
    openapi_extra=public("/api/admin/users/{id}/unlock"),
)
async def unlock_user(user_id: uuid.UUID, who: Caller, accounts: Admin) -> AccountEntry:
    """ADMIN clears the failed sign-ins that hold an account's sign-ins back, from every address."""
    by = admin_only(who)
    try:
        return AccountEntry.of(await accounts.unlock(user_id, by=by))
    except NoSuchAccountError:
        raise HTTPException(404, "no such account") from None


class SecondFactorPolicy(BaseModel):
    """The roles whose accounts sign in with a second factor."""

    model_config = ConfigDict(extra="forbid")
    roles: list[Role] = Field(max_length=8)


@router.get("/admin/mfa-policy", tags=["admin"], responses=errors(403), openapi_extra=public("/api/admin/mfa-policy"))
async def second_factor_policy(who: Caller, identity: Users) -> SecondFactorPolicy:
    """ADMIN reads which roles sign in with a second factor."""
    admin_only(who)
    return SecondFactorPolicy.model_validate({"roles": await identity.second.policy()})


@router.put("/admin/mfa-policy", tags=["admin"], responses=errors(403), openapi_extra=public("/api/admin/mfa-policy"))
async def set_second_factor_policy(body: SecondFactorPolicy, who: Caller, identity: Users) -> SecondFactorPolicy:
    """ADMIN sets which roles sign in with a second factor. Accounts of those roles without one
    enrol at their next sign-in (403 `mfa_enrolment_required`, then `POST /api/auth/login/totp`);
    sessions already open go on until they end."""
    by = admin_only(who)
    chosen = await identity.second.set_policy([r.value for r in body.roles], by=by)
    return SecondFactorPolicy.model_validate({"roles": chosen})
