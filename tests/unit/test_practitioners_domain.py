"""Shift, leave and availability rules, without IO."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from his.kernel.intervals import Interval, subtract
from his.practitioners.domain import (
    InvalidScheduleError,
    InvalidTransitionError,
    LeaveAction,
    LeaveStatus,
    availability,
    check_leave,
    check_shift,
    transition,
)

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def at(hour: float, day: int = 28) -> datetime:
    return datetime(2026, 11, day, tzinfo=UTC) + timedelta(hours=hour)


def test_an_overnight_shift_is_fine() -> None:
    assert check_shift(at(20), at(8, day=29), NOW) == Interval(at(20), at(8, day=29))


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (at(10), at(9), "end after"),
        (at(10), at(10), "end after"),
        (at(10), at(10.1), "at least 15 minutes"),
        (at(0), at(0, day=29) + timedelta(minutes=1), "at most 24 hours"),
        (NOW - timedelta(days=8), NOW - timedelta(days=8) + timedelta(hours=8), "past"),
        (NOW + timedelta(days=401), NOW + timedelta(days=401, hours=8), "ahead"),
        (datetime(2026, 11, 28, 8), datetime(2026, 11, 28, 16), "UTC offset"),
    ],
)
def test_bad_shifts_are_refused_with_a_reason(start: datetime, end: datetime, message: str) -> None:
    with pytest.raises(InvalidScheduleError, match=message):
        check_shift(start, end, NOW)


def test_leave_rules() -> None:
    assert check_leave(at(0), at(0, day=30), NOW).end == at(0, day=30)
    with pytest.raises(InvalidScheduleError, match="180 days"):
        check_leave(at(0), at(0) + timedelta(days=181), NOW)
    with pytest.raises(InvalidScheduleError, match="past"):
        check_leave(NOW - timedelta(days=3), NOW - timedelta(days=2), NOW)


def test_leave_transitions_have_every_exit_and_nothing_else() -> None:
    assert transition(LeaveStatus.REQUESTED, LeaveAction.APPROVE) is LeaveStatus.APPROVED
    assert transition(LeaveStatus.REQUESTED, LeaveAction.REJECT) is LeaveStatus.REJECTED
    assert transition(LeaveStatus.REQUESTED, LeaveAction.CANCEL) is LeaveStatus.CANCELLED
    assert transition(LeaveStatus.APPROVED, LeaveAction.CANCEL) is LeaveStatus.CANCELLED
    for status, action in [
        (LeaveStatus.APPROVED, LeaveAction.APPROVE),
        (LeaveStatus.APPROVED, LeaveAction.REJECT),
        (LeaveStatus.REJECTED, LeaveAction.APPROVE),
        (LeaveStatus.REJECTED, LeaveAction.CANCEL),
        (LeaveStatus.CANCELLED, LeaveAction.APPROVE),
    ]:
        with pytest.raises(InvalidTransitionError):
            transition(status, action)


def test_subtract_cuts_holes_and_trims_edges() -> None:
    day = [Interval(at(8), at(17))]
    assert subtract(day, [Interval(at(12), at(13))]) == [Interval(at(8), at(12)), Interval(at(13), at(17))]
    assert subtract(day, [Interval(at(6), at(9)), Interval(at(16), at(20))]) == [Interval(at(9), at(16))]
    assert subtract(day, [Interval(at(0), at(23))]) == []
    assert subtract(day, []) == day
    # Overlapping cuts, unsorted.
    assert subtract(day, [Interval(at(11), at(13)), Interval(at(10), at(12))]) == [
        Interval(at(8), at(10)),
        Interval(at(13), at(17)),
    ]


def test_availability_is_shifts_minus_leave_minus_bookings_inside_the_window() -> None:
    shifts = [Interval(at(8), at(16)), Interval(at(20), at(8, day=29))]
    leave = [Interval(at(0, day=29), at(0, day=30))]
    busy = [Interval(at(9), at(9.5))]
    window = Interval(at(0), at(0, day=29) + timedelta(hours=2))
    assert availability(shifts, leave, busy, window) == [
        Interval(at(8), at(9)),
        Interval(at(9.5), at(16)),
        Interval(at(20), at(0, day=29)),
    ]
