"""What a request may ask of a list or a query: the same rules at the gateway and in every service.

- A page holds at most ``MAX_PAGE`` items. ``limit`` must be a whole number from 1 to
  ``MAX_PAGE``; anything else is a 422 whose problem names the rule (``LIMIT_RULE``), whether
  the gateway or the service sees it first.
- A date or a time given in a query lies between ``EARLIEST`` and ``LATEST``. A day's window, a
  month of shifts or a conversion to UTC computed from such a value never leaves the range
  Python and PostgreSQL can represent (``date.max`` plus a day is an ``OverflowError``, a 500).
- A filter takes only values the system knows (an enumeration's members, a plan's code): an
  unknown one is a 422 naming the valid values (``one_of``, or an enum-typed parameter), never
  an empty ``200``.
- A free-text search names at least ``MIN_SEARCH_CHARS`` letters or digits: ``%%``, ``__`` or
  blanks are not a search, and would list everyone. Its text reaches SQL ``LIKE`` only escaped
  (``like_escape``).

Services declare parameters with the annotated types below (``limit: Limit = 50``,
``day: Annotated[CalendarDate, Query(alias="date")]``); FastAPI answers a value that breaks a
rule with 422, which ``his.kernel.problems`` renders as problem+json naming the parameter.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Annotated

from fastapi import Query
from pydantic import AfterValidator, BeforeValidator

from his.kernel.problems import ProblemError

MAX_PAGE = 200
LIMIT_RULE = f"limit must be a whole number from 1 to {MAX_PAGE}"

EARLIEST = date(1800, 1, 1)
LATEST = date(2999, 12, 31)
DATE_RULE = f"dates from {EARLIEST.isoformat()} to {LATEST.isoformat()} are supported"

MIN_SEARCH_CHARS = 2
SEARCH_RULE = f"a search needs at least {MIN_SEARCH_CHARS} letters or digits"


def page_size(value: object) -> int:
    """``limit`` as a number of items, from a query string (plain ASCII digits) or an int.

    Raises ``ValueError(LIMIT_RULE)`` for anything else: superscript or Arabic-Indic digits,
    signs, exponents, blanks, zero, or more than ``MAX_PAGE``.
    """
    if isinstance(value, bool):
        raise ValueError(LIMIT_RULE)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 6:
        number = int(value)
    else:
        raise ValueError(LIMIT_RULE)
    if not 1 <= number <= MAX_PAGE:
        raise ValueError(LIMIT_RULE)
    return number


def calendar_date(value: date) -> date:
    """The date, if the system works with it; ``ValueError(DATE_RULE)`` otherwise."""
    if not EARLIEST <= value <= LATEST:
        raise ValueError(DATE_RULE)
    return value


def calendar_datetime(value: datetime) -> datetime:
    """The time, if its date (as written, in its own offset) is one the system works with."""
    calendar_date(value.date())
    return value


def search_text(value: str) -> str:
    """The search text without surrounding blanks, if it has enough letters or digits to search by."""
    text = value.strip()
    if sum(ch.isalnum() for ch in text) < MIN_SEARCH_CHARS:
        raise ValueError(SEARCH_RULE)
    return text


def like_escape(text: str) -> str:
    r"""``text`` as a literal inside a ``LIKE ... ESCAPE '\'`` pattern: ``%``, ``_`` and ``\`` escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def one_of(name: str, value: str, valid: Iterable[str]) -> str:
    """``value`` if it is one of ``valid``; otherwise a 422 problem naming the valid values."""
    known = list(valid)
    if value in known:
        return value
    detail = f"unknown {name} {value!r}: valid values are {', '.join(known) or '(none yet)'}"
    raise ProblemError(422, detail, errors=[{"loc": [name], "msg": detail}], valid=known)


#: ``limit`` of a list route: ``limit: Limit = 50``.
Limit = Annotated[
    int,
    # Query first: its bounds become the OpenAPI minimum and maximum (after a validator they would not).
    Query(ge=1, le=MAX_PAGE, description=f"how many items to return, at most {MAX_PAGE}"),
    BeforeValidator(page_size),
]
#: A date in a query (``Annotated[CalendarDate, Query(alias="date")]``).
CalendarDate = Annotated[date, AfterValidator(calendar_date)]
#: A date and time in a query.
CalendarDateTime = Annotated[datetime, AfterValidator(calendar_datetime)]
#: Free text to search by.
SearchText = Annotated[str, AfterValidator(search_text)]
