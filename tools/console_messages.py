"""The console's messages: every string its templates and Python code send through the catalogue,
and the Turkish catalogue brought up to date with them.

    python tools/console_messages.py          # list the messages the Turkish catalogue lacks
    python tools/console_messages.py --write  # add them to it, untranslated, for a translator
                                              # (and drop the messages no longer used)

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


def messages() -> list[str | tuple[str, str]]:
    """Every message of the console, in the order first found: a text, or a plural's pair."""
    found: dict[str | tuple[str, str], None] = {}
    for _file, _line, message, _comments, _context in extract_from_dir(
        CONSOLE, METHODS, options_map=OPTIONS, keywords=KEYWORDS
    ):
        if isinstance(message, tuple):
            found.setdefault((message[0], message[1]), None)
        elif message:
            found.setdefault(message, None)
    return list(found)


def key(message: str | tuple[str, str]) -> str:
    """The catalogue's key of a message: its text, or a plural's singular."""
    return message if isinstance(message, str) else message[0]


def turkish() -> Catalog:
    with TURKISH.open("rb") as po:
        return read_po(po, locale="tr")


def missing() -> list[str]:
    """The messages the Turkish catalogue has no translation for (a plural needs every form)."""
    catalog = turkish()
    lacking = []
    for message in messages():
        entry = catalog.get(key(message))
        strings = () if entry is None else (entry.string if isinstance(entry.string, tuple) else (entry.string,))
        if not strings or not all(strings):
            lacking.append(key(message))
    return lacking


def write() -> int:
    """Add the new messages to the Turkish catalogue, untranslated, and drop the ones no longer
    used; how many were added."""
    catalog = turkish()
    current = messages()
    added = 0
    for message in current:
        if catalog.get(key(message)) is None:
            catalog.add(message, "" if isinstance(message, str) else ("", ""))
            added += 1
    used = {key(m) for m in current}
    keys = [m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id]
    for gone in [k for k in keys if k not in used]:
        catalog.delete(gone)
    with TURKISH.open("wb") as po:
        write_po(po, catalog, width=100, omit_header=False, sort_output=False)
    return added


if __name__ == "__main__":
    if "--write" in sys.argv:
        print(f"{write()} messages added to {TURKISH}")
    for m in missing():
        print(f"untranslated: {m!r}")
