"""The console's messages: every string its templates and Python code send through the catalogue,
and the Turkish catalogue brought up to date with them.

    python tools/console_messages.py          # list the messages the Turkish catalogue lacks
    python tools/console_messages.py --write  # add them to it, untranslated, for a translator

``tests/unit/test_console_catalogue.py`` fails while any message has no translation.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

CONSOLE = Path(__file__).resolve().parents[1] / "src" / "his" / "console"
TURKISH = CONSOLE / "locales" / "tr" / "LC_MESSAGES" / "messages.po"
METHODS = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
OPTIONS = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "true"}}
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}


def messages() -> list[str]:
    """Every message of the console, in the order first found."""
    found: dict[str, None] = {}
    for _file, _line, message, _comments, _context in extract_from_dir(
        CONSOLE, METHODS, options_map=OPTIONS, keywords=KEYWORDS
    ):
        for text in message if isinstance(message, tuple) else (message,):
            if text:
                found.setdefault(text, None)
    return list(found)


def turkish() -> Catalog:
    with TURKISH.open("rb") as po:
        return read_po(po, locale="tr")


def missing() -> list[str]:
    """The messages the Turkish catalogue has no translation for."""
    catalog = turkish()
    return [m for m in messages() if not (catalog.get(m) and catalog.get(m).string)]


def write() -> int:
    catalog = turkish()
    added = 0
    for message in messages():
        if catalog.get(message) is None:
            catalog.add(message, "")
            added += 1
    with TURKISH.open("wb") as po:
        write_po(po, catalog, width=100, omit_header=False, sort_output=False)
    return added


if __name__ == "__main__":
    if "--write" in sys.argv:
        print(f"{write()} messages added to {TURKISH}")
    for m in missing():
        print(f"untranslated: {m!r}")
