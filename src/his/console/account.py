"""One's own account (``/account``, for every signed-in user): change the password, set up a
second factor (an authenticator app, its recovery codes shown once); and a forgotten password
(``/password-reset``), which works without a session: ask for a link by e-mail, then choose a new
password on the page the link opens.

The reset link's token is in the page's URL: that page sends its address as ``Referer`` to the
console's own origin only (``Referrer-Policy: same-origin``, as every page), never to another
site, and is never cached (``Cache-Control: no-store``, as every page); the form posts the token
back in its body.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from his.console.i18n import N_
from his.console.signing_in import MISMATCH, Enrolment, one_code, recovery_codes
from his.console.web import Shared, SignedIn, Visit, client_ip, form_of, render

router = APIRouter(include_in_schema=False)

#: The longest reset token a page carries (the API refuses longer ones).
LONGEST_TOKEN = 200
ENROLLED = N_("Your account has a second factor already. If you lose your phone, an administrator can reset it.")
WRONG_CODE = N_("The code is not right. Type the code your app shows now.")


def account_page(
    visit: Visit,
    status: int = 200,
    *,
    notice: str | None = None,
    error: str | None = None,
    errors: dict[str, str] | None = None,
) -> HTMLResponse:
    return visit.page("account.html", status=status, notice=notice, error=error, errors=errors or {})


@router.get("/account", response_class=HTMLResponse)
async def account(visit: SignedIn, changed: bool = False) -> Response:
    """The account's page: the password and the second factor."""
    notice = N_("Your password was changed. Your other sessions were signed out.") if changed else None
    return account_page(visit, notice=notice)


@router.post("/account/password", response_class=HTMLResponse)
async def change_password(visit: SignedIn) -> Response:
    """Change one's password: the current one, the new one twice (told apart here)."""
    form = await form_of(visit.request)
    current, new = form.get("current_password", ""), form.get("new_password", "")
    if not current or not new:
        return account_page(visit, 422, error=N_("Fill in every field."))
    if new != form.get("new_password_again", ""):
        return account_page(visit, 422, errors={"new_password_again": MISMATCH})
    answer = await visit.call("POST", "/api/auth/password", body={"current_password": current, "new_password": new})
    if answer.ok:
        return RedirectResponse("/account?changed=1", status_code=303)
    match answer.status:
        case 403:
            return account_page(visit, 403, errors={"current_password": N_("The current password is not right.")})
        case 422:
            reason = answer.problem().detail or N_("This password cannot be used. Choose another.")
            return account_page(visit, 422, errors={"new_password": reason})
        case 429:
            return account_page(visit, 429, error=N_("Too many wrong passwords. Wait a while, then try again."))
    return account_page(visit, 503, error=N_("This cannot be done right now. Try again shortly."))


def enrol_page(visit: Visit, enrolment: Enrolment, status: int = 200, error: str | None = None) -> HTMLResponse:
    return visit.page(
        "enrol.html",
        status=status,
        action="/account/second-factor/confirm",
        at_sign_in=False,
        enrolment=enrolment,
        error=error,
    )


@router.post("/account/second-factor", response_class=HTMLResponse)
async def begin_second_factor(visit: SignedIn) -> Response:
    """Begin setting up an authenticator app: its QR code and secret, and a field for its first
    code. Already set up (409): said so, and who resets a lost phone."""
    answer = await visit.call("POST", "/api/auth/mfa/totp")
    enrolment = Enrolment.of(answer.body) if answer.ok else None
    if enrolment is not None:
        return enrol_page(visit, enrolment)
    if answer.status == 409:
        return account_page(visit, 409, error=ENROLLED)
    return account_page(visit, 503, error=N_("This cannot be done right now. Try again shortly."))


@router.post("/account/second-factor/confirm", response_class=HTMLResponse)
async def confirm_second_factor(visit: SignedIn) -> Response:
    """Confirm the app with its first code; its recovery codes are shown this once."""
    form = await form_of(visit.request)
    code, enrolment = one_code(form.get("code", "")), Enrolment.from_uri(form.get("uri", ""))
    if enrolment is None:
        return account_page(visit, 422, error=N_("Set up the app again: this form lacked its code."))
    if not code:
        return enrol_page(visit, enrolment, 422, N_("Type the code your app shows."))
    answer = await visit.call("POST", "/api/auth/mfa/totp/verify", body={"code": code})
    codes = recovery_codes(answer.body) if answer.ok else []
    if codes:
        return visit.page("recovery_codes.html", codes=codes, target="/account")
    match answer.status:
        case 403 | 422:
            return enrol_page(visit, enrolment, 403, WRONG_CODE)
        case 409 if "begun" in answer.problem().detail:
            return account_page(visit, 409, error=N_("Nothing was being set up. Start again."))
        case 409:
            return account_page(visit, 409, error=ENROLLED)
        case 429:
            return enrol_page(visit, enrolment, 429, N_("Too many wrong codes. Wait a while, then try again."))
    return enrol_page(visit, enrolment, 503, N_("This cannot be done right now. Try again shortly."))


def reset_page(request: Request, shared: Shared, status: int = 200, **values: object) -> HTMLResponse:
    """A page of the forgotten password's (never with a session's header: it needs none)."""
    shown: dict[str, object] = {"sent": False, "token": "", "dead": False, "error": None, "errors": {}, "email": ""}
    return render(request, shared, "password_reset.html", None, status=status, **(shown | values))


@router.get("/password-reset", response_class=HTMLResponse)
async def password_reset(request: Request, shared: Shared, token: str = "") -> Response:
    """Without a token: the form that asks for a link. With one (the e-mailed link): the form for
    the new password, which posts the token back."""
    if len(token) > LONGEST_TOKEN:
        return reset_page(request, shared, 400, dead=True)
    return reset_page(request, shared, token=token)


@router.post("/password-reset", response_class=HTMLResponse)
async def ask_for_reset(request: Request, shared: Shared) -> Response:
    """Ask for a reset link. The answer is the same whether the address has an account or not."""
    email = (await form_of(request)).get("email", "").strip()
    if not email:
        return reset_page(request, shared, 422, error=N_("Enter your e-mail address."))
    answer = await shared.api.call(
        "POST", "/api/auth/password-reset", client_ip=client_ip(request), body={"email": email}
    )
    if answer.ok:
        return reset_page(request, shared, sent=True)
    match answer.status:
        case 422:
            return reset_page(request, shared, 422, email=email, error=N_("Enter a valid e-mail address."))
        case 429:
            error = N_("Too many links were asked for from here. Wait a while, then try again.")
            return reset_page(request, shared, 429, email=email, error=error)
    return reset_page(request, shared, 503, email=email, error=N_("This cannot be done right now. Try again shortly."))


@router.post("/password-reset/new", response_class=HTMLResponse)
async def reset_password(request: Request, shared: Shared) -> Response:
    """Set the new password with the link's token; then sign in with it."""
    form = await form_of(request)
    token, new = form.get("token", ""), form.get("new_password", "")
    if not token or len(token) > LONGEST_TOKEN:
        return reset_page(request, shared, 400, dead=True)
    if not new:
        return reset_page(request, shared, 422, token=token, errors={"new_password": N_("Choose a new password.")})
    if new != form.get("new_password_again", ""):
        return reset_page(request, shared, 422, token=token, errors={"new_password_again": MISMATCH})
    answer = await shared.api.call(
        "POST",
        "/api/auth/password-reset/confirm",
        client_ip=client_ip(request),
        body={"token": token, "new_password": new},
    )
    if answer.ok:
        return RedirectResponse("/sign-in?reset=1", status_code=303)
    match answer.status:
        case 400:
            return reset_page(request, shared, 400, dead=True)
        case 422:
            reason = answer.problem().detail or N_("This password cannot be used. Choose another.")
            return reset_page(request, shared, 422, token=token, errors={"new_password": reason})
    error = N_("This cannot be done right now. Try again shortly.")
    return reset_page(request, shared, 503, token=token, error=error)
