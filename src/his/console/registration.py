"""A patient's own account (``/register``), and the page the confirmation link opens
(``/verify-email``). Both work without a session.

The page says the same after every registration: a link was sent, or a message if the address
has an account already. Only the mailbox learns which. The confirmation link's token is in the
page's URL, as a reset link's is: the page is never cached and its forms post the token back in
their body; the referrer goes to the console's own origin only.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from his.console.account import LONGEST_TOKEN
from his.console.i18n import N_
from his.console.web import Shared, client_ip, form_of, render

router = APIRouter(include_in_schema=False)

NOT_NOW = N_("This cannot be done right now. Try again shortly.")
MISMATCH = N_("The two passwords are not the same.")


def register_page(request: Request, shared: Shared, status: int = 200, **values: object) -> HTMLResponse:
    shown: dict[str, object] = {"sent": False, "error": None, "errors": {}, "email": "", "full_name": ""}
    return render(request, shared, "register.html", None, status=status, **(shown | values))


@router.get("/register", response_class=HTMLResponse)
async def registration_form(request: Request, shared: Shared) -> Response:
    """The form of a patient's own account: name, e-mail address, password twice."""
    return register_page(request, shared)


@router.post("/register", response_class=HTMLResponse)
async def register(request: Request, shared: Shared) -> Response:
    """Register through the API; the page then says to open the e-mailed link, whoever had the
    address."""
    form = await form_of(request)
    name, email = " ".join(form.get("full_name", "").split()), form.get("email", "").strip()
    password = form.get("password", "")
    errors: dict[str, str] = {}
    if not name:
        errors["full_name"] = N_("Enter your full name.")
    if not email:
        errors["email"] = N_("Enter your e-mail address.")
    if not password:
        errors["password"] = N_("Choose a password.")
    elif password != form.get("password_again", ""):
        errors["password_again"] = MISMATCH
    if errors:
        return register_page(request, shared, 422, errors=errors, email=email, full_name=name)
    answer = await shared.api.call(
        "POST",
        "/api/auth/register",
        client_ip=client_ip(request),
        body={"email": email, "password": password, "full_name": name},
    )
    if answer.ok:
        return register_page(request, shared, sent=True)
    kept = {"email": email, "full_name": name}
    match answer.status:
        case 422:
            detail = answer.problem().detail or ""
            if detail.startswith("email"):
                errors["email"] = N_("Enter a valid e-mail address.")
            elif detail.startswith("full_name"):
                errors["full_name"] = N_("Enter your full name.")
            else:
                errors["password"] = detail or N_("This password cannot be used. Choose another.")
            return register_page(request, shared, 422, errors=errors, **kept)
        case 429:
            error = N_("Too many accounts were registered from here. Wait a while, then try again.")
            return register_page(request, shared, 429, error=error, **kept)
    return register_page(request, shared, 503, error=NOT_NOW, **kept)


def confirm_page(request: Request, shared: Shared, status: int = 200, **values: object) -> HTMLResponse:
    shown: dict[str, object] = {"token": "", "dead": False, "error": None, "errors": {}}
    return render(request, shared, "verify_email.html", None, status=status, **(shown | values))


@router.get("/verify-email", response_class=HTMLResponse)
async def confirmation_form(request: Request, shared: Shared, token: str = "") -> Response:
    """The page the e-mailed link opens: the password chosen at registration confirms it."""
    if not token or len(token) > LONGEST_TOKEN:
        return confirm_page(request, shared, 400, dead=True)
    return confirm_page(request, shared, token=token)


@router.post("/verify-email", response_class=HTMLResponse)
async def confirm(request: Request, shared: Shared) -> Response:
    """Confirm the address with the link's token and the password; then sign in."""
    form = await form_of(request)
    token, password = form.get("token", ""), form.get("password", "")
    if not token or len(token) > LONGEST_TOKEN:
        return confirm_page(request, shared, 400, dead=True)
    if not password:
        return confirm_page(request, shared, 422, token=token, errors={"password": N_("Enter your password.")})
    answer = await shared.api.call(
        "POST", "/api/auth/verify-email", client_ip=client_ip(request), body={"token": token, "password": password}
    )
    if answer.ok:
        return RedirectResponse("/sign-in?confirmed=1", status_code=303)
    match answer.status:
        case 400:
            error = N_(
                "This link does not work with this password. The password is the one you chose when you registered;"
                " a link works once, for 24 hours, and registering again sends a new one."
            )
            return confirm_page(request, shared, 400, token=token, errors={"password": error})
        case 429:
            error = N_("Too many attempts were made from here. Wait a while, then try again.")
            return confirm_page(request, shared, 429, token=token, error=error)
    return confirm_page(request, shared, 503, token=token, error=NOT_NOW)
