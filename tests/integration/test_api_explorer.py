"""`/docs` is Swagger UI served by the gateway itself: the page and every file it loads come from
the gateway, under a Content-Security-Policy that allows nothing else and no inline script."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import httpx
import pytest

from his.gateway.app import create_app
from his.gateway.settings import GatewaySettings

VENDORED = Path(str(resources.files("his.gateway"))) / "static" / "swagger-ui"


class Page(HTMLParser):
    """The URLs a page loads (scripts, styles, images, frames) and its inline scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for attr in ("src", "href", "srcset", "data", "poster", "action"):
            if a.get(attr):
                self.loads.append(str(a[attr]))
        if "style" in a or tag == "style" or any(k.startswith("on") for k in a):
            self.inline.append(f"<{tag}> with inline style or handler")
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"inline script: {data.strip()[:60]}")


@pytest.fixture
async def gateway() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app({}, GatewaySettings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:4004") as client:
        yield client


def csp(response: httpx.Response) -> dict[str, set[str]]:
    header = response.headers["content-security-policy"]
    return {part.split()[0]: set(part.split()[1:]) for part in header.split(";") if part.strip()}


async def test_the_explorer_loads_only_from_the_gateway(gateway: httpx.AsyncClient) -> None:
    page = await gateway.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = csp(page)
    assert policy["default-src"] == {"'none'"}
    for directive in ("script-src", "style-src", "connect-src"):
        assert policy[directive] == {"'self'"}, directive
    parsed = Page()
    parsed.feed(page.text)
    assert parsed.inline == []
    assert len(parsed.loads) >= 3  # the stylesheet, Swagger UI and its initializer
    for url in parsed.loads:
        assert re.match(r"^/[^/\\]", url), f"{url} is not a path on the gateway"
        asset = await gateway.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["x-content-type-options"] == "nosniff" and csp(asset) == policy
        if url.endswith(".js"):
            assert asset.headers["content-type"].startswith("text/javascript")
            assert "sourceMappingURL=http" not in asset.text
        if url.endswith(".css"):
            assert asset.headers["content-type"].startswith("text/css")
            # Everything the stylesheet itself loads is inline data, nothing from elsewhere.
            assert set(re.findall(r"url\(\s*[\"']?([a-z]+):", asset.text)) <= {"data"}
            assert "@import" not in asset.text
    initializer = (await gateway.get("/docs/assets/docs.js")).text
    assert '"/openapi.json"' in initializer and "validatorUrl: null" in initializer
    assert not re.search(r"https?://", initializer)


async def test_only_the_listed_files_are_served(gateway: httpx.AsyncClient) -> None:
    for name in ("VENDORED.md", "..%2Fexplorer.py", "swagger-ui.css.map", "index.html"):
        r = await gateway.get(f"/docs/assets/{name}")
        assert r.status_code == 404, name
        assert r.headers["content-type"] == "application/problem+json"


async def test_the_vendored_files_are_the_published_ones(gateway: httpx.AsyncClient) -> None:
    """VENDORED.md names each file's size and digest: the files served are those, unchanged."""
    table = re.findall(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|$", (VENDORED / "VENDORED.md").read_text(), re.M)
    assert {name for name, _, _ in table} == {p.name for p in VENDORED.iterdir() if p.name != "VENDORED.md"}
    for name, size, digest in table:
        data = (VENDORED / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (int(size), digest), name
        served = await gateway.get(f"/docs/assets/{name}")
        assert served.content == data, name
