"""The request rules the gateway and every service share (``his.kernel.params``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from his.kernel.params import (
    EARLIEST,
    LATEST,
    LIMIT_RULE,
    MAX_PAGE,
    calendar_date,
    calendar_datetime,
    like_escape,
    one_of,
    page_size,
    search_text,
)
from his.kernel.problems import ProblemError


@pytest.mark.parametrize("given", ["1", "50", str(MAX_PAGE), 1, MAX_PAGE, "0050"])
def test_a_page_size_from_one_to_the_maximum_is_taken(given: object) -> None:
    assert page_size(given) == int(str(given))


@pytest.mark.parametrize(
    "given", ["0", str(MAX_PAGE + 1), "100000", "-1", "+5", "1e3", "", " 5", "²", "٣", "5.0", 0, -3, True, None, 2.0]
)
def test_any_other_page_size_is_refused_naming_the_rule(given: object) -> None:
    with pytest.raises(ValueError, match=f"from 1 to {MAX_PAGE}") as refused:
        page_size(given)
    assert str(refused.value) == LIMIT_RULE


def test_dates_are_taken_within_the_calendar_the_system_works_with() -> None:
    assert calendar_date(EARLIEST) == EARLIEST and calendar_date(LATEST) == LATEST
    # The day after the last one still has a next day and a month of windows before year 9999 ends.
    assert LATEST + timedelta(days=400) < date.max and EARLIEST - timedelta(days=400) > date.min
    for day in (date(9999, 12, 30), date.max, date.min, date(1, 1, 2), LATEST + timedelta(days=1)):
        with pytest.raises(ValueError, match="dates from 1800-01-01 to 2999-12-31"):
            calendar_date(day)


def test_a_time_is_judged_by_its_own_date_so_its_utc_form_always_exists() -> None:
    far_west = timezone(timedelta(hours=-14))
    assert calendar_datetime(datetime(2999, 12, 31, 23, 59, tzinfo=far_west)).astimezone(UTC).year == 3000
    with pytest.raises(ValueError, match="dates from"):
        calendar_datetime(datetime(9999, 12, 31, 23, 59, tzinfo=far_west))
    with pytest.raises(ValueError, match="dates from"):
        calendar_datetime(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))))


@pytest.mark.parametrize("given", ["%%", "__", "  ", "\t\n", "%_%", "a%", "-_-", "é", ""])
def test_a_search_without_two_letters_or_digits_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="at least 2 letters or digits"):
        search_text(given)


@pytest.mark.parametrize(
    ("given", "kept"), [(" Ayşe ", "Ayşe"), ("42", "42"), ("o'neil", "o'neil"), ("MRN-1", "MRN-1")]
)
def test_a_search_keeps_its_text(given: str, kept: str) -> None:
    assert search_text(given) == kept


def test_like_wildcards_are_escaped_to_match_themselves() -> None:
    assert like_escape("100%_a\\b") == "100\\%\\_a\\\\b"
    assert like_escape("plain") == "plain"


def test_an_unknown_filter_value_is_a_422_naming_the_valid_ones() -> None:
    assert one_of("status", "open", ["open", "paid"]) == "open"
    with pytest.raises(ProblemError) as refused:
        one_of("status", "nonsense", ["open", "paid"])
    assert refused.value.status == 422
    assert "open, paid" in refused.value.detail and "'nonsense'" in refused.value.detail
    assert refused.value.extra["valid"] == ["open", "paid"]
    assert refused.value.extra["errors"] == [{"loc": ["status"], "msg": refused.value.detail}]
