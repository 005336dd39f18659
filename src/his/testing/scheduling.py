"""Scheduling's ports in memory (``his.scheduling.ports``).

What the tables enforce, the fakes enforce too, and refuse as PostgreSQL does:

- among appointments that hold time (``HOLDING``), no practitioner and no patient has two that
  overlap (the exclusion constraints, checked on every write: a booking, a move, a status that
  holds time again): ``CollisionError`` saying whose, the practitioner's first, as the store;
- one open waitlist entry (waiting or offered) per patient, practitioner and service (the unique
  index): ``WaitlistDuplicateError`` when added, the driver's unique violation when an entry is
  opened again; an entry holds an offer exactly while it is offered, and an appointment's times
  are not empty (the checks): the driver's check violation; a range that ends before it starts
  is no range: the driver's data error;
- a refused write aborts the unit of work, as it aborts PostgreSQL's transaction: every later
  call of the unit fails, and so does the unit if it ends without the error.

The driver's errors (``asyncpg``) are raised where the store lets the database's through, so a
use case meets the same error on both sides. The contract suite checks all of it against the
database (``tests/integration/test_scheduling_contract.py``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import asyncpg

from his.kernel.clock import Clock, utc_now
from his.kernel.intervals import Interval
from his.scheduling.domain import (
    HOLDING,
    OPEN,
    Appointment,
    CollisionError,
    NewAppointment,
    Offer,
    Status,
    WaitlistDuplicateError,
    WaitlistEntry,
    WaitlistStatus,
)
from his.testing.replica import FakeKnown
from his.testing.units import FakeUnits, FakeWork

#: Whose time a collision is, in the order the store's constraints are checked.
PARTIES = ("practitioner", "patient")


@dataclass
class SchedulingState:
    appointments: dict[uuid.UUID, Appointment] = field(default_factory=dict)
    waitlist: dict[uuid.UUID, WaitlistEntry] = field(default_factory=dict)
    known: dict[uuid.UUID, uuid.UUID | None] = field(default_factory=dict)


def _utc(moment: datetime) -> datetime:
    """A moment as the database gives it back (``timestamptz``: in UTC)."""
    return moment.astimezone(UTC)


def _party(a: Appointment | NewAppointment, who: str) -> uuid.UUID:
    return a.practitioner_id if who == "practitioner" else a.patient_id


def _holding(state: SchedulingState, who: str, of: Appointment | NewAppointment, during: Interval) -> list[Appointment]:
    """Appointments holding time of ``of``'s practitioner or patient (``who``) that overlap
    ``during``, other than ``of``, earliest first."""
    found = [
        a
        for a in state.appointments.values()
        if a.id != of.id and a.status in HOLDING and _party(a, who) == _party(of, who) and a.during.overlaps(during)
    ]
    return sorted(found, key=lambda a: a.start)


class FakeAppointments:
    def __init__(self, work: FakeSchedulingWork, state: SchedulingState) -> None:
        self.work, self.state = work, state

    def _keep(self, a: Appointment) -> Appointment:
        """Store ``a`` if the constraints allow it, as the table's checks and exclusion
        constraints would."""
        self.work.as_range(a.during)
        if a.start == a.end:
            self.work.refuse(asyncpg.CheckViolationError("an appointment's times may not be empty"))
        if a.status in HOLDING:
            for who in PARTIES:
                if _holding(self.state, who, a, a.during):
                    self.work.refuse(CollisionError(who, None))
        self.state.appointments[a.id] = a
        return a

    async def add(self, new: NewAppointment, at: datetime) -> Appointment:
        self.work.going_on()
        if new.id in self.state.appointments:
            self.work.refuse(asyncpg.UniqueViolationError(f"appointment {new.id} exists"))  # the primary key
        return self._keep(
            Appointment(
                new.id,
                new.patient_id,
                new.practitioner_id,
                new.service,
                new.during,
                Status.BOOKED,
                1,
                new.booked_by,
                _utc(at),
                _utc(at),
            )
        )

    async def get(self, appointment_id: uuid.UUID, *, lock: bool = False) -> Appointment | None:
        self.work.going_on()
        return self.state.appointments.get(appointment_id)

    async def set_status(self, appointment: Appointment, status: Status, at: datetime) -> Appointment:
        self.work.going_on()
        stored = self.state.appointments.get(appointment.id)
        assert stored is not None  # as the store's UPDATE … RETURNING
        return self._keep(replace(stored, status=status, version=stored.version + 1, updated_at=_utc(at)))

    async def move(self, appointment: Appointment, during: Interval, at: datetime) -> Appointment:
        self.work.going_on()
        stored = self.state.appointments.get(appointment.id)
        assert stored is not None  # as the store's UPDATE … RETURNING
        return self._keep(replace(stored, during=during, version=stored.version + 1, updated_at=_utc(at)))

    async def busy(self, practitioner_id: uuid.UUID, window: Interval) -> list[Interval]:
        self.work.going_on()
        return sorted(
            a.during
            for a in self.state.appointments.values()
            if a.practitioner_id == practitioner_id and a.status in HOLDING and a.during.overlaps(window)
        )

    async def of_patient(self, patient_id: uuid.UUID, limit: int) -> list[Appointment]:
        self.work.going_on()
        found = [a for a in self.state.appointments.values() if a.patient_id == patient_id]
        return sorted(found, key=lambda a: a.start, reverse=True)[:limit]

    async def of_practitioner(self, practitioner_id: uuid.UUID, window: Interval, limit: int) -> list[Appointment]:
        self.work.going_on()
        found = [
            a
            for a in self.state.appointments.values()
            if a.practitioner_id == practitioner_id and window.start <= a.start < window.end
        ]
        return sorted(found, key=lambda a: (a.start, a.id))[:limit]

    async def colliding(self, who: str, wanted: NewAppointment | Appointment) -> Appointment | None:
        self.work.going_on()
        hit = _holding(self.state, who, wanted, wanted.during)
        return hit[0] if hit else None


class FakeWaitlist:
    def __init__(self, work: FakeSchedulingWork, state: SchedulingState) -> None:
        self.work, self.state = work, state

    def _open_twin(self, e: WaitlistEntry) -> bool:
        """Whether another open entry has ``e``'s patient, practitioner and service."""
        return any(
            o.id != e.id
            and o.status in OPEN
            and (o.patient_id, o.practitioner_id, o.service) == (e.patient_id, e.practitioner_id, e.service)
            for o in self.state.waitlist.values()
        )

    async def add(
        self,
        *,
        entry_id: uuid.UUID,
        patient_id: uuid.UUID,
        practitioner_id: uuid.UUID,
        service: str,
        created_by: uuid.UUID,
        at: datetime,
    ) -> WaitlistEntry:
        self.work.going_on()
        entry = WaitlistEntry(entry_id, patient_id, practitioner_id, service, WaitlistStatus.WAITING, None, _utc(at))
        if entry_id in self.state.waitlist or self._open_twin(entry):  # the store maps either unique violation
            self.work.refuse(WaitlistDuplicateError())
        self.state.waitlist[entry_id] = entry
        return entry

    async def get(self, entry_id: uuid.UUID, *, lock: bool = False) -> WaitlistEntry | None:
        self.work.going_on()
        return self.state.waitlist.get(entry_id)

    async def of_patient(self, patient_id: uuid.UUID) -> list[WaitlistEntry]:
        self.work.going_on()
        found = [e for e in self.state.waitlist.values() if e.patient_id == patient_id]
        return sorted(found, key=lambda e: e.created_at, reverse=True)[:100]

    async def waiting_for(self, practitioner_id: uuid.UUID) -> list[WaitlistEntry]:
        """Units run one at a time here: no entry is ever held by another."""
        self.work.going_on()
        found = [
            e
            for e in self.state.waitlist.values()
            if e.practitioner_id == practitioner_id and e.status is WaitlistStatus.WAITING
        ]
        return sorted(found, key=lambda e: (e.created_at, e.id))[:50]

    async def set_status(self, entry_id: uuid.UUID, status: WaitlistStatus, offer: Offer | None = None) -> None:
        self.work.going_on()
        stored = self.state.waitlist.get(entry_id)
        if stored is None:
            return  # an UPDATE of no row
        changed = replace(stored, status=status, offer=offer and Offer(offer.slot, _utc(offer.expires_at)))
        if (status is WaitlistStatus.OFFERED) != (offer is not None):
            self.work.refuse(asyncpg.CheckViolationError("an entry holds an offer exactly while it is offered"))
        if offer is not None:
            self.work.as_range(offer.slot)
        if status in OPEN and self._open_twin(changed):
            self.work.refuse(asyncpg.UniqueViolationError("the patient has an open entry for this already"))
        self.state.waitlist[entry_id] = changed


class FakeSchedulingWork(FakeWork):
    def __init__(self, state: SchedulingState, clock: Clock) -> None:
        super().__init__(clock)
        self.appointments = FakeAppointments(self, state)
        self.waitlist = FakeWaitlist(self, state)
        self.patients = FakeKnown(state.known)

    def as_range(self, i: Interval) -> None:
        """Refuse what is no range at all, as PostgreSQL refuses to make it one."""
        if i.start > i.end:
            self.refuse(asyncpg.DataError("range lower bound must be less than or equal to range upper bound"))


class FakeScheduling(FakeUnits[SchedulingState, FakeSchedulingWork]):
    """Scheduling's units of work in memory."""

    def __init__(self, clock: Clock = utc_now, state: SchedulingState | None = None) -> None:
        super().__init__(state or SchedulingState(), FakeSchedulingWork, clock)
