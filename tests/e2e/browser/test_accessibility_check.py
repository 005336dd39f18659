"""The accessibility check itself: it fails on a page with serious or critical violations, naming
each rule and the elements at fault, and lets the minor and moderate ones through."""

from __future__ import annotations

import pytest
from playwright.async_api import Page

from tests.support.browser import check_accessibility

CLEAN = """<!doctype html><html lang="en"><head><title>A clean page</title></head>
<body><main><h1>Admissions</h1><p>Nothing to see.</p></main></body></html>"""


async def test_a_page_with_serious_violations_fails_listing_them(page: Page) -> None:
    # An image without a text alternative and a button without a name (critical); no <main> (moderate).
    await page.set_content(
        '<!doctype html><html lang="en"><head><title>A broken page</title></head>'
        '<body><h1>Ward 7</h1><img src="data:," id="bed-plan"><button id="discharge"></button></body></html>'
    )
    with pytest.raises(AssertionError) as failed:
        await check_accessibility(page)
    message = str(failed.value)
    assert "2 serious or critical accessibility violations" in message, message
    assert "image-alt (critical)" in message and "#bed-plan" in message, message
    assert "button-name (critical)" in message and "#discharge" in message, message
    assert "landmark-one-main" not in message, message


async def test_a_clean_page_passes(page: Page) -> None:
    await page.set_content(CLEAN)
    assert await check_accessibility(page) == []
