"""The console's languages: a Jinja2 environment per locale, with its catalogue and its formats.

Every string a page shows goes through the catalogue (``{% trans %}`` and ``_()`` in templates,
``N_()`` for text written in Python); English is the source language, Turkish is
``locales/tr/LC_MESSAGES/messages.po``, read at start (no compiled catalogue is kept in git).
Dates, times and money are formatted for the locale by Babel, in the hospital's time zone.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from datetime import date, datetime, tzinfo
from decimal import Decimal
from pathlib import Path

from babel.core import Locale as BabelLocale
from babel.dates import format_date, format_datetime, format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency
from babel.support import NullTranslations, Translations
from jinja2 import Environment, FileSystemLoader, select_autoescape

from his.console.domain import Locale

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
LOCALES = HERE / "locales"
#: The names each language is offered under, in its own language.
LANGUAGE_NAMES = {Locale.EN: "English", Locale.TR: "Türkçe"}


def N_(message: str) -> str:
    """Mark ``message`` for the catalogue; it is translated where it is shown."""
    return message


def catalogue(locale: Locale) -> NullTranslations:
    """The translations of ``locale`` (English is the source: none needed)."""
    if locale is Locale.EN:
        return NullTranslations()
    with (LOCALES / locale.value / "LC_MESSAGES" / "messages.po").open("rb") as po:
        catalog = read_po(po, locale=locale.value)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled)


def environment(locale: Locale, zone: tzinfo) -> Environment:
    """The templates' environment for ``locale``: autoescaping on, its catalogue, its formats."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.install_gettext_translations(catalogue(locale), newstyle=True)  # type: ignore[attr-defined]
    where = BabelLocale.parse(locale.value)

    def when(value: datetime | str, style: str = "medium") -> str:
        return format_datetime(moment(value), style, tzinfo=zone, locale=where)

    def day(value: date | datetime | str, style: str = "medium") -> str:
        """The day of a date, or of a moment where the hospital is."""
        if isinstance(value, str):
            value = moment(value) if "T" in value else date.fromisoformat(value)
        if isinstance(value, datetime):
            value = value.astimezone(zone).date()
        return format_date(value, style, locale=where)

    def clock(value: datetime | str, style: str = "short") -> str:
        return format_time(moment(value), style, tzinfo=zone, locale=where)

    def money(amount: str | Decimal, currency: str) -> str:
        shown = format_currency(Decimal(amount), currency, locale=where)
        if shown.startswith(currency) and shown[len(currency) : len(currency) + 1].isdigit():
            return f"{currency}\xa0{shown[len(currency) :]}"  # a locale without a symbol for it: "TRY 200.00"
        return shown

    env.filters.update(when=when, day=day, clock=clock, money=money)
    env.globals.update(locale=locale.value, languages=LANGUAGE_NAMES)
    return env


def moment(value: datetime | str) -> datetime:
    """A moment as the API gives it (RFC 3339 text) or as it is."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def environments(zone: tzinfo) -> Mapping[Locale, Environment]:
    """One environment per language of the console."""
    return {locale: environment(locale, zone) for locale in Locale}


def negotiate(accept_language: str | None) -> Locale:
    """The console's language a browser prefers (``Accept-Language``), English if none."""
    ranked: list[tuple[float, str]] = []
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((quality, tag.strip().lower().split("-")[0]))
    for _quality, tag in sorted(ranked, key=lambda r: -r[0]):
        if tag in Locale._value2member_map_:
            return Locale(tag)
    return Locale.EN
