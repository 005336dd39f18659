"""Scheduling rules: service types, booking checks, appointment states, slots; the appointment and
the waitlist entry as the store returns them. Pure, no IO."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from his.kernel.intervals import Interval
from his.kernel.transitions import Lifecycle


@dataclass(frozen=True)
class Service:
    """A service type that may be booked, and how long its appointments last."""

    code: str
    name: str
    duration: timedelta

    @property
    def minutes(self) -> int:
        return int(self.duration.total_seconds() // 60)


#: The service types by code, and how long an appointment of each lasts.
SERVICE_TYPES: dict[str, Service] = {
    s.code: s
    for s in (
        Service("consultation", "Consultation", timedelta(minutes=20)),
        Service("follow_up", "Follow-up visit", timedelta(minutes=15)),
        Service("checkup", "Check-up", timedelta(minutes=30)),
        Service("vaccination", "Vaccination", timedelta(minutes=10)),
        Service("procedure", "Minor procedure", timedelta(minutes=45)),
    )
}
BOOK_AHEAD = timedelta(days=365)
#: A booking may start a little in the past (a walk-in being entered), not more.
GRACE = timedelta(minutes=5)


class InvalidBookingError(ValueError):
    """The booking request breaks a rule; the message says which."""


class InvalidTransitionError(ValueError):
    """The appointment is not in a state that allows this action."""


class CollisionError(Exception):
    """The appointment would overlap another one of the same practitioner or patient (``who``)."""

    def __init__(self, who: str, other: Appointment | None) -> None:
        super().__init__(f"collides with another appointment of the {who}")
        #: ``other`` is the appointment collided with, when known.
        self.who, self.other = who, other


class WaitlistDuplicateError(Exception):
    """The patient already waits for this practitioner and service."""


def duration_of(service: str) -> timedelta:
    try:
        return SERVICE_TYPES[service].duration
    except KeyError:
        raise InvalidBookingError(f"unknown service {service!r}; see /api/appointments/services") from None


def check_booking(start: datetime, end: datetime, service: str, now: datetime) -> Interval:
    """A booking: zone-aware times, exactly the service's duration, not in the past, within a year."""
    if any(m.tzinfo is None or m.utcoffset() is None for m in (start, end)):
        raise InvalidBookingError("times need a UTC offset (RFC 3339)")
    length = duration_of(service)
    if end <= start:
        raise InvalidBookingError("an appointment must end after it starts")
    if end - start != length:
        raise InvalidBookingError(f"a {service} lasts {int(length.total_seconds() // 60)} minutes")
    if start < now - GRACE:
        raise InvalidBookingError("appointments cannot be booked in the past")
    if start > now + BOOK_AHEAD:
        raise InvalidBookingError("appointments can be booked at most 365 days ahead")
    return Interval(start, end)


class Status(StrEnum):
    BOOKED = "booked"
    CHECKED_IN = "checked_in"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"


#: Statuses that hold the practitioner's and the patient's time (the exclusion constraints' WHERE).
HOLDING = (Status.BOOKED, Status.CHECKED_IN, Status.COMPLETED)


class Action(StrEnum):
    CHECK_IN = "check-in"
    COMPLETE = "complete"
    CANCEL = "cancel"
    NO_SHOW = "no-show"


#: An appointment's lifecycle: ``transition(status, action)`` is the next status.
transition: Lifecycle[Status, Action] = Lifecycle(
    {
        (Status.BOOKED, Action.CHECK_IN): Status.CHECKED_IN,
        (Status.BOOKED, Action.CANCEL): Status.CANCELLED,
        (Status.BOOKED, Action.NO_SHOW): Status.NO_SHOW,
        (Status.CHECKED_IN, Action.COMPLETE): Status.COMPLETED,
    },
    refuse=lambda status, action: InvalidTransitionError(f"a {status.value} appointment cannot take '{action.value}'"),
)


def can_reschedule(status: Status) -> bool:
    return status is Status.BOOKED


@dataclass(frozen=True)
class NewAppointment:
    """An appointment about to be booked: its times are valid and the practitioner works then;
    the exclusion constraints decide whether the time is still free."""

    id: uuid.UUID
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    service: str
    during: Interval
    booked_by: uuid.UUID


@dataclass(frozen=True)
class Appointment:
    """An appointment as stored: its times (``during``), its state and its version."""

    id: uuid.UUID
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    service: str
    during: Interval
    status: Status
    version: int
    booked_by: uuid.UUID
    created_at: datetime
    updated_at: datetime

    @property
    def start(self) -> datetime:
        return self.during.start

    @property
    def end(self) -> datetime:
        return self.during.end


class WaitlistStatus(StrEnum):
    WAITING = "waiting"
    OFFERED = "offered"
    BOOKED = "booked"
    WITHDRAWN = "withdrawn"


#: A waitlist entry that can still be withdrawn.
OPEN = (WaitlistStatus.WAITING, WaitlistStatus.OFFERED)


@dataclass(frozen=True)
class Offer:
    """The slot offered to a waiting patient, until ``expires_at``."""

    slot: Interval
    expires_at: datetime

    @property
    def start(self) -> datetime:
        return self.slot.start

    @property
    def end(self) -> datetime:
        return self.slot.end


@dataclass(frozen=True)
class WaitlistEntry:
    """A patient waiting for a practitioner and a service; ``offer`` while the entry is offered."""

    id: uuid.UUID
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    service: str
    status: WaitlistStatus
    offer: Offer | None
    created_at: datetime


def slots(free: list[Interval], length: timedelta, not_before: datetime) -> list[Interval]:
    """Consecutive slots of ``length`` inside each free interval, from its start, none before ``not_before``."""
    out = []
    for piece in sorted(free):
        start = piece.start
        while start + length <= piece.end:
            if start >= not_before:
                out.append(Interval(start, start + length))
            start += length
    return out
