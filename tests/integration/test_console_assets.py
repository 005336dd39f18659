"""The console's vendored front-end assets (htmx, the U.S. Web Design System) are the published
files, unchanged, each listed with its size and SHA-256 in ``VENDORED.md``; every file the
stylesheet names is there."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

VENDOR = Path(str(resources.files("his.console"))) / "static" / "vendor"
ROW = re.compile(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|$", re.M)


def test_the_vendored_files_are_the_published_ones() -> None:
    table = ROW.findall((VENDOR / "VENDORED.md").read_text())
    present = {p.relative_to(VENDOR).as_posix() for p in VENDOR.rglob("*") if p.is_file()}
    assert {name for name, _, _ in table} == present - {"VENDORED.md"}
    for name, size, digest in table:
        data = (VENDOR / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (int(size), digest), name


def test_every_file_the_stylesheet_names_is_vendored_but_the_hero_image() -> None:
    css = VENDOR / "uswds-3.14.0" / "css" / "uswds.min.css"
    named = {u.strip("\"'") for u in re.findall(r"url\(([^)]+)\)", css.read_text())}
    files = {(css.parent / u).resolve() for u in named if not u.startswith("data:")}
    missing = sorted(str(f.relative_to(VENDOR.resolve())) for f in files if not f.is_file())
    assert missing == ["uswds-3.14.0/img/hero.jpg"]
