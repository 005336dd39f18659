"""Internal HTTP API of identity (the gateway exposes it under /api/auth and /api/admin)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from his.access import Role
from his.identity.accounts import Accounts
from his.identity.domain import (
    MAX_STAFF_IDS,
    EmailTakenError,
    EmailUnverifiedError,
    InvalidCredentialsError,
    InvalidEmailError,
    PasswordChangeRequiredError,
    WeakPasswordError,
)
from his.identity.handlers import Identity, Tokens
from his.identity.mfa import (
    AlreadyEnrolledError,
    Enrolment,
    EnrolmentRequiredError,
    NotEnrollingError,
    SecondFactorRequiredError,
)
from his.identity.passwords import BusyError
from his.identity.recovery import InvalidResetLinkError, PasswordRecovery
from his.identity.registration import InvalidConfirmationLinkError, Registration
from his.identity.throttles import ThrottledError
from his.kernel.problems import HTTPException, ProblemError
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
    #: A code from the account's authenticator app, or one of its recovery codes.
    code: str | None = Field(default=None, min_length=1, max_length=64)


class Credentials(BaseModel):
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
    #: Only when this sign-in confirmed a second factor's enrolment: its ten recovery codes, each
    #: usable once in place of a code, shown this once.
    recovery_codes: list[str] | None = None

    @classmethod
    def of(cls, t: Tokens) -> TokenPair:
        return cls(
            access_token=t.access_token,
            refresh_token=t.refresh_token,
            token_type=t.token_type,
            expires_in=t.expires_in,
            recovery_codes=list(t.recovery_codes) or None,
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


Registrations = Annotated[Registration, Depends(provided(Registration))]


@router.post(
    "/auth/register",
    status_code=201,
    responses=errors(429),
    openapi_extra=public("/api/auth/register", without_token=True),
)
async def register(body: Register, request: Request, registration: Registrations) -> Created:
    """Register a PATIENT account for oneself. The answer is the same whether or not the address
    has an account: what differs goes by e-mail to the address. A new address gets a link to
    confirm it, opened with this password (`POST /api/auth/verify-email`); until then the account
    cannot sign in (403 `email_unverified`). Registering an address not confirmed yet again sends
    a new link, and the account takes the new name and password. An address with an account gets
    a message saying so. ``user_id`` is the new account's, or an id that names no account.

    422 says what is wrong with the address, the name or the password, whoever has the address.
    Registrations are limited per address and in all (429 with ``Retry-After`` past the limits)."""
    return await created(
        registration.register(
            email=body.email, password=body.password, full_name=body.full_name, client_ip=client_ip(request)
        )
    )


class VerifyEmail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)


@router.post(
    "/auth/verify-email",
    status_code=204,
    responses=errors(
        (400, "the link was used, replaced by a newer registration or expired, or the password is not its own"), 429
    ),
    openapi_extra=public("/api/auth/verify-email", without_token=True),
)
async def verify_email(body: VerifyEmail, request: Request, registration: Registrations) -> Response:
    """Confirm a registered address with the token of the link e-mailed to it and the password
    chosen at registration; the account may sign in from then on. The link works once, for 24
    hours; registering again voids it. Throttled as a sign-in is (429 with ``Retry-After``)."""
    try:
        await registration.confirm(body.token, body.password, client_ip(request))
    except InvalidConfirmationLinkError as exc:
        raise HTTPException(400, str(exc)) from None
    except ThrottledError as exc:
        raise HTTPException(429, "too many failed attempts; try later", headers=retry(exc.retry_after)) from None
    except BusyError as exc:
        raise HTTPException(503, BUSY, headers=retry(exc.retry_after)) from None
    return Response(status_code=204)


#: The ``code`` of the 403 answered to a right password that must be changed first.
PASSWORD_CHANGE_REQUIRED = "password_change_required"  # noqa: S105 - a problem code, not a secret
#: The ``code`` of the 401 answered to a right password without the second factor's code.
MFA_REQUIRED = "mfa_required"
#: The ``code`` of the 403 answered to a right password whose role needs a second factor it lacks.
MFA_ENROLMENT_REQUIRED = "mfa_enrolment_required"
#: The ``code`` of the 403 answered to a right password of an account whose address is not confirmed.
EMAIL_UNVERIFIED = "email_unverified"
SIGN_IN_ERRORS = errors(
    (401, f"wrong e-mail, password or code; or a code is needed (`code`: `{MFA_REQUIRED}`)"),
    (
        403,
        f"the password must be changed first (`code`: `{PASSWORD_CHANGE_REQUIRED}`), a second factor"
        f" enrolled first (`code`: `{MFA_ENROLMENT_REQUIRED}`), or the address confirmed first"
        f" (`code`: `{EMAIL_UNVERIFIED}`)",
    ),
    429,
)


@router.post(
    "/auth/login",
    responses=SIGN_IN_ERRORS,
    response_model_exclude_none=True,
    openapi_extra=public("/api/auth/login", without_token=True),
)
async def login(body: Login, request: Request, identity: Users) -> TokenPair:
    """Exchange e-mail and password for an access token (15 min) and a refresh token. After a
    few failures for an account from one address, further attempts from there wait longer
    each time (429 with ``Retry-After``); other addresses are not held up by them.

    A right password may still be refused, saying what comes next: 401 `mfa_required` (send
    `code` too: from the authenticator app, or a recovery code); 403 `mfa_enrolment_required`
    (the role needs a second factor: `POST /api/auth/login/totp`, then sign in with its first
    code, which returns the recovery codes); 403 `password_change_required` (an administrator
    required a new password, or it was generated: `POST /api/auth/login/password`); 403
    `email_unverified` (a self-registered account whose address was not confirmed yet: the link
    e-mailed at registration, `POST /api/auth/verify-email`)."""
    return await signed_in(
        identity.login(email=body.email, password=body.password, client_ip=client_ip(request), code=body.code)
    )


async def signed_in(tokens: Awaitable[Tokens]) -> TokenPair:
    try:
        return TokenPair.of(await tokens)
    except SIGN_IN_FAILURES as exc:
        raise refusal(exc) from None


#: What a sign-in may fail with; ``refusal`` says how each is answered.
SIGN_IN_FAILURES = (
    InvalidCredentialsError,
    SecondFactorRequiredError,
    EnrolmentRequiredError,
    PasswordChangeRequiredError,
    EmailUnverifiedError,
    WeakPasswordError,
    ThrottledError,
    BusyError,
)


def refusal(exc: Exception) -> Exception:
    """The answer to a sign-in that failed with ``exc`` (one of ``SIGN_IN_FAILURES``)."""
    match exc:
        case InvalidCredentialsError():
            return HTTPException(401, "invalid code" if str(exc) == "invalid code" else "invalid email or password")
        case SecondFactorRequiredError():
            return ProblemError(401, str(exc), code=MFA_REQUIRED)
        case EnrolmentRequiredError():
            return ProblemError(403, str(exc), code=MFA_ENROLMENT_REQUIRED)
        case PasswordChangeRequiredError():
            return ProblemError(403, str(exc), code=PASSWORD_CHANGE_REQUIRED)
        case EmailUnverifiedError():
            return ProblemError(403, str(exc), code=EMAIL_UNVERIFIED)
        case WeakPasswordError():
            return HTTPException(422, str(exc))
        case ThrottledError():
            return HTTPException(429, "too many failed logins; try later", headers=retry(exc.retry_after))
        case BusyError():
            return HTTPException(503, BUSY, headers=retry(exc.retry_after))
    raise exc


class LoginChangingPassword(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=1, max_length=254)
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)
    code: str | None = Field(default=None, min_length=1, max_length=64)


@router.post(
    "/auth/login/password",
    responses=SIGN_IN_ERRORS,
    response_model_exclude_none=True,
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
            code=body.code,
        )
    )


class TotpEnrolment(BaseModel):
    """What an authenticator app needs: the secret (base32), and the same as an `otpauth://` URI,
    which a QR code shows."""

    secret: str
    uri: str

    @classmethod
    def of(cls, e: Enrolment) -> TotpEnrolment:
        return cls(secret=e.secret, uri=e.uri)


class TotpCode(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=64)


class RecoveryCodes(BaseModel):
    """Ten codes, each usable once in place of a code from the app: shown this once."""

    recovery_codes: list[str]


ENROL_ERRORS = errors((409, "the account has a second factor; an administrator can reset it"))


@router.post(
    "/auth/login/totp",
    responses=SIGN_IN_ERRORS | ENROL_ERRORS,
    openapi_extra=public("/api/auth/login/totp", without_token=True),
)
async def enrol_at_sign_in(body: Credentials, request: Request, identity: Users) -> TotpEnrolment:
    """Begin enrolling an authenticator app with the password, for an account that cannot sign
    in without one (403 `mfa_enrolment_required`). Throttled as a sign-in. Then sign in with
    the first code (`POST /api/auth/login` with `code`): that confirms it and returns the
    recovery codes."""
    try:
        return TotpEnrolment.of(
            await identity.enrol_at_sign_in(email=body.email, password=body.password, client_ip=client_ip(request))
        )
    except AlreadyEnrolledError as exc:
        raise HTTPException(409, str(exc)) from None
    except SIGN_IN_FAILURES as exc:
        raise refusal(exc) from None


@router.post("/auth/mfa/totp", responses=ENROL_ERRORS, openapi_extra=public("/api/auth/mfa/totp"))
async def enrol_totp(who: Caller, identity: Users) -> TotpEnrolment:
    """Begin enrolling an authenticator app for one's own account (any signed-in user): scan the
    URI as a QR code, then confirm with its first code (`POST /api/auth/mfa/totp/verify`). A new
    call replaces an enrolment begun and not confirmed."""
    try:
        return TotpEnrolment.of(await identity.second.enrol(uuid.UUID(who.subject)))
    except AlreadyEnrolledError as exc:
        raise HTTPException(409, str(exc)) from None
    except InvalidCredentialsError:
        raise HTTPException(401, "invalid token") from None


@router.post(
    "/auth/mfa/totp/verify",
    responses=errors((403, "the code is wrong"), 409, 429),
    openapi_extra=public("/api/auth/mfa/totp/verify"),
)
async def confirm_totp(body: TotpCode, who: Caller, identity: Users) -> RecoveryCodes:
    """Confirm the enrolment with the first code from the app: from now on the account signs in
    with a code as well. Answers the ten recovery codes, shown this once. 409 if no enrolment was
    begun or one is confirmed already; wrong codes are throttled (429)."""
    try:
        return RecoveryCodes(recovery_codes=await identity.second.confirm(uuid.UUID(who.subject), body.code))
    except InvalidCredentialsError as exc:
        raise HTTPException(403, str(exc)) from None
    except (AlreadyEnrolledError, NotEnrollingError) as exc:
        raise HTTPException(409, str(exc)) from None
    except ThrottledError as exc:
        raise HTTPException(429, "too many wrong codes; try later", headers=retry(exc.retry_after)) from None


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
            creator_roles=who.roles,
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


Recovery = Annotated[PasswordRecovery, Depends(provided(PasswordRecovery))]


class ResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=254)


@router.post(
    "/auth/password-reset",
    status_code=202,
    responses=errors((429, "this address asked too often")),
    openapi_extra=public("/api/auth/password-reset", without_token=True),
)
async def request_reset(body: ResetRequest, request: Request, recovery: Recovery) -> Response:
    """Ask for a link that resets a forgotten password, sent to the address. Answered 202 whether
    or not the address has an account (an unknown address, a disabled account or one asked for
    too often gets no e-mail). The link works once, for 30 minutes; a newer one voids it. 422 for
    what is not an e-mail address; 429 when this network address asked too often."""
    try:
        await recovery.request(body.email, client_ip(request))
    except InvalidEmailError as exc:
        raise HTTPException(422, str(exc)) from None
    except ThrottledError as exc:
        raise HTTPException(429, "too many reset requests; try later", headers=retry(exc.retry_after)) from None
    return Response(status_code=202)


class ResetConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=200)
    new_password: str = Field(min_length=1, max_length=1024)


@router.post(
    "/auth/password-reset/confirm",
    status_code=204,
    responses=errors((400, "the link was used, replaced by a newer one, or expired")),
    openapi_extra=public("/api/auth/password-reset/confirm", without_token=True),
)
async def confirm_reset(body: ResetConfirm, recovery: Recovery) -> Response:
    """Set a new password with the token of a reset link. Every session of the account ends and
    the failed sign-ins that held it back are cleared; a second factor is still asked at sign-in.
    400 if the link does not work (used, replaced or expired); 422 if the password breaks the
    policy (the link then still works)."""
    try:
        await recovery.confirm(body.token, body.new_password)
    except InvalidResetLinkError as exc:
        raise HTTPException(400, str(exc)) from None
    except WeakPasswordError as exc:
        raise HTTPException(422, str(exc)) from None
    except BusyError as exc:
        raise HTTPException(503, BUSY, headers=retry(exc.retry_after)) from None
    return Response(status_code=204)
