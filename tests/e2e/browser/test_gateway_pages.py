"""What the gateway serves people, in a real browser: `/` goes to the console (its sign-in page,
signed out), and `/docs` is the API explorer (Swagger UI, vendored).

The explorer is only looked at: its markup is Swagger UI's, which this project does not own, so
its violations are not this suite's to fail on (the console's pages are checked in their tests).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.async_api import ConsoleMessage, Page, expect

from tests.e2e.harness import Hospital
from tests.support.browser import Screenshots


def console_errors(page: Page) -> list[str]:
    """The errors the page's scripts and the browser report from now on (a refused script or
    style, under the Content-Security-Policy, is one), but for the explorer's missing favicon: the
    browser asks for /favicon.ico, which is no page."""
    errors: list[str] = []

    def seen(message: ConsoleMessage) -> None:
        where = message.location["url"]
        if message.type == "error" and urlsplit(where).path != "/favicon.ico":
            errors.append(f"{message.text} ({where})")

    page.on("console", seen)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


async def test_the_console_at_the_root_and_the_api_explorer(
    shared_hospital: Hospital, page: Page, screenshots: Screenshots
) -> None:
    errors = console_errors(page)

    await page.goto(f"{shared_hospital.gateway}/")
    assert urlsplit(page.url).path == "/sign-in"
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    await screenshots.take(page, "console-sign-in")

    await page.goto(f"{shared_hospital.gateway}/docs")
    # Swagger UI has read /openapi.json and drawn the operations, under the page's CSP.
    await expect(page.locator(".info .title")).to_contain_text("his — Hospital Information System")
    await expect(page.locator(".opblock").first).to_be_visible()
    await screenshots.take(page, "api-explorer")

    assert errors == [], errors
