"""The console's pages: signing in and out, the language, and each role's home."""

from __future__ import annotations

import contextlib
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from his.console.areas import areas_for, home_of
from his.console.domain import COOKIE, LIFETIME, ApiUnavailableError, Locale, tokens_of
from his.console.i18n import N_
from his.console.web import (
    LANGUAGE_COOKIE,
    Shared,
    SignedIn,
    client_ip,
    form_of,
    locale_of,
    render,
    safe_next,
)
from his.kernel.security import TokenError

router = APIRouter(include_in_schema=False)

#: A year, in seconds: how long a browser keeps the language it chose.
YEAR = 365 * 24 * 3600


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request, shared: Shared, next: str = "/", ended: bool = False) -> Response:
    """The sign-in form (a signed-in browser goes on to where it was going)."""
    if await shared.book.find(request.cookies.get(COOKIE)) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    notice = N_("Your session has ended. Sign in again to go on.") if ended else None
    return render(request, shared, "sign_in.html", None, next=safe_next(next), notice=notice, email="", error=None)


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request, shared: Shared) -> Response:
    """Sign in through the API; the tokens stay here, the browser gets the session cookie."""
    form = await form_of(request)
    email, password, target = form.get("email", "").strip(), form.get("password", ""), safe_next(form.get("next"))

    def again(status: int, error: str) -> Response:
        return render(
            request, shared, "sign_in.html", None, status=status, next=target, notice=None, email=email, error=error
        )

    if not email or not password:
        return again(422, N_("Enter your e-mail address and your password."))
    answer = await shared.api.call(
        "POST", "/api/auth/login", client_ip=client_ip(request), body={"email": email, "password": password}
    )
    if answer.status == 401:
        return again(401, N_("The e-mail address or the password is not right."))
    if answer.status == 429:
        return again(429, N_("Too many attempts. Wait a minute, then try again."))
    if not answer.ok:
        return again(503, N_("Signing in is not possible right now. Try again shortly."))
    tokens = tokens_of(answer.body)
    try:
        principal = await shared.verifier.verify(tokens.access)
    except TokenError:
        return again(503, N_("Signing in is not possible right now. Try again shortly."))
    cookie, _ = await shared.book.open(
        uuid.UUID(principal.subject), tuple(sorted(principal.roles)), tokens, locale_of(request)
    )
    if target == "/":  # no page asked for: the role's own
        target = home_of(principal.roles)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=int(LIFETIME.total_seconds()),
        path="/",
        secure=shared.settings.secure_cookie,
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/sign-out")
async def sign_out(visit: SignedIn) -> Response:
    """End the session here and its sign-in at identity (its tokens stop working everywhere)."""
    tokens = await visit.shared.book.end(visit.request.cookies.get(COOKIE))
    if tokens is not None:
        # The session is over here whatever happens; unreachable, its refresh token expires on its own.
        with contextlib.suppress(ApiUnavailableError):
            await visit.shared.api.call(
                "POST", "/api/auth/logout", client_ip=visit.call.client, body={"refresh_token": tokens.refresh}
            )
    response = RedirectResponse("/sign-in", status_code=303)
    response.delete_cookie(
        COOKIE, path="/", secure=visit.shared.settings.secure_cookie, httponly=True, samesite="strict"
    )
    return response


@router.post("/language")
async def language(request: Request, shared: Shared) -> Response:
    """Choose the console's language: for the session when signed in, and for this browser."""
    form = await form_of(request)
    chosen = form.get("locale", "")
    if chosen not in Locale._value2member_map_:
        return render(
            request, shared, "problem.html", None, status=422, status_code=422, message=N_("Unknown language.")
        )
    live = await shared.book.find(request.cookies.get(COOKIE))
    if live is not None:
        if not live.session.accepts(form.get("csrf")):
            return render(
                request,
                shared,
                "problem.html",
                live,
                status=403,
                status_code=403,
                message=N_("This form has expired. Go back, reload the page and try again."),
            )
        await shared.book.relocale(live.session, Locale(chosen))
    response = RedirectResponse(safe_next(form.get("next")), status_code=303)
    response.set_cookie(
        LANGUAGE_COOKIE, chosen, max_age=YEAR, path="/", samesite="strict", secure=shared.settings.secure_cookie
    )
    return response


@router.get("/", response_class=HTMLResponse)
async def home(visit: SignedIn) -> Response:
    """A user's home: who they are signed in as, and the areas their roles open."""
    return visit.page("home.html", areas=areas_for(visit.roles))
