"""Every string the console shows goes through its catalogue, and the Turkish catalogue translates
each (``tools/console_messages.py`` lists what lacks a translation and adds it for a translator).

Two checks: no message of the templates or the Python code is untranslated, and no template holds
text a person reads outside the catalogue (between tags, or in an attribute a person reads).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = sorted((ROOT / "src" / "his" / "console" / "templates").glob("**/*.html"))
#: Attributes whose value a person reads (or hears, from a screen reader).
READ_ATTRIBUTES = ("aria-label", "title", "placeholder", "alt", "aria-description")


def messages_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("console_messages", ROOT / "tools" / "console_messages.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_message_has_its_turkish_translation() -> None:
    tool = messages_tool()
    found = tool.messages()
    assert "Sign in" in found and "Your session has ended. Sign in again to go on." in found  # both kinds
    assert tool.missing() == [], "untranslated (python tools/console_messages.py --write, then translate)"


def text_outside_the_catalogue(source: str) -> list[str]:
    """What a template shows a person that does not come from the catalogue or a value."""
    source = re.sub(r"{%-?\s*trans\b.*?{%-?\s*endtrans\s*-?%}", "", source, flags=re.S)
    source = re.sub(r"{#.*?#}|{{.*?}}|{%.*?%}", "", source, flags=re.S)
    source = re.sub(r"<(script|style)\b.*?</\1>", "", source, flags=re.S)
    left = []
    for tag in re.findall(r"<[^>]*>", source):
        for name, value in re.findall(r'([\w-]+)\s*=\s*"([^"]*)"', tag):
            if name in READ_ATTRIBUTES and re.search(r"[^\W\d_]", value):
                left.append(f'{name}="{value}"')
    between = re.sub(r"<[^>]*>", " ", source)
    between = re.sub(r"&#?\w+;", " ", between)
    left += [w for w in between.split() if re.search(r"[^\W\d_]", w)]
    return left


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_a_template_shows_no_text_outside_the_catalogue(template: Path) -> None:
    assert text_outside_the_catalogue(template.read_text()) == []


def test_the_check_finds_untranslated_text() -> None:
    assert text_outside_the_catalogue('<p>{{ _("Ready") }} Bed</p>') == ["Bed"]
    assert text_outside_the_catalogue('<input aria-label="Search">') == ['aria-label="Search"']
    assert text_outside_the_catalogue("{% trans %}Hello{% endtrans %} <b>{{ name }}</b> &#32; 12") == []
