"""Practitioner rules: shifts, leave and availability. Pure, no IO."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from his.kernel.intervals import Interval, subtract
from his.kernel.transitions import Lifecycle

#: A shift may run overnight but never longer than this.
MAX_SHIFT = timedelta(hours=24)
MIN_SHIFT = timedelta(minutes=15)
MAX_LEAVE = timedelta(days=180)
#: How far back a shift may still be recorded, and how far ahead one may be planned.
SHIFT_PAST = timedelta(days=7)
PLAN_AHEAD = timedelta(days=400)
#: The longest window of shifts or availability one question may ask about.
MAX_WINDOW = timedelta(days=31)

SPECIALTIES: dict[str, str] = {
    "general_practice": "General practice",
    "internal_medicine": "Internal medicine",
    "cardiology": "Cardiology",
    "pediatrics": "Pediatrics",
    "obstetrics_gynecology": "Obstetrics and gynecology",
    "orthopedics": "Orthopedics",
    "neurology": "Neurology",
    "dermatology": "Dermatology",
    "ophthalmology": "Ophthalmology",
    "otolaryngology": "Ear, nose and throat",
    "psychiatry": "Psychiatry",
    "radiology": "Radiology",
    "general_surgery": "General surgery",
    "emergency_medicine": "Emergency medicine",
    "anesthesiology": "Anesthesiology",
    "nursing": "Nursing",
}


class InvalidScheduleError(ValueError):
    """A shift or leave breaks a rule; the message says which."""


class InvalidTransitionError(ValueError):
    """The leave request is not in a state that allows this action."""


def _aware(*moments: datetime) -> None:
    if any(m.tzinfo is None or m.utcoffset() is None for m in moments):
        raise InvalidScheduleError("times need a UTC offset (RFC 3339)")


def check_window(start: datetime, end: datetime) -> Interval:
    """A window to look at shifts or availability in: both ends with a UTC offset, at most 31 days."""
    for moment, name in ((start, "from"), (end, "to")):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise InvalidScheduleError(f"'{name}' needs a UTC offset (RFC 3339)")
    if end <= start:
        raise InvalidScheduleError("'to' must be after 'from'")
    if end - start > MAX_WINDOW:
        raise InvalidScheduleError("a window spans at most 31 days")
    return Interval(start, end)


def check_shift(start: datetime, end: datetime, now: datetime) -> Interval:
    """A shift: end after start, 15 minutes to 24 hours long (overnight is fine), not far in the past."""
    _aware(start, end)
    if end <= start:
        raise InvalidScheduleError("a shift must end after it starts")
    if end - start < MIN_SHIFT:
        raise InvalidScheduleError("a shift lasts at least 15 minutes")
    if end - start > MAX_SHIFT:
        raise InvalidScheduleError("a shift lasts at most 24 hours")
    if start < now - SHIFT_PAST:
        raise InvalidScheduleError("shifts more than 7 days in the past cannot be recorded")
    if start > now + PLAN_AHEAD:
        raise InvalidScheduleError("shifts can be planned at most 400 days ahead")
    return Interval(start, end)


def check_leave(start: datetime, end: datetime, now: datetime) -> Interval:
    _aware(start, end)
    if end <= start:
        raise InvalidScheduleError("leave must end after it starts")
    if end - start > MAX_LEAVE:
        raise InvalidScheduleError("one leave request covers at most 180 days")
    if end < now:
        raise InvalidScheduleError("leave cannot be requested entirely in the past")
    if start > now + PLAN_AHEAD:
        raise InvalidScheduleError("leave can be requested at most 400 days ahead")
    return Interval(start, end)


class LeaveStatus(StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class LeaveAction(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    CANCEL = "cancel"


@dataclass(frozen=True)
class Practitioner:
    id: uuid.UUID
    full_name: str
    specialty: str
    #: The user account of the practitioner themself, if linked.
    user_id: uuid.UUID | None
    created_at: datetime

    def is_user(self, subject: str) -> bool:
        """Whether the caller ``subject`` is this practitioner."""
        return self.user_id is not None and str(self.user_id) == subject


@dataclass(frozen=True)
class Shift:
    id: uuid.UUID
    during: Interval


@dataclass(frozen=True)
class LeaveRequest:
    id: uuid.UUID
    status: LeaveStatus
    during: Interval
    created_at: datetime
    decided_at: datetime | None


@dataclass(frozen=True)
class Calendar:
    """A practitioner's shifts, approved leave and booked time overlapping a window, each in no
    particular order."""

    shifts: list[Interval]
    leave: list[Interval]
    booked: list[Interval]


class AccountLinkedError(Exception):
    """The user account is already linked to another practitioner."""


class ShiftOverlapError(Exception):
    """The shift overlaps another shift of the same practitioner: ``other``, the earliest of
    those it overlaps (None if it was gone by the time it was looked up)."""

    def __init__(self, other: Shift | None) -> None:
        super().__init__("overlapping shift")
        self.other = other


#: A leave request's lifecycle: ``transition(status, action)`` is the next status.
transition: Lifecycle[LeaveStatus, LeaveAction] = Lifecycle(
    {
        (LeaveStatus.REQUESTED, LeaveAction.APPROVE): LeaveStatus.APPROVED,
        (LeaveStatus.REQUESTED, LeaveAction.REJECT): LeaveStatus.REJECTED,
        (LeaveStatus.REQUESTED, LeaveAction.CANCEL): LeaveStatus.CANCELLED,
        (LeaveStatus.APPROVED, LeaveAction.CANCEL): LeaveStatus.CANCELLED,
    },
    refuse=lambda status, action: InvalidTransitionError(f"a {status.value} leave request cannot be {action.value}d"),
)


def availability(
    shifts: list[Interval], leave: list[Interval], busy: list[Interval], window: Interval
) -> list[Interval]:
    """Free time inside ``window``: shifts minus approved leave minus booked time."""
    clipped = [Interval(max(s.start, window.start), min(s.end, window.end)) for s in shifts if s.overlaps(window)]
    return subtract(clipped, [*leave, *busy])
