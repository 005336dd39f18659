"""Signing in, step by step, as identity asks (docs/console.md, *Signing in*): the password; a
code from the authenticator app or a recovery code when the account has a second factor; enrolling
an authenticator first when the role needs one; a new password first when one is required. Each
step's page asks for the password again: it is never kept between steps, not in a hidden field,
not in a URL, not on the server. The tokens stay on the server; the browser gets the session
cookie; the recovery codes of an enrolment confirmed here are shown once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import segno
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from his.console.areas import home_of
from his.console.domain import COOKIE, LIFETIME, Answer, tokens_of
from his.console.i18n import N_
from his.console.web import Console, Shared, client_ip, form_of, locale_of, render, safe_next
from his.kernel.json import JsonObject
from his.kernel.security import TokenError

router = APIRouter(include_in_schema=False)

#: The problem codes identity answers a right password with, saying what comes next.
MFA_REQUIRED = "mfa_required"
MFA_ENROLMENT_REQUIRED = "mfa_enrolment_required"
PASSWORD_CHANGE_REQUIRED = "password_change_required"  # noqa: S105 - a problem code, not a secret
#: The detail of a 401 whose password was right and whose code was not.
INVALID_CODE = "invalid code"
#: The longest ``otpauth://`` URI a page carries back to show its QR code again.
LONGEST_URI = 1000

WRONG_PASSWORD = N_("The e-mail address or the password is not right.")
WRONG_CODE = N_("The code is not right. Type the code your app shows now, or an unused recovery code.")
TOO_MANY = N_("Too many attempts. Wait a minute, then try again.")
NOT_NOW = N_("Signing in is not possible right now. Try again shortly.")
ASK_CODE = N_(
    "Your account has a second factor: type your password again, with the code your authenticator app shows"
    " or one of your recovery codes."
)
MISMATCH = N_("The two new passwords are not the same.")
UNCONFIRMED = N_(
    "Confirm your address first: open the link e-mailed to you when you registered. No e-mail? Register again"
    " with the same address to get a new link."
)


def problem_code(answer: Answer) -> str:
    """The ``code`` member of an error answer's problem+json ("" without one)."""
    found = answer.body.get("code") if isinstance(answer.body, dict) else None
    return found if isinstance(found, str) else ""


def one_code(typed: str) -> str:
    """A code as typed, without the spaces people put in it ("123 456")."""
    return "".join(typed.split())


@dataclass(frozen=True)
class Enrolment:
    """An authenticator app's enrolment as a page shows it: the ``otpauth://`` URI and its secret."""

    uri: str
    secret: str

    @classmethod
    def of(cls, body: object) -> Enrolment | None:
        """The enrolment an API answered (``{secret, uri}``), or None if it is not one."""
        if not isinstance(body, dict):
            return None
        return cls.from_uri(str(body.get("uri", "")))

    @classmethod
    def from_uri(cls, uri: str) -> Enrolment | None:
        """The enrolment a page carried back (its URI), to show the same QR code again; None for
        anything but an ``otpauth://totp/`` URI with a secret."""
        if not uri.startswith("otpauth://totp/") or len(uri) > LONGEST_URI:
            return None
        secret = parse_qs(urlsplit(uri).query).get("secret", [""])[0]
        return cls(uri, secret) if secret.isalnum() else None

    @property
    def groups(self) -> str:
        """The secret in groups of four, for typing by hand."""
        return " ".join(self.secret[i : i + 4] for i in range(0, len(self.secret), 4))

    @property
    def qr(self) -> Markup:
        """The URI's QR code as inline SVG: part of the page, which the Content-Security-Policy
        allows, where an image would need a ``data:`` source. Hidden from screen readers: the page
        names it (a ``role="img"`` around it) and spells the secret out."""
        svg = segno.make(self.uri, error="m").svg_inline(scale=4, svgclass="his-qr", omitsize=False)
        # segno writes only its own markup (numbers and a path), no text of the URI.
        return Markup(svg.replace("<svg ", '<svg aria-hidden="true" focusable="false" ', 1))  # noqa: S704


@dataclass(frozen=True)
class Attempt:
    """What a step's form sent: the address, the password (typed again at each step), a code,
    where to go after, and the enrolment being confirmed (its URI), if any."""

    email: str
    password: str
    code: str
    target: str
    enrolment: Enrolment | None

    @classmethod
    def of(cls, form: dict[str, str], password_field: str = "password") -> Attempt:  # noqa: S107 - a field's name
        return cls(
            form.get("email", "").strip(),
            form.get(password_field, ""),
            one_code(form.get("code", "")),
            safe_next(form.get("next")),
            Enrolment.from_uri(form.get("uri", "")),
        )

    def body(self, **more: str) -> JsonObject:
        sent: JsonObject = {"email": self.email, "password": self.password, **more}
        return sent | {"code": self.code} if self.code else sent


Page = Literal["sign_in", "password", "enrol"]


@dataclass
class Steps:
    """The pages of signing in for one request."""

    request: Request
    shared: Console
    attempt: Attempt

    def sign_in(
        self, status: int, error: str | None = None, *, ask_code: bool = False, notice: str | None = None
    ) -> HTMLResponse:
        a = self.attempt
        return render(
            self.request,
            self.shared,
            "sign_in.html",
            None,
            status=status,
            next=a.target,
            notice=notice,
            email=a.email,
            error=error,
            ask_code=ask_code,
        )

    def new_password(
        self, status: int, error: str | None = None, *, ask_code: bool, errors: dict[str, str] | None = None
    ) -> HTMLResponse:
        a = self.attempt
        return render(
            self.request,
            self.shared,
            "sign_in_password.html",
            None,
            status=status,
            next=a.target,
            email=a.email,
            error=error,
            errors=errors or {},
            ask_code=ask_code,
        )

    def enrol(self, status: int, enrolment: Enrolment, error: str | None = None) -> HTMLResponse:
        a = self.attempt
        return render(
            self.request,
            self.shared,
            "enrol.html",
            None,
            status=status,
            action="/sign-in",
            at_sign_in=True,
            next=a.target,
            email=a.email,
            enrolment=enrolment,
            error=error,
        )

    async def call(self, path: str, body: JsonObject) -> Answer:
        return await self.shared.api.call("POST", path, client_ip=client_ip(self.request), body=body)

    async def begin_enrolment(self) -> Response:
        """The role needs a second factor the account has not got: begin enrolling one with the
        password, and show the app's QR code and secret."""
        a = self.attempt
        answer = await self.call("/api/auth/login/totp", {"email": a.email, "password": a.password})
        enrolment = Enrolment.of(answer.body) if answer.ok else None
        if enrolment is not None:
            return self.enrol(200, enrolment)
        if answer.status == 409:  # enrolled meanwhile (another browser): a code is what it needs
            return self.sign_in(401, notice=ASK_CODE, ask_code=True)
        return self.refused(answer, "sign_in")

    def refused(self, answer: Answer, page: Page) -> HTMLResponse:
        """A refusal every step answers alike, on the step's own page."""
        match answer.status:
            case 401:
                error = WRONG_CODE if answer.problem().detail == INVALID_CODE else WRONG_PASSWORD
                status = 401
            case 422 if self.attempt.code:  # a code no code can be (the form limits its length)
                error, status = WRONG_CODE, 401
            case 429:
                error, status = TOO_MANY, 429
            case _:
                error, status = NOT_NOW, 503
        if page == "enrol" and self.attempt.enrolment is not None:
            return self.enrol(status, self.attempt.enrolment, error)
        if page == "password":
            return self.new_password(status, error, ask_code=bool(self.attempt.code))
        return self.sign_in(status, error, ask_code=error == WRONG_CODE or bool(self.attempt.code))

    async def signed_in(self, answer: Answer) -> Response:
        """Open the session identity's tokens stand for; the recovery codes first if this sign-in
        confirmed an enrolment (shown this once)."""
        tokens = tokens_of(answer.body)
        try:
            principal = await self.shared.verifier.verify(tokens.access)
        except TokenError:
            return self.sign_in(503, NOT_NOW)
        cookie, live = await self.shared.book.open(
            uuid.UUID(principal.subject), tuple(sorted(principal.roles)), tokens, locale_of(self.request)
        )
        target = home_of(principal.roles) if self.attempt.target == "/" else self.attempt.target
        codes = recovery_codes(answer.body)
        response: Response
        if codes:
            response = render(self.request, self.shared, "recovery_codes.html", live, codes=codes, target=target)
        else:
            response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=int(LIFETIME.total_seconds()),
            path="/",
            secure=self.shared.settings.secure_cookie,
            httponly=True,
            samesite="strict",
        )
        return response


def recovery_codes(body: object) -> list[str]:
    """The recovery codes an answer holds (none when it holds none)."""
    found = body.get("recovery_codes") if isinstance(body, dict) else None
    return [c for c in found if isinstance(c, str)] if isinstance(found, list) else []


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(
    request: Request,
    shared: Shared,
    *,
    next: str = "/",
    ended: bool = False,
    reset: bool = False,
    confirmed: bool = False,
) -> Response:
    """The sign-in form (a signed-in browser goes on to where it was going)."""
    if await shared.book.find(request.cookies.get(COOKIE)) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    notice = None
    if ended:
        notice = N_("Your session has ended. Sign in again to go on.")
    elif reset:
        notice = N_("Your password was changed. Sign in with the new one.")
    elif confirmed:
        notice = N_("Your address is confirmed. Sign in with it.")
    steps = Steps(request, shared, Attempt("", "", "", safe_next(next), None))
    return steps.sign_in(200, notice=notice)


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request, shared: Shared) -> Response:
    """Sign in through the API (with a code, when one was typed); what identity answers a right
    password with decides the next step."""
    steps = Steps(request, shared, Attempt.of(await form_of(request)))
    a = steps.attempt
    page: Page = "enrol" if a.enrolment is not None else "sign_in"
    if not a.email or not a.password:
        if a.enrolment is not None:
            return steps.enrol(422, a.enrolment, N_("Type your password and the code your app shows."))
        return steps.sign_in(422, N_("Enter your e-mail address and your password."), ask_code=bool(a.code))
    answer = await steps.call("/api/auth/login", a.body())
    if answer.ok:
        return await steps.signed_in(answer)
    match answer.status, problem_code(answer):
        case 401, "mfa_required":
            return steps.sign_in(401, notice=ASK_CODE, ask_code=True)
        case 403, "mfa_enrolment_required":
            if a.enrolment is not None and not a.code:
                return steps.enrol(422, a.enrolment, N_("Type the code your app shows."))
            return await steps.begin_enrolment()
        case 403, "password_change_required":
            return steps.new_password(200, ask_code=bool(a.code))
        case 403, "email_unverified":
            return steps.sign_in(403, UNCONFIRMED)
    return steps.refused(answer, page)


@router.post("/sign-in/password", response_class=HTMLResponse)
async def sign_in_changing_password(request: Request, shared: Shared) -> Response:
    """Sign in choosing a new password (identity requires one): the current one, the new one
    twice (told apart here), and the code when the account has a second factor."""
    form = await form_of(request)
    steps = Steps(request, shared, Attempt.of(form, "current_password"))
    a, new = steps.attempt, form.get("new_password", "")
    if not a.email or not a.password or not new:
        return steps.new_password(422, N_("Fill in every field."), ask_code=bool(a.code))
    if new != form.get("new_password_again", ""):
        return steps.new_password(422, errors={"new_password_again": MISMATCH}, ask_code=bool(a.code))
    body: JsonObject = {"email": a.email, "current_password": a.password, "new_password": new}
    answer = await steps.call("/api/auth/login/password", body | ({"code": a.code} if a.code else {}))
    if answer.ok:
        return await steps.signed_in(answer)
    match answer.status, problem_code(answer):
        case 401, "mfa_required":
            return steps.new_password(401, ASK_CODE, ask_code=True)
        case 403, "mfa_enrolment_required":
            return await steps.begin_enrolment()
        case 422, _:
            reason = answer.problem().detail or N_("This password cannot be used. Choose another.")
            return steps.new_password(422, errors={"new_password": reason}, ask_code=bool(a.code))
    return steps.refused(answer, "password")
