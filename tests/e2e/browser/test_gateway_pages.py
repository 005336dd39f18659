"""The gateway's two pages for people, in a real browser: the services' health at `/` and the API
explorer at `/docs` (Swagger UI, vendored).

`/` must pass the accessibility check. The explorer is only looked at: its markup is Swagger UI's,
which this project does not own, so its violations are not this suite's to fail on.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.async_api import ConsoleMessage, Page, expect

from tests.e2e.harness import Hospital
from tests.support.browser import Screenshots, check_accessibility


def console_errors(page: Page) -> list[str]:
    """The errors the page's scripts and the browser report from now on (a refused script or
    style, under the Content-Security-Policy, is one), but for the gateway's missing favicon: the
    browser asks for /favicon.ico, which the gateway does not serve."""
    errors: list[str] = []

    def seen(message: ConsoleMessage) -> None:
        where = message.location["url"]
        if message.type == "error" and urlsplit(where).path != "/favicon.ico":
            errors.append(f"{message.text} ({where})")

    page.on("console", seen)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


async def test_the_health_page_and_the_api_explorer(
    shared_hospital: Hospital, page: Page, screenshots: Screenshots
) -> None:
    errors = console_errors(page)

    await page.goto(f"{shared_hospital.gateway}/")
    await expect(page).to_have_title("his")
    await expect(page.get_by_role("heading", name="Services")).to_be_visible()
    rows = page.get_by_role("row")
    names = [await row.get_by_role("cell").first.inner_text() for row in await rows.all()]
    assert {"identity", "patients", "scheduling", "billing"} <= set(names), names
    for row in await rows.all():
        await expect(row.get_by_role("cell").nth(1)).to_have_text("ready")
    await screenshots.take(page, "services-health")
    await check_accessibility(page)

    await page.goto(f"{shared_hospital.gateway}/docs")
    # Swagger UI has read /openapi.json and drawn the operations, under the page's CSP.
    await expect(page.locator(".info .title")).to_contain_text("his — Hospital Information System")
    await expect(page.locator(".opblock").first).to_be_visible()
    await screenshots.take(page, "api-explorer")

    assert errors == [], errors
