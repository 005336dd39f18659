"""Booking rules, appointment states and slots, without IO."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from his.kernel.intervals import Interval
from his.scheduling.domain import (
    SERVICE_TYPES,
    Action,
    InvalidBookingError,
    InvalidTransitionError,
    Status,
    check_booking,
    duration_of,
    slots,
    transition,
)

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return datetime(2026, 11, 28, tzinfo=UTC) + timedelta(hours=hours)


def test_a_booking_lasts_exactly_its_service() -> None:
    assert check_booking(at(9), at(9) + timedelta(minutes=20), "consultation", NOW) == Interval(
        at(9), at(9) + timedelta(minutes=20)
    )
    with pytest.raises(InvalidBookingError, match="lasts 20 minutes"):
        check_booking(at(9), at(10), "consultation", NOW)


@pytest.mark.parametrize(
    ("start", "end", "service", "message"),
    [
        (at(9), at(8), "consultation", "end after"),
        (at(9), at(10), "astrology", "unknown service"),
        (NOW - timedelta(hours=1), NOW - timedelta(minutes=40), "consultation", "past"),
        (NOW + timedelta(days=400), NOW + timedelta(days=400, minutes=20), "consultation", "365 days"),
        (datetime(2026, 11, 28, 9), datetime(2026, 11, 28, 9, 20), "consultation", "UTC offset"),
    ],
)
def test_bad_bookings_are_refused(start: datetime, end: datetime, service: str, message: str) -> None:
    with pytest.raises(InvalidBookingError, match=message):
        check_booking(start, end, service, NOW)


def test_appointment_lifecycle() -> None:
    assert transition(Status.BOOKED, Action.CHECK_IN) is Status.CHECKED_IN
    assert transition(Status.CHECKED_IN, Action.COMPLETE) is Status.COMPLETED
    assert transition(Status.BOOKED, Action.CANCEL) is Status.CANCELLED
    assert transition(Status.BOOKED, Action.NO_SHOW) is Status.NO_SHOW
    for status in (Status.CANCELLED, Status.COMPLETED, Status.NO_SHOW):
        for action in Action:
            with pytest.raises(InvalidTransitionError):
                transition(status, action)
    with pytest.raises(InvalidTransitionError):
        transition(Status.BOOKED, Action.COMPLETE)


def test_slots_fill_each_free_interval_from_its_start() -> None:
    free = [Interval(at(8), at(9)), Interval(at(10), at(10.5))]
    got = slots(free, timedelta(minutes=20), not_before=at(0))
    assert [s.start for s in got] == [at(8), at(8 + 1 / 3), at(8 + 2 / 3), at(10)]
    assert slots(free, timedelta(minutes=20), not_before=at(8.5)) == [
        Interval(at(8 + 2 / 3), at(9)),
        Interval(at(10), at(10 + 1 / 3)),
    ]


@pytest.mark.parametrize(("day", "hours"), [(date(2027, 3, 28), 23), (date(2027, 10, 31), 25), (date(2028, 2, 29), 24)])
def test_a_local_day_holds_its_hours_of_slots_when_the_clocks_change(day: date, hours: int) -> None:
    """Working time given in local time (Berlin): no slot is counted twice or lost in the hour the
    clocks skip or repeat."""
    berlin = ZoneInfo("Europe/Berlin")
    whole = Interval(
        datetime.combine(day, time(0), tzinfo=berlin), datetime.combine(day + timedelta(days=1), time(0), tzinfo=berlin)
    )
    got = slots([whole], timedelta(minutes=20), not_before=whole.start)
    assert len(got) == len(set(got)) == hours * 3
    assert all(b.start - a.start == timedelta(minutes=20) for a, b in pairwise(got))
    assert got[-1].end == whole.end and whole.end.tzinfo is UTC


# Written out here, not read from the module: a transition added there by mistake must fail here.
ALLOWED = {
    (Status.BOOKED, Action.CHECK_IN): Status.CHECKED_IN,
    (Status.BOOKED, Action.CANCEL): Status.CANCELLED,
    (Status.BOOKED, Action.NO_SHOW): Status.NO_SHOW,
    (Status.CHECKED_IN, Action.COMPLETE): Status.COMPLETED,
}


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize("action", list(Action))
def test_every_appointment_transition_is_allowed_or_refused_as_the_table_says(status: Status, action: Action) -> None:
    """A finished appointment (cancelled, completed, no-show) takes no further step: a second
    cancel is refused, not a second cancellation."""
    if (status, action) in ALLOWED:
        assert transition(status, action) == ALLOWED[(status, action)]
    else:
        with pytest.raises(InvalidTransitionError):
            transition(status, action)


def test_each_service_type_is_found_by_its_code_and_lasts_whole_minutes() -> None:
    for code, service in SERVICE_TYPES.items():
        assert service.code == code
        assert duration_of(code) == service.duration == timedelta(minutes=service.minutes)
    assert SERVICE_TYPES["consultation"].minutes == 20
