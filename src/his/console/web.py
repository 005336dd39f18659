"""The console's web layer: who a request is (its session), the checks a browser's request must
pass (origin, CSRF), the API calls made for it, and the page it gets back.

The pages themselves are in ``his.console.pages``; this module is what every page shares.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Annotated
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment

from his.console.areas import ROLE_NAMES, SEX_NAMES, STATUS_NAMES, areas_for
from his.console.domain import COOKIE, Answer, Locale, Method, Params, tokens_of
from his.console.i18n import negotiate
from his.console.live import Feed
from his.console.ports import PublicApi
from his.console.sessions import Live, SessionBook
from his.console.settings import ConsoleSettings
from his.kernel.json import JsonObject
from his.kernel.security import TokenVerifier

log = logging.getLogger("his.console")

#: The cookie that keeps the language a signed-out browser chose (not a secret).
LANGUAGE_COOKIE = "his_lang"
#: The header in which the gateway names the browser, and in which the console names it to the API.
CLIENT_HEADER = "x-his-client-ip"
#: Scripts, styles, fonts and images from the console's own origin only; no inline script or
#: style; no frame may hold a page; forms post only here.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}
SAFE_METHODS = frozenset({"GET", "HEAD"})


@dataclass
class Console:
    """What every page of the console is given (``app.state.console``)."""

    settings: ConsoleSettings
    book: SessionBook
    api: PublicApi
    verifier: TokenVerifier
    templates: Mapping[Locale, Environment]
    #: The hospital's time zone: what "today" is on a day list.
    zone: tzinfo = UTC
    #: What the console hears of the bus, for the pages that follow it live.
    feed: Feed | None = None
    #: Each clinician's practitioner profile, by account, as last found in the directory (so that
    #: "my day" asks the directory and the day at once); checked again on every page.
    profiles: dict[str, str] = field(default_factory=dict)


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


Shared = Annotated[Console, Depends(console)]


def client_ip(request: Request) -> str:
    """The browser's address: as the gateway names it, else the peer's."""
    named = request.headers.get(CLIENT_HEADER)
    if named:
        return named.strip()
    return request.client.host if request.client else "127.0.0.1"


def locale_of(request: Request, live: Live | None = None) -> Locale:
    """The language of the page: the session's, else the one the browser chose, else its preference."""
    if live is not None:
        return live.session.locale
    chosen = request.cookies.get(LANGUAGE_COOKIE, "")
    if chosen in Locale._value2member_map_:
        return Locale(chosen)
    return negotiate(request.headers.get("accept-language"))


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this console only (never another site's URL)."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def to_sign_in(request: Request, *, ended: bool = False) -> Response:
    """Send the browser to the sign-in page, and back here after it. An htmx request is told to
    navigate (``HX-Redirect``) rather than given the page to swap in."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = f"/sign-in?next={quote(safe_next(here), safe='')}" + ("&ended=1" if ended else "")
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def form_lists(request: Request) -> dict[str, list[str]]:
    """A url-encoded form's fields, each with all its values (checkboxes of one name)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return parse_qs(body, keep_blank_values=True)


async def form_of(request: Request) -> dict[str, str]:
    """A url-encoded form's fields (the first value of each)."""
    return {k: v[0] for k, v in (await form_lists(request)).items()}


def origin_refusal(request: Request, settings: ConsoleSettings) -> str | None:
    """Why a state-changing request is refused as not coming from the console's own pages, or
    None. A browser names the page a request comes from (``Origin``, ``Sec-Fetch-Site``); another
    site's form or script cannot name the console's."""
    if request.method in SAFE_METHODS:
        return None
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} request"
    origin = request.headers.get("origin")
    if origin is None:
        return "a request that names no origin"
    if origin not in settings.origins():
        return f"a request from {origin}"
    return None


class Caller:
    """The API calls of one signed-in request, with the session's token; an expired access token
    is refreshed once, and the session renewed, before the call is repeated."""

    def __init__(self, shared: Console, live: Live, client: str) -> None:
        self.shared, self.live, self.client = shared, live, client
        #: One refresh at a time: a page's calls run at once, and a refresh token used twice
        #: would end the sign-in (identity takes reuse for theft and revokes the family).
        self._refreshing = asyncio.Lock()

    async def __call__(
        self,
        method: Method,
        path: str,
        *,
        body: JsonObject | None = None,
        params: Params = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        for attempt in (1, 2):
            used = self.live.tokens
            answer = await self.shared.api.call(
                method,
                path,
                client_ip=self.client,
                token=self.live.tokens.access,
                body=body,
                params=params,
                headers=headers,
            )
            if answer.status != 401 or attempt == 2:
                return answer
            async with self._refreshing:
                if self.live.tokens is not used:  # another call of the page refreshed meanwhile
                    continue
                if not await self.refresh():  # signed out elsewhere, or the sign-in ran its course
                    await self.shared.book.forget(self.live.session)
                    raise SignedOutError(ended=True)
        raise AssertionError("unreachable")

    async def refresh(self) -> bool:
        """Exchange the refresh token for new tokens and keep them; False if identity refused it
        (the sign-in was ended elsewhere, or has run its course)."""
        answer = await self.shared.api.call(
            "POST", "/api/auth/refresh", client_ip=self.client, body={"refresh_token": self.live.tokens.refresh}
        )
        if not answer.ok:
            return False
        try:
            tokens = tokens_of(answer.body)
        except (ValueError, KeyError):
            return False
        await self.shared.book.renew(self.live.session, tokens)
        self.live = Live(self.live.session, tokens)
        return True


class SignedOutError(Exception):
    """The request's session is over (or there is none): the browser is sent to sign in."""

    def __init__(self, *, ended: bool) -> None:
        super().__init__("signed out")
        self.ended = ended


@dataclass
class Visit:
    """A signed-in request: its session, its API caller, and how to render its pages."""

    request: Request
    shared: Console
    live: Live
    call: Caller

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.live.session.roles)

    def page(
        self, template: str, given: Mapping[str, object] | None = None, /, *, status: int = 200, **values: object
    ) -> HTMLResponse:
        """The page ``template`` shows with ``given`` and ``values``, in the user's language."""
        return render(self.request, self.shared, template, self.live, status=status, **(given or {}), **values)


async def visit(request: Request, shared: Shared) -> Visit:
    """The signed-in request (a dependency of every page behind the sign-in)."""
    cookie = request.cookies.get(COOKIE)
    # A page's live feed (server-sent events) reconnecting is not the user at work.
    live = await shared.book.find(cookie, touch="text/event-stream" not in request.headers.get("accept", ""))
    if live is None:
        raise SignedOutError(ended=cookie is not None)
    if request.method not in SAFE_METHODS:
        token = request.headers.get("x-csrf-token")
        if token is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            token = (await form_of(request)).get("csrf")
        if not live.session.accepts(token):
            raise CsrfError
    return Visit(request, shared, live, Caller(shared, live, client_ip(request)))


SignedIn = Annotated[Visit, Depends(visit)]


class CsrfError(Exception):
    """A state-changing request without its session's CSRF token."""


def render(
    request: Request, shared: Console, template: str, live: Live | None, *, status: int = 200, **values: object
) -> HTMLResponse:
    """A page in the request's language, with what every page shows (the session's roles and
    CSRF token, the path it is at)."""
    locale = locale_of(request, live)
    env = shared.templates[locale]
    body = env.get_template(template).render(
        request_path=request.url.path,
        signed_in=live is not None,
        roles=frozenset(live.session.roles) if live else frozenset(),
        areas_menu=areas_for(frozenset(live.session.roles)) if live else [],
        sex_names=SEX_NAMES,
        role_names=ROLE_NAMES,
        status_names=STATUS_NAMES,
        csrf=live.session.csrf if live else "",
        signed_in_user=str(live.session.user_id) if live else "",
        **values,
    )
    return HTMLResponse(body, status_code=status, headers={"content-language": locale.value})


def problem_page(request: Request, shared: Console, status: int, message: str) -> HTMLResponse:
    return render(request, shared, "problem.html", None, status=status, status_code=status, message=message)
