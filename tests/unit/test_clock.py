"""The clock port's fake, and the hard dates the time-dependent tests run on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from his.kernel.clock import FakeClock, utc_now
from tests.support.calendar import HARD_DATES, day_length

BERLIN = ZoneInfo("Europe/Berlin")


def test_the_system_clock_is_aware_and_in_utc() -> None:
    assert utc_now().tzinfo is UTC


def test_a_fake_clock_shows_aware_times_only() -> None:
    with pytest.raises(ValueError, match="time zone"):
        FakeClock(datetime(2027, 3, 28, 1, 30))  # no zone: the point of the test


def test_a_fake_clock_moves_by_elapsed_time_across_a_daylight_saving_change() -> None:
    clock = FakeClock(datetime(2027, 3, 28, 1, 30, tzinfo=BERLIN))
    assert clock.advance(timedelta(hours=1)) == datetime(2027, 3, 28, 3, 30, tzinfo=BERLIN)
    assert clock().utcoffset() == timedelta(hours=2)


def test_the_hard_dates_are_hard() -> None:
    days = {str(h): h for h in HARD_DATES}
    assert day_length(days["dst-spring"]) == timedelta(hours=23)
    assert day_length(days["dst-autumn"]) == timedelta(hours=25)
    assert day_length(days["feb-28-leap"]) == timedelta(hours=24)
    assert (days["feb-28-leap"].day + timedelta(days=1)).day == 29
    assert days["new-year"].midnight().year == 2027  # local midnight is still the old year in UTC
    assert days["longest-names"].at(10).astimezone(BERLIN).strftime("%A %B") == "Wednesday September"
