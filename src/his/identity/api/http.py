"""Internal HTTP API of identity (the gateway exposes it under /api/auth and /api/admin)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from his.access import Role
from his.identity.accounts import MAX_PAGE, Accounts
from his.identity.domain import (
    MAX_STAFF_IDS,
    Account,
    EmailTakenError,
    InvalidCredentialsError,
    InvalidEmailError,
    LastAdministratorError,
    NoSuchAccountError,
    PasswordChangeRequiredError,
    WeakPasswordError,
)
from his.identity.handlers import Identity, ThrottledError, Tokens
from his.identity.passwords import BusyError
from his.kernel.problems import HTTPException, ProblemError
from his.kernel.security import Principal
from his.kernel.web import Caller, Moment, errors, provided, public


class Register(BaseModel):
    """Self-registration: the account is always a PATIENT account; a ``roles`` field is refused."""

    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    full_name: str = Field(min_length=1, max_length=200)


class CreateUser(Register):
    roles: list[Role] = Field(min_length=1, max_length=8)


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=1024)


class RefreshBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(min_length=1, max_length=200)


class ChangePassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class Created(BaseModel):
    user_id: uuid.UUID


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int

    @classmethod
    def of(cls, t: Tokens) -> TokenPair:
        return cls(
            access_token=t.access_token, refresh_token=t.refresh_token, token_type=t.token_type, expires_in=t.expires_in
        )


BUSY = "too many sign-ins and registrations at once; try again shortly"


def client_ip(request: Request) -> str:
    # Set by the gateway from the peer address (clients cannot set it: the gateway overwrites it).
    return request.headers.get("x-his-client-ip") or (request.client.host if request.client else "unknown")


router = APIRouter(tags=["auth"])
Users = Annotated[Identity, Depends(provided(Identity))]
Admin = Annotated[Accounts, Depends(provided(Accounts))]


async def created(account: Awaitable[uuid.UUID]) -> Created:
    try:
        return Created(user_id=await account)
    except (WeakPasswordError, InvalidEmailError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None
    except EmailTakenError:
        raise HTTPException(409, "an account with this e-mail address exists") from None
    except ThrottledError as exc:
        raise HTTPException(429, "too many registrations; try later", headers=retry(exc.retry_after)) from None
    except BusyError as exc:
        raise HTTPException(503, BUSY, headers=retry(exc.retry_after)) from None


def retry(after: float) -> dict[str, str]:
    return {"Retry-After": str(after)}


@router.post(
    "/auth/register",
    status_code=201,
    responses=errors(409, 429),
    openapi_extra=public("/api/auth/register", without_token=True),
)
async def register(body: Register, request: Request, identity: Users) -> Created:
    """Create a PATIENT account for oneself. Registrations are limited per address and in all
    (429 with ``Retry-After`` past the limits)."""
    return await created(
        identity.self_register(
            email=body.email, password=body.password, full_name=body.full_name, client_ip=client_ip(request)
        )
    )


#: The ``code`` of the 403 answered to a right password that must be changed first.
PASSWORD_CHANGE_REQUIRED = "password_change_required"  # noqa: S105 - a problem code, not a secret


@router.post(
    "/auth/login",
    responses=errors(401, (403, f"the password must be changed first (`code`: `{PASSWORD_CHANGE_REQUIRED}`)"), 429),
    openapi_extra=public("/api/auth/login", without_token=True),
)
async def login(body: Login, request: Request, identity: Users) -> TokenPair:
    """Exchange e-mail and password for an access token (15 min) and a refresh token. After a
    few failures for an account from one address, further attempts from there wait longer
    each time (429 with ``Retry-After``); other addresses are not held up by them. When an
    administrator required a new password (or it was generated), a right password is answered
    403 with `code` `password_change_required`: sign in with `POST /api/auth/login/password`."""
    return await signed_in(identity.login(email=body.email, password=body.password, client_ip=client_ip(request)))


async def signed_in(tokens: Awaitable[Tokens]) -> TokenPair:
    try:
        return TokenPair.of(await tokens)
    except InvalidCredentialsError:
        raise HTTPException(401, "invalid email or password") from None
    except PasswordChangeRequiredError as exc:
        raise ProblemError(403, str(exc), code=PASSWORD_CHANGE_REQUIRED) from None
    except WeakPasswordError as exc:
        raise HTTPException(422, str(exc)) from None
    except ThrottledError as exc:
        raise HTTPException(429, "too many failed logins; try later", headers=retry(exc.retry_after)) from None
    except BusyError as exc:
        raise HTTPException(503, BUSY, headers=retry(exc.retry_after)) from None


class LoginChangingPassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=1, max_length=254)
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


@router.post(
    "/auth/login/password",
    responses=errors(401, 429),
    openapi_extra=public("/api/auth/login/password", without_token=True),
)
async def login_changing_password(body: LoginChangingPassword, request: Request, identity: Users) -> TokenPair:
    """Sign in and change the password at once: what a sign-in answered 403
    `password_change_required` does next, and what anyone may do. Throttled as `login`; 422 if
    the new password breaks the password policy. Every other session of the account ends."""
    return await signed_in(
        identity.login_changing_password(
            email=body.email,
            password=body.current_password,
            new_password=body.new_password,
            client_ip=client_ip(request),
        )
    )


@router.post("/auth/refresh", responses=errors(401), openapi_extra=public("/api/auth/refresh", without_token=True))
async def refresh(body: RefreshBody, identity: Users) -> TokenPair:
    """Rotate a refresh token. Presenting an already rotated token revokes its whole family."""
    try:
        return TokenPair.of(await identity.refresh(body.refresh_token))
    except InvalidCredentialsError:
        raise HTTPException(401, "invalid refresh token") from None


@router.post("/auth/logout", status_code=204, openapi_extra=public("/api/auth/logout", without_token=True))
async def logout(body: RefreshBody, identity: Users) -> Response:
    """Revoke the refresh token's family."""
    await identity.logout(body.refresh_token)
    return Response(status_code=204)


class RevokedSession(BaseModel):
    sid: str
    #: Until when its access tokens must be refused.
    until: Moment


class RevokedSessions(BaseModel):
    #: The ``since`` of the next call.
    now: Moment
    sessions: list[RevokedSession]


@router.get("/auth/revoked-sessions", include_in_schema=False)
async def revoked_sessions(identity: Users, since: datetime | None = None) -> RevokedSessions:
    """Internal (no public route): sessions signed out since ``since`` (default: as far back as
    an access token lives), each with the time until which its access tokens must be refused.
    The gateway polls it and refuses those tokens; ``now`` is the next call's ``since``."""
    if since is not None and since.tzinfo is None:
        raise HTTPException(422, "since needs a UTC offset")
    now, rows = await identity.revoked_sessions(since)
    return RevokedSessions(now=now, sessions=[RevokedSession(sid=sid, until=until) for sid, until in rows])


class JsonWebKeySet(BaseModel):
    """The public keys that sign access tokens (RFC 7517): each an EC P-256 key with its ``kid``,
    ``alg`` (ES256) and ``use`` (sig)."""

    keys: list[dict[str, str]]


@router.get("/auth/jwks", openapi_extra=public("/api/auth/jwks", without_token=True))
async def jwks(identity: Users) -> JsonWebKeySet:
    """Public signing keys (JWKS). Old keys stay until every token they signed has expired."""
    return JsonWebKeySet.model_validate(await identity.keys.jwks())


@router.post("/auth/password", status_code=204, responses=errors(403, 429), openapi_extra=public("/api/auth/password"))
async def change_password(body: ChangePassword, who: Caller, identity: Users) -> Response:
    """Change one's own password (any signed-in user), giving the current one. Every other
    session of the account is signed out; this one goes on. 403 if the current password is
    wrong, 422 if the new one breaks the password policy, 429 after too many wrong ones."""
    try:
        await identity.change_password(
            user_id=uuid.UUID(who.subject), session=who.session, current=body.current_password, new=body.new_password
        )
    except WeakPasswordError as exc:
        raise HTTPException(422, str(exc)) from None
    except InvalidCredentialsError as exc:
        raise HTTPException(403, str(exc)) from None
    except ThrottledError as exc:
        raise HTTPException(429, "too many wrong passwords; try later", headers=retry(exc.retry_after)) from None
    return Response(status_code=204)


@router.post(
    "/admin/users",
    status_code=201,
    tags=["admin"],
    responses=errors(403, 409),
    openapi_extra=public("/api/admin/users"),
)
async def create_user(body: CreateUser, who: Caller, identity: Users) -> Created:
    """ADMIN creates a user (staff or patient) with the given roles."""
    if not who.has_any(Role.ADMIN):
        raise HTTPException(403, "ADMIN role required")
    return await created(
        identity.register(
            email=body.email,
            password=body.password,
            full_name=body.full_name,
            roles=list(body.roles),
            created_by=uuid.UUID(who.subject),
        )
    )


class StaffEntry(BaseModel):
    """A member of staff as the directory names them: no address, nothing else of the account."""

    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    full_name: str
    #: Their staff roles, sorted (never PATIENT).
    roles: list[Role]


class StaffDirectory(BaseModel):
    items: list[StaffEntry]


@router.get(
    "/staff",
    tags=["staff"],
    responses=errors((422, f"no `id`, more than {MAX_STAFF_IDS}, or one that is not a UUID")),
    openapi_extra=public("/api/staff"),
)
async def staff_directory(
    who: Caller,
    identity: Users,
    ids: Annotated[
        list[uuid.UUID],
        Query(
            alias="id",
            min_length=1,
            max_length=MAX_STAFF_IDS,
            description=f"an account's id; repeat it for up to {MAX_STAFF_IDS} accounts",
        ),
    ],
) -> StaffDirectory:
    """Name members of staff by their account ids (`?id=…&id=…`, 1 to 200): who wrote a record
    entry, who is on a care team, who read a record. Each account among the ids with a staff role
    comes once, in the order given, with its full name and staff roles; patients' accounts,
    disabled accounts and unknown ids are left out. Any signed-in user may ask (a patient learns
    by name who read their record).

    No audit record is written: the answer names staff, never a patient, and holds nothing of a
    patient's data (no address or anything else of an account either)."""
    members = await identity.staff_directory(ids)
    return StaffDirectory(items=[StaffEntry.model_validate(m) for m in members])


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


def admin_only(who: Principal) -> uuid.UUID:
    if not who.has_any(Role.ADMIN):
        raise HTTPException(403, "ADMIN role required")
    return uuid.UUID(who.subject)


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


class AccountChange(BaseModel):
    """What to change (a field left out is unchanged)."""

    model_config = ConfigDict(extra="forbid")
    roles: list[Role] | None = Field(default=None, min_length=1, max_length=8)
    active: bool | None = None
    password_change_required: bool | None = None


@router.patch(
    "/admin/users/{user_id}",
    tags=["admin"],
    responses=errors(403, 404, (409, "no active administrator would be left")),
    openapi_extra=public("/api/admin/users/{id}"),
)
async def update_user(user_id: uuid.UUID, body: AccountChange, who: Caller, accounts: Admin) -> AccountEntry:
    """ADMIN changes an account's roles, disables it (`active: false`: a leaver) or enables it
    again, or requires a new password at its next sign-in. Whatever takes rights away signs out
    every session of the account: its tokens are refused everywhere within about a second.
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
