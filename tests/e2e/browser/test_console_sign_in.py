"""Signing in to the console and out of it, in a real browser, as staff would: the pages pass the
accessibility check, the browser holds only an HttpOnly, SameSite=Strict session cookie, the
language follows the user, and forms another site sends, or sends without the session's CSRF
token, are refused.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
from playwright.async_api import BrowserContext, ConsoleMessage, Page, expect

from tests.e2e.harness import ADMIN, Hospital
from tests.support.browser import Screenshots, check_accessibility


def console_errors(page: Page) -> list[str]:
    """What the page's scripts and the browser report as errors from now on: a script, style, font
    or image the Content-Security-Policy refused is one. A page answered with an error status (a
    form sent back with its errors, 401 or 422) is not: the browser notes each, as it should."""
    errors: list[str] = []

    def seen(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource: the server responded"):
            errors.append(f"{message.text} ({message.location['url']})")

    page.on("console", seen)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


async def sign_in(page: Page, email: str, password: str) -> None:
    await page.get_by_label("E-mail address").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def session_cookie(context: BrowserContext) -> dict[str, object]:
    found = [c for c in await context.cookies() if c["name"] == "his_session"]
    assert len(found) == 1, found
    return dict(found[0])


async def test_a_user_signs_in_works_in_their_language_and_signs_out(
    shared_hospital: Hospital, page: Page, screenshots: Screenshots
) -> None:
    errors = console_errors(page)
    await page.goto(f"{shared_hospital.gateway}/")
    # Signed out: `/` is the sign-in page, which brings the browser back to `/` after it.
    assert urlsplit(page.url).path == "/sign-in" and "next=%2F" in page.url
    await expect(page).to_have_title("Sign in · his hospital")
    await screenshots.take(page, "sign-in")
    await check_accessibility(page)

    await sign_in(page, ADMIN[0], "not the password")
    alert = page.get_by_role("alert")
    await expect(alert).to_have_text("The e-mail address or the password is not right.")
    await expect(page.get_by_label("E-mail address")).to_have_value(ADMIN[0])  # kept; the password is not
    await expect(page.get_by_label("Password")).to_have_value("")
    await screenshots.take(page, "wrong-password")
    await check_accessibility(page)

    await sign_in(page, *ADMIN)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Welcome")
    await expect(page.locator(".usa-tag")).to_have_text("Administrator")
    assert urlsplit(page.url).path == "/"
    await screenshots.take(page, "home")
    await check_accessibility(page)

    # The browser holds one cookie that no script can read, sent to this site only; no token.
    cookie = await session_cookie(page.context)
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert "his_session" not in await page.evaluate("document.cookie")
    storage = await page.evaluate("JSON.stringify([localStorage, sessionStorage])")
    assert "eyJ" not in storage and str(cookie["value"]) not in storage, storage  # no JWT, no session

    await page.get_by_role("button", name="Türkçe").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Hoş geldiniz")
    await expect(page.locator("html")).to_have_attribute("lang", "tr")
    await expect(page.locator(".usa-tag")).to_have_text("Yönetici")
    await screenshots.take(page, "home-turkish")
    await check_accessibility(page)

    await page.get_by_role("button", name="Çıkış yap").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Giriş yap")  # the browser's choice stays
    await screenshots.take(page, "signed-out-turkish")
    # The old cookie opens nothing any more.
    with httpx.Client(base_url=shared_hospital.gateway, timeout=10, cookies={"his_session": str(cookie["value"])}) as c:
        r = c.get("/")
    assert r.status_code == 303 and r.headers["location"].startswith("/sign-in?next=%2F&ended=1")
    assert errors == [], errors


async def test_forms_from_another_site_or_without_the_csrf_token_are_refused(
    shared_hospital: Hospital, page: Page, screenshots: Screenshots
) -> None:
    gateway = shared_hospital.gateway
    await page.goto(f"{gateway}/sign-in")
    await sign_in(page, *ADMIN)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Welcome")
    cookie = str((await session_cookie(page.context))["value"])
    csrf = await page.locator("form[action='/sign-out'] input[name=csrf]").input_value()

    # The console's own page posts without the token: refused, and the session goes on.
    status = await page.evaluate("fetch('/sign-out', {method: 'POST'}).then(r => r.status)")
    assert status == 403

    # Another site's page posts a form to the console (the browser sends no cookie with it:
    # SameSite=Strict), and its script cannot read the answer; the console refuses it anyway.
    await page.route(
        "http://evil.example/**",
        lambda route: route.fulfill(
            content_type="text/html",
            body=f"""<!doctype html><html lang="en"><title>prize</title><body>
            <form id="f" method="post" action="{gateway}/sign-out"><input name="csrf" value="{csrf}"></form>
            <script>document.getElementById('f').submit()</script></body></html>""",
        ),
    )
    await page.goto("http://evil.example/prize")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Something went wrong")
    await expect(page.get_by_role("alert")).to_contain_text("not sent from the hospital's own pages")
    await screenshots.take(page, "cross-site-form-refused")
    await check_accessibility(page)

    # A stolen cookie and CSRF token, replayed from a script elsewhere: the origin gives it away.
    with httpx.Client(base_url=gateway, timeout=10, cookies={"his_session": cookie}) as c:
        for headers in (
            {"origin": "http://evil.example"},
            {"origin": gateway, "sec-fetch-site": "cross-site"},
            {},  # no origin at all
        ):
            r = c.post("/sign-out", data={"csrf": csrf}, headers=headers)
            assert r.status_code == 403, (headers, r.status_code)
        r = c.post("/sign-out", data={"csrf": "x" * 43}, headers={"origin": gateway})
        assert r.status_code == 403  # the right origin, a wrong token
    # After all of that the session is still the user's.
    await page.goto(f"{gateway}/")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Welcome")


async def test_a_session_ended_elsewhere_sends_the_browser_to_sign_in_and_back(
    shared_hospital: Hospital, page: Page, screenshots: Screenshots
) -> None:
    """The session is ended from somewhere else (another browser holding the same cookie signs
    out); the next page the user opens tells them, and signing in brings them back there."""
    gateway = shared_hospital.gateway
    await page.goto(f"{gateway}/sign-in")
    await sign_in(page, *ADMIN)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Welcome")
    cookie = str((await session_cookie(page.context))["value"])
    csrf = await page.locator("form[action='/sign-out'] input[name=csrf]").input_value()
    with httpx.Client(base_url=gateway, timeout=10, cookies={"his_session": cookie}) as c:
        r = c.post("/sign-out", data={"csrf": csrf}, headers={"origin": gateway})
    assert r.status_code == 303 and r.headers["location"] == "/sign-in", r.text

    await page.goto(f"{gateway}/?from=elsewhere")
    assert urlsplit(page.url).path == "/sign-in"
    await expect(page.get_by_role("status")).to_have_text("Your session has ended. Sign in again to go on.")
    await screenshots.take(page, "session-ended")
    await check_accessibility(page)
    await sign_in(page, *ADMIN)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Welcome")
    assert urlsplit(page.url).query == "from=elsewhere"
