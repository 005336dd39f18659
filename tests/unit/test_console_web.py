"""The console's web layer in memory (its app over the in-memory sessions and API, no socket):
signing in keeps the tokens on the server and gives the browser one HttpOnly, SameSite=Strict
cookie; a state-changing request needs the console's origin and the session's CSRF token; an
expired access token is refreshed once, and a refused refresh ends the session; the language
follows the user; a redirect never leaves the console.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from his.console.domain import Answer, ApiUnavailableError, Locale
from his.console.i18n import negotiate
from his.console.settings import ConsoleSettings
from his.console.web import Caller, SignedOutError, safe_next
from his.testing.console import Call
from tests.support.console import PASSWORD, PUBLIC, SAME_ORIGIN, USER, Desk, console_desk, tokens


@pytest.fixture
async def desk() -> AsyncIterator[Desk]:
    """The console at local midnight of new year's day (its sessions' clock)."""
    async with console_desk() as found:
        yield found


async def test_a_signed_out_browser_is_sent_to_sign_in_and_back(desk: Desk) -> None:
    r = await desk.client.get("/?day=2027-01-01")
    assert r.status_code == 303 and r.headers["location"] == "/sign-in?next=%2F%3Fday%3D2027-01-01"
    page = await desk.client.get(r.headers["location"])
    assert page.status_code == 200 and 'name="next" value="/?day=2027-01-01"' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


async def test_signing_in_keeps_the_tokens_here_and_gives_the_browser_one_strict_cookie(desk: Desk) -> None:
    r = await desk.sign_in(["DOCTOR", "NURSE"], **{"x-his-client-ip": "198.51.100.4"})
    assert r.status_code == 303 and r.headers["location"] == "/day-list"  # a clinician's home
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("his_session=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie  # the public URL is http here
    value = cookie.split(";")[0].split("=", 1)[1]
    assert len(value) == 43 and desk.client.cookies["his_session"] == value  # 256 random bits
    assert "refresh-1" not in r.text and "refresh-1" not in cookie
    (session, sealed), *_ = desk.fake.state.sessions.values()
    assert session.user_id == USER and session.roles == ("DOCTOR", "NURSE") and b"refresh-1" not in sealed
    # The API was asked for the browser the gateway named, not for the console.
    assert desk.api.calls[0] == Call(
        "POST", "/api/auth/login", "198.51.100.4", None, {"email": "desk@hospital.example", "password": PASSWORD}, None
    )
    home = await desk.client.get("/")
    assert home.status_code == 200 and "Doctor" in home.text and "Nurse" in home.text


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "The e-mail address or the password is not right."),
        (429, "Too many attempts. Wait a minute, then try again."),
        (503, "Signing in is not possible right now. Try again shortly."),
    ],
)
async def test_a_refused_sign_in_says_why_and_keeps_the_address(desk: Desk, status: int, message: str) -> None:
    desk.api.answer("POST", "/api/auth/login", Answer(status, {"title": "x", "status": status}))
    r = await desk.client.post(
        "/sign-in", data={"email": "desk@hospital.example", "password": "wrong"}, headers=SAME_ORIGIN
    )
    assert r.status_code == status and message in r.text and "set-cookie" not in r.headers
    assert 'value="desk@hospital.example"' in r.text and "wrong" not in r.text


async def test_the_api_out_of_reach_is_a_page_not_a_crash(desk: Desk) -> None:
    def down(_: Call) -> Answer:
        raise ApiUnavailableError("down")

    desk.api.answer("POST", "/api/auth/login", down)
    r = await desk.client.post("/sign-in", data={"email": "a@b.example", "password": "p"}, headers=SAME_ORIGIN)
    assert r.status_code == 503 and "cannot be reached right now" in r.text


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": PUBLIC, "sec-fetch-site": "cross-site"},
        {"origin": PUBLIC, "sec-fetch-site": "same-site"},
        {},
        {"origin": "null"},
    ],
    ids=["other-origin", "cross-site", "same-site", "no-origin", "null-origin"],
)
async def test_a_form_from_elsewhere_is_refused_sign_in_included(desk: Desk, headers: dict[str, str]) -> None:
    await desk.sign_in()
    csrf = await desk.csrf()
    sign_in = await desk.client.post("/sign-in", data={"email": "a@b.example", "password": "p"}, headers=headers)
    sign_out = await desk.client.post("/sign-out", data={"csrf": csrf}, headers=headers)
    assert sign_in.status_code == sign_out.status_code == 403
    assert "not sent from the hospital's own pages" in sign_out.text
    assert len(desk.fake.state.sessions) == 1 and [c.path for c in desk.api.calls] == ["/api/auth/login"]


async def test_signing_out_needs_the_sessions_csrf_token_and_revokes_the_sign_in(desk: Desk) -> None:
    await desk.sign_in()
    desk.api.answer("POST", "/api/auth/logout", Answer(204))
    for refused in ({}, {"csrf": "x" * 43}):
        r = await desk.client.post("/sign-out", data=refused, headers=SAME_ORIGIN)
        assert r.status_code == 403 and len(desk.fake.state.sessions) == 1
    r = await desk.client.post("/sign-out", headers={**SAME_ORIGIN, "x-csrf-token": await desk.csrf()})
    assert r.status_code == 303 and r.headers["location"] == "/sign-in"
    assert 'his_session=""' in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]
    assert desk.fake.state.sessions == {}
    assert desk.api.calls[-1].path == "/api/auth/logout" and desk.api.calls[-1].body == {"refresh_token": "refresh-1"}


async def test_an_idle_session_ends_after_thirty_minutes_and_says_so(desk: Desk) -> None:
    await desk.sign_in()
    desk.clock.advance(timedelta(minutes=29))
    assert (await desk.client.get("/")).status_code == 200
    desk.clock.advance(timedelta(minutes=30, seconds=1))
    r = await desk.client.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/sign-in?next=%2F&ended=1"
    assert "Your session has ended" in (await desk.client.get(r.headers["location"])).text
    htmx = await desk.client.get("/", headers={"hx-request": "true"})
    assert htmx.status_code == 204 and htmx.headers["hx-redirect"].startswith("/sign-in?next=%2F")


async def test_an_expired_access_token_is_refreshed_once_and_the_call_made_again(desk: Desk) -> None:
    await desk.sign_in()
    live = await desk.shared.book.find(desk.client.cookies["his_session"])
    assert live is not None
    answers = iter([Answer(401), Answer(200, {"items": []})])
    desk.api.answer("GET", "/api/patients", lambda _: next(answers))
    desk.api.answer("POST", "/api/auth/refresh", Answer(200, tokens(["RECEPTIONIST"], n=2)))
    call = Caller(desk.shared, live, "203.0.113.7")
    assert (await call("GET", "/api/patients", params={"q": "yılmaz"})).body == {"items": []}
    first, refresh, again = desk.api.calls[-3:]
    assert refresh.body == {"refresh_token": "refresh-1"} and again.token != first.token
    renewed = await desk.shared.book.find(desk.client.cookies["his_session"])
    assert renewed is not None and renewed.tokens.refresh == "refresh-2"


async def test_a_refused_refresh_ends_the_session(desk: Desk) -> None:
    await desk.sign_in()
    live = await desk.shared.book.find(desk.client.cookies["his_session"])
    assert live is not None
    desk.api.answer("GET", "/api/patients", Answer(401))
    desk.api.answer("POST", "/api/auth/refresh", Answer(401))
    with pytest.raises(SignedOutError):
        await Caller(desk.shared, live, "203.0.113.7")("GET", "/api/patients")
    assert desk.fake.state.sessions == {}


async def test_the_language_is_the_users_and_the_browsers(desk: Desk) -> None:
    page = await desk.client.get("/sign-in", headers={"accept-language": "tr-TR,tr;q=0.9,en;q=0.5"})
    assert '<html lang="tr">' in page.text and "Giriş yap" in page.text
    await desk.sign_in()
    csrf = await desk.csrf()
    r = await desk.client.post("/language", data={"locale": "tr", "csrf": csrf, "next": "/"}, headers=SAME_ORIGIN)
    assert r.status_code == 303 and "his_lang=tr" in r.headers["set-cookie"]
    (session, _), *_ = desk.fake.state.sessions.values()
    assert session.locale is Locale.TR
    home = await desk.client.get("/", headers={"accept-language": "en"})
    assert "Hoş geldiniz" in home.text and home.headers["content-language"] == "tr"
    r = await desk.client.post("/language", data={"locale": "de", "csrf": csrf}, headers=SAME_ORIGIN)
    assert r.status_code == 422


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("/", "/"),
        ("/patients?q=ay", "/patients?q=ay"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("evil", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_after_sign_in_the_browser_goes_only_to_a_page_of_the_console(target: str | None, kept: str) -> None:
    assert safe_next(target) == kept


@pytest.mark.parametrize(
    ("header", "locale"),
    [
        (None, Locale.EN),
        ("tr", Locale.TR),
        ("de-DE,tr;q=0.8", Locale.TR),
        ("en;q=0.2,tr;q=0.9", Locale.TR),
        ("x;q=y", Locale.EN),
    ],
)
def test_a_browsers_preferred_language(header: str | None, locale: Locale) -> None:
    assert negotiate(header) is locale


def test_the_origins_a_form_may_come_from() -> None:
    assert ConsoleSettings(public_url="http://127.0.0.1:4004/").origins() == {
        "http://127.0.0.1:4004",
        "http://localhost:4004",
    }
    assert ConsoleSettings(public_url="https://his.example.org").origins() == {"https://his.example.org"}
    assert ConsoleSettings(public_url="https://his.example.org").secure_cookie
    with pytest.raises(ValueError, match="http or https"):
        ConsoleSettings(public_url="his.example.org")


async def test_a_pages_calls_at_once_refresh_the_expired_token_once(desk: Desk) -> None:
    """Two calls of one page are refused together: one refresh, both made again with its token (a
    refresh token used twice would end the sign-in)."""
    await desk.sign_in()
    live = await desk.shared.book.find(desk.client.cookies["his_session"])
    assert live is not None
    old = live.tokens.access
    desk.api.answer(
        "GET", "/api/patients", lambda call: Answer(401) if call.token == old else Answer(200, {"items": []})
    )
    desk.api.answer("POST", "/api/auth/refresh", Answer(200, tokens(["RECEPTIONIST"], n=2)))
    call = Caller(desk.shared, live, "203.0.113.7")
    answers = await asyncio.gather(call("GET", "/api/patients"), call("GET", "/api/patients"))
    assert [a.status for a in answers] == [200, 200]
    assert len([c for c in desk.api.calls if c.path == "/api/auth/refresh"]) == 1
