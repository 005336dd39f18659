"""The console's pages: signing out, the language, and each role's home (signing in is
``his.console.signing_in``)."""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

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


def back_to(target: str, referer: str | None, origins: frozenset[str]) -> str:
    """The page to go back to after choosing a language: ``target``, with the query of the page
    the form was on when the browser names it (``Referer``, of the console's own origin and the
    same path), so that a page opened by an e-mailed link keeps its token without writing it
    into the page twice."""
    if not referer or "?" in target:
        return target
    parts = urlsplit(referer)
    if f"{parts.scheme}://{parts.netloc}" not in origins or parts.path != target or not parts.query:
        return target
    return f"{target}?{parts.query}"


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
    target = back_to(safe_next(form.get("next")), request.headers.get("referer"), shared.settings.origins())
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        LANGUAGE_COOKIE, chosen, max_age=YEAR, path="/", samesite="strict", secure=shared.settings.secure_cookie
    )
    return response


@router.get("/", response_class=HTMLResponse)
async def home(visit: SignedIn) -> Response:
    """A user's home: who they are signed in as, and the areas their roles open."""
    return visit.page("home.html", areas=areas_for(visit.roles))
