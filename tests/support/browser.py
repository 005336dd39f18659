"""A real browser for the tests: Debian's Chromium driven by Playwright's async API, axe-core's
accessibility check, and a screenshot of every step.

Playwright downloads no browser: it starts ``/usr/bin/chromium`` (``make test`` installs it when
it is missing). Its async API shares pytest-asyncio's session loop; the sync API cannot share a
process with it. Playwright gives each launch a temporary profile (user-data dir), but Chromium
would still write ``~/.config/chromium/Crash Reports`` and ``~/.cache/dconf``: its home is a
temporary directory too, removed with the browser.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

# axe-playwright-python ships no type information; its Axe injects the axe-core it bundles.
from axe_playwright_python.async_playwright import Axe  # type: ignore[import-untyped]
from playwright.async_api import Browser, Page, async_playwright

from his.kernel.json import Json, field, json_object, list_of, object_of, optional, text

CHROMIUM = Path("/usr/bin/chromium")
#: Where the screenshots go: test-artifacts/screenshots/<test>/<NN>-<step>.png (git ignores it).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
#: The impacts that fail a page (axe-core's scale: minor, moderate, serious, critical).
FAILING_IMPACTS = frozenset({"serious", "critical"})


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless Chromium, with its own temporary home; closed (and the home removed) on exit."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: sudo apt-get install -y --no-install-recommends chromium"
    home = Path(tempfile.mkdtemp(prefix="his-test-chromium-"))
    env: dict[str, str | float | bool] = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env |= {"HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache")}
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                # Chromium's sandbox cannot run as root: --no-sandbox there (CI), the sandbox elsewhere.
                chromium_sandbox=os.geteuid() != 0,
                env=env,
            )
            try:
                yield browser
            finally:
                await browser.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _file_name(name: str) -> str:
    """``name`` with anything but letters, digits, dots and dashes made a dash (a test's parameters)."""
    return re.sub(r"[^\w.-]+", "-", name).strip("-")


class Screenshots:
    """The full-page screenshots of one test, numbered in the order its steps take them."""

    def __init__(self, test: str) -> None:
        self.folder = ARTIFACTS / "screenshots" / _file_name(test)
        shutil.rmtree(self.folder, ignore_errors=True)  # a previous run's steps would mislead
        self.taken: list[Path] = []

    async def take(self, page: Page, step: str) -> Path:
        """Save the whole page as ``<NN>-<step>.png`` and return its path."""
        path = self.folder / f"{len(self.taken) + 1:02d}-{_file_name(step)}.png"
        await page.screenshot(path=path, full_page=True)
        self.taken.append(path)
        return path


@dataclass(frozen=True)
class Violation:
    """One rule axe-core found broken on a page, and where."""

    rule: str
    impact: str | None
    help: str
    url: str
    targets: list[str]

    @classmethod
    def of(cls, doc: Json) -> Violation:
        v = object_of(doc)
        nodes = list_of(object_of, field(v, "nodes"))
        return cls(
            rule=text(field(v, "id")),
            impact=optional(text, field(v, "impact")),
            help=text(field(v, "help")),
            url=text(field(v, "helpUrl")),
            targets=[_selector(field(n, "target")) for n in nodes],
        )

    def __str__(self) -> str:
        where = "".join(f"\n    {t}" for t in self.targets)
        return f"{self.rule} ({self.impact}): {self.help} <{self.url}>{where}"


def _selector(target: Json) -> str:
    """A node's selector: text, or a list of them (one per frame or shadow root it lies in)."""
    if isinstance(target, list):
        return " >> ".join(map(_selector, target))
    return text(target)


async def axe_violations(page: Page) -> list[Violation]:
    """Every violation axe-core finds on the page as it is now, whatever its impact."""
    results = await Axe().run(page)
    return list_of(Violation.of, field(json_object(results.response), "violations"))


async def check_accessibility(page: Page) -> list[Violation]:
    """Fail, listing each of them, when the page has a serious or critical accessibility violation.

    Returns all the violations found, the minor and moderate ones included.
    """
    found = await axe_violations(page)
    failing = [v for v in found if v.impact in FAILING_IMPACTS]
    assert not failing, f"{page.url}: {len(failing)} serious or critical accessibility violations:\n" + "\n".join(
        f"  {v}" for v in failing
    )
    return found
