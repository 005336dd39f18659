"""Admissions rules: ward input, the bed state machine, which nights are charged, and the entities
the store returns (wards, beds, admissions, their bed stays and charges). Pure, no IO.

The bed-night rule (docs/adr/0008-bed-nights.md), in the hospital's time zone:

- A night belongs to the local date on which it begins (the night of 3 March runs into 4 March).
- The admission day is charged, the discharge day is not: an admission from 3 March to 6 March is
  charged the nights of 3, 4 and 5 March.
- An admission and discharge on the same local date is charged one night (that date).
- While the patient is still in, the nightly job charges every night up to and including the
  date it is run for; a missed run is caught up by the next one, and a night is never charged twice
  (the database keeps one charge per admission and night).
- The tariff of a night is the daily rate of the ward where the patient slept: the ward of the
  last bed they entered before that date ended (midnight), or the bed they left on the day they
  were discharged. A transfer during the day moves that night to the new ward's rate.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Generic, TypeVar
from zoneinfo import ZoneInfo

from his.kernel.transitions import Lifecycle

#: The ward's ``type``: a short code (``general``, ``icu``, ``maternity`` …), carried on events.
WARD_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
#: A ward's beds are listed in one page (``his.kernel.params.MAX_PAGE``, the limit of every list).
MAX_BEDS_PER_WARD = 200
MAX_DAILY_RATE = Decimal("9999999999.99")  # NUMERIC(12,2)


class InvalidWardError(ValueError):
    """The ward description breaks a rule; the message says which."""


class InvalidTransitionError(ValueError):
    """The bed (or admission) is not in a state that allows this action."""


class AlreadyAdmittedError(Exception):
    """The patient already has an active admission (one per patient: the database's last word)."""


class BedTakenError(Exception):
    """The bed already holds an active admission (one per bed: the database's last word)."""


def check_rate(rate: Decimal) -> Decimal:
    """A daily rate: a finite, non-negative amount with at most two decimals."""
    if not rate.is_finite():
        raise InvalidWardError("daily_rate must be a number")
    if rate < 0:
        raise InvalidWardError("daily_rate cannot be negative")
    if rate > MAX_DAILY_RATE:
        raise InvalidWardError("daily_rate is too large")
    if rate != rate.quantize(Decimal("0.01")):
        raise InvalidWardError("daily_rate has at most two decimals")
    return rate.quantize(Decimal("0.01"))


def bed_labels(beds: int, rooms: int | None) -> list[tuple[str, str]]:
    """(room label, bed label) for each bed, spread as evenly as possible over the rooms in order:
    7 beds in 3 rooms are R1-B1..R1-B3, R2-B1, R2-B2, R3-B1, R3-B2."""
    if not 1 <= beds <= MAX_BEDS_PER_WARD:
        raise InvalidWardError(f"a ward has between 1 and {MAX_BEDS_PER_WARD} beds")
    count = 1 if rooms is None else rooms
    if not 1 <= count <= beds:
        raise InvalidWardError("a ward has between 1 room and one room per bed")
    out = []
    for r in range(count):
        room = f"R{r + 1}"
        in_room = beds // count + (1 if r < beds % count else 0)
        out += [(room, f"{room}-B{b + 1}") for b in range(in_room)]
    return out


class BedState(StrEnum):
    AVAILABLE = "available"
    OCCUPIED = "occupied"
    CLEANING = "cleaning"
    CLOSED = "closed"
    ISOLATION = "isolation"


class BedAction(StrEnum):
    #: A patient is given the bed (admission or transfer in): internal.
    OCCUPY = "occupy"
    #: The patient left it (discharge or transfer out): internal.
    VACATE = "vacate"
    #: Housekeeping cleaned it.
    RELEASE = "release"
    CLOSE = "close"
    #: Back into use after being closed or in isolation.
    OPEN = "open"
    ISOLATE = "isolate"


#: Actions staff take on a bed through the API; occupy and vacate follow admissions.
MANUAL_ACTIONS = (BedAction.RELEASE, BedAction.CLOSE, BedAction.OPEN, BedAction.ISOLATE)

#: A bed's lifecycle: ``bed_transition(state, action)`` is the next state.
bed_transition: Lifecycle[BedState, BedAction] = Lifecycle(
    {
        (BedState.AVAILABLE, BedAction.OCCUPY): BedState.OCCUPIED,
        (BedState.OCCUPIED, BedAction.VACATE): BedState.CLEANING,
        (BedState.CLEANING, BedAction.RELEASE): BedState.AVAILABLE,
        (BedState.AVAILABLE, BedAction.CLOSE): BedState.CLOSED,
        (BedState.CLOSED, BedAction.OPEN): BedState.AVAILABLE,
        (BedState.AVAILABLE, BedAction.ISOLATE): BedState.ISOLATION,
        (BedState.ISOLATION, BedAction.OPEN): BedState.AVAILABLE,
    },
    refuse=lambda state, action: InvalidTransitionError(f"a bed that is {state.value} cannot take '{action.value}'"),
)
#: The actions a bed in a state can take (every state has at least one).
bed_exits = bed_transition.exits


class AdmissionStatus(StrEnum):
    ACTIVE = "active"
    DISCHARGED = "discharged"


# --- entities ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ward:
    """A ward and its tariff: a night in one of its beds is charged ``daily_rate`` in ``currency``."""

    id: uuid.UUID
    name: str
    ward_type: str
    daily_rate: Decimal
    currency: str
    created_at: datetime
    version: int
    #: When it was last corrected (None if never).
    updated_at: datetime | None = None


T = TypeVar("T")


def _new(given: T | None, now: T) -> T | None:
    return None if given is None or given == now else given


@dataclass(frozen=True)
class WardChanges:
    """Corrections to what was entered for a ward; a field left None stays as it is."""

    name: str | None = None
    ward_type: str | None = None
    daily_rate: Decimal | None = None
    currency: str | None = None

    def against(self, ward: Ward) -> WardChanges:
        """Only the corrections that differ from what the ward holds."""
        return WardChanges(
            name=_new(self.name, ward.name),
            ward_type=_new(self.ward_type, ward.ward_type),
            daily_rate=_new(self.daily_rate, ward.daily_rate),
            currency=_new(self.currency, ward.currency),
        )

    @property
    def names(self) -> list[str]:
        """The names of the fields given."""
        given = (
            ("name", self.name),
            ("ward_type", self.ward_type),
            ("daily_rate", self.daily_rate),
            ("currency", self.currency),
        )
        return [name for name, value in given if value is not None]


@dataclass(frozen=True)
class Bed:
    """A bed, in a room of a ward; ``room`` and ``label`` are the room's and the bed's labels."""

    id: uuid.UUID
    ward_id: uuid.UUID
    room_id: uuid.UUID
    room: str
    label: str
    state: BedState
    version: int
    updated_at: datetime


@dataclass(frozen=True)
class Admission:
    """A patient's stay in the hospital: the bed they are in now (or left from), who admitted and
    who discharged them."""

    id: uuid.UUID
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    ward_id: uuid.UUID
    bed_id: uuid.UUID
    status: AdmissionStatus
    admitted_at: datetime
    discharged_at: datetime | None
    admitted_by: uuid.UUID
    discharged_by: uuid.UUID | None
    version: int


@dataclass(frozen=True)
class BedStay:
    """One bed an admission went through: ``bed`` is its label; ``ended_at`` is None while the
    patient is in it."""

    ward_id: uuid.UUID
    bed_id: uuid.UUID
    bed: str
    started_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class BedCharge:
    """One night of an admission, charged at the daily rate of the ward slept in."""

    id: uuid.UUID
    admission_id: uuid.UUID
    night: date
    ward_id: uuid.UUID
    ward_type: str
    amount: Decimal
    currency: str
    posted_at: datetime


# --- the bed-night rule --------------------------------------------------------------------------

ONE_DAY = timedelta(days=1)


def local_date(moment: datetime, zone: ZoneInfo) -> date:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a moment needs a time zone")
    return moment.astimezone(zone).date()


def day_end(day: date, zone: ZoneInfo) -> datetime:
    """The first instant after ``day`` in ``zone`` (local midnight that ends it)."""
    return datetime.combine(day + ONE_DAY, time(0), tzinfo=zone)


def last_chargeable_night(admitted_on: date, discharged_on: date | None) -> date | None:
    """The last night an admission is charged when it is over; None while it goes on."""
    if discharged_on is None:
        return None
    if discharged_on < admitted_on:
        raise ValueError("a discharge cannot come before the admission")
    return max(admitted_on, discharged_on - ONE_DAY)


def nights_due(admitted_on: date, discharged_on: date | None, through: date) -> list[date]:
    """Every night to charge up to and including ``through`` (a discharge charges all of its own)."""
    last = last_chargeable_night(admitted_on, discharged_on)
    end = through if last is None else min(through, last)
    return [admitted_on + ONE_DAY * i for i in range((end - admitted_on).days + 1)]


def nights_of_stay(admitted_on: date, discharged_on: date) -> int:
    """How many nights a finished admission is charged in all."""
    return len(nights_due(admitted_on, discharged_on, discharged_on))


W = TypeVar("W")


@dataclass(frozen=True)
class Stay(Generic[W]):
    """A spell in one bed: from ``started_at`` until ``ended_at`` (None while it goes on)."""

    ward: W
    started_at: datetime
    ended_at: datetime | None = None


def ward_for_night(stays: Sequence[Stay[W]], night: date, zone: ZoneInfo) -> W:
    """The ward whose rate the night is charged at: where the patient was at the end of that date
    (the last bed entered before midnight), or where they left from if they left that day."""
    if not stays:
        raise ValueError("an admission has at least one stay")
    ordered = sorted(stays, key=lambda s: s.started_at)
    cutoff = day_end(night, zone)
    before = [s for s in ordered if s.started_at < cutoff]
    return (before[-1] if before else ordered[0]).ward
