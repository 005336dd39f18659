"""`his bench console` in its smallest form, against the shared hospital: every path of the
benchmark runs (seeding a doctor's day and a practitioner's day through the API, signing in
through the console's form, the day list page and the same data as JSON, the page weights), and
every answer was the one expected. A smoke test, not a measurement: its figures are not checked.

And the console's compression as a browser meets it through the gateway: an asset comes back
gzipped (and the same bytes once unpacked), a font and a page do not.
"""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import httpx

from his.benchmarks.console import ConsoleConfig, measure
from tests.e2e.harness import ADMIN, Hospital

ASSETS = Path(__file__).parents[2] / "src" / "his" / "console" / "static"
CSS = "vendor/uswds-3.14.0/css/uswds.min.css"
FONT = "vendor/uswds-3.14.0/fonts/source-sans-pro/sourcesanspro-regular-webfont.woff2"


def test_the_console_benchmark_runs_every_path(shared_hospital: Hospital) -> None:
    cfg = ConsoleConfig.tiny()
    said: list[str] = []
    res = asyncio.run(measure(shared_hospital.gateway, ADMIN[0], ADMIN[1], cfg, said.append))
    assert res["errors"] == [], res["errors"]
    for key, rows in (("mine", cfg.mine), ("full", cfg.full)):
        pair = res["pairs"][key]
        assert pair["appointments_shown"] == rows
        for side in ("page", "json"):
            summary = pair[side]["latency"]
            assert summary["count"] == round(pair["rate_per_s"] * cfg.seconds) * cfg.rounds
            assert {"p50_ms", "p95_ms", "p99_ms"} <= set(summary)
            assert pair[side]["failed"] == 0
        assert pair["ratio_p95"] > 0
    assert all(set(counted) == {200} for counted in res["statuses"].values()), res["statuses"]
    first = res["weights"]["first page (sign-in)"]
    paths = {a["path"]: a for a in first["assets"]}
    assert paths[f"/console/assets/{CSS}"]["encoding"] == "gzip"
    assert any(p.endswith(".woff2") for p in paths)
    assert first["transferred_bytes"] < first["uncompressed_bytes"]


def test_assets_are_gzipped_through_the_gateway_and_pages_are_not(shared_hospital: Hospital) -> None:
    gw = shared_hospital.gateway
    with httpx.Client(base_url=gw, timeout=10) as client:
        asked = {"accept-encoding": "gzip, deflate, br"}
        css = client.get(f"/console/assets/{CSS}", headers=asked)
        assert css.status_code == 200
        assert css.headers["content-encoding"] == "gzip"
        assert "accept-encoding" in css.headers["vary"].lower()
        assert int(css.headers["content-length"]) < (ASSETS / CSS).stat().st_size // 4
        assert css.content == (ASSETS / CSS).read_bytes()  # httpx unpacked it: the same file

        plain = client.get(f"/console/assets/{CSS}", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert int(plain.headers["content-length"]) == (ASSETS / CSS).stat().st_size

        font = client.get(f"/console/assets/{FONT}", headers=asked)
        assert font.status_code == 200 and "content-encoding" not in font.headers

        page = client.get("/sign-in", headers=asked)
        assert page.status_code == 200 and "content-encoding" not in page.headers
        assert 'name="next"' in page.text

    # Unpacked by hand too: gzip, not anything httpx would have taken.
    with (
        httpx.Client(base_url=gw, timeout=10) as client,
        client.stream("GET", f"/console/assets/{CSS}", headers={"accept-encoding": "gzip"}) as r,
    ):
        raw = b"".join(r.iter_raw())
    assert gzip.decompress(raw) == (ASSETS / CSS).read_bytes()
