"""The console's pages: signing out, the language, and each role's home (signing in is
``his.console.signing_in``)."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from his.console.areas import areas_for
from his.console.domain import COOKIE, ApiUnavailableError, Locale
from his.console.i18n import N_
from his.console.web import (
    LANGUAGE_COOKIE,
    Shared,
    SignedIn,
    form_of,
    render,
    safe_next,
)

router = APIRouter(include_in_schema=False)

#: A year, in seconds: how long a browser keeps the language it chose.
YEAR = 365 * 24 * 3600


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
