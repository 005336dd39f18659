"""The browser tests: one headless Chromium for the session, a fresh context and page per test,
and each test's screenshots under test-artifacts/screenshots/<test>/ (tests/support/browser.py).

They use the shared hospital of tests/e2e/conftest.py, at its gateway's URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator

import pytest
from playwright.async_api import Browser, Page

from tests.support.browser import Screenshots, chromium

#: Whether a test's call failed, for its page to take a last screenshot before it closes.
FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Screenshots:
    return Screenshots(request.node.name)


@pytest.fixture
async def page(browser: Browser, screenshots: Screenshots, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A page in a context of its own (no cookie or storage left by another test), in English."""
    context = await browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    yield page
    if request.node.stash.get(FAILED, False):
        await screenshots.take(page, "failed")
    await context.close()
