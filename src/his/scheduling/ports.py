"""What scheduling's use cases work through: its appointments, its waitlist and its copy of the
patient directory, inside a unit of work (``his.kernel.ports``). The store implements them on
PostgreSQL (``his.scheduling.store``); ``his.testing.scheduling`` in memory, for unit tests. Both
pass the same contract tests (``tests/integration/test_scheduling_contract.py``).

And what scheduling needs from other services: a practitioner's working time, the practitioner
directory (for the first free slots across practitioners) and the patient directory. Their
Protocols, gRPC adapters and in-memory fakes live with every other service client in
``his.clients``; the fakes serve tests and `his bench` baselines.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

from his.clients.patients import FakePatients, PatientLookup, PatientRef
from his.clients.practitioners import Calendar, FakeCalendar, FakePractitioners, PractitionerRoster
from his.clients.replica import Known
from his.kernel.intervals import Interval
from his.kernel.ports import Units, Work
from his.scheduling.domain import Appointment, NewAppointment, Offer, Status, WaitlistEntry, WaitlistStatus

__all__ = [
    "Appointments",
    "Calendar",
    "FakeCalendar",
    "FakePatients",
    "FakePractitioners",
    "PatientLookup",
    "PatientRef",
    "PractitionerRoster",
    "SchedulingUnits",
    "SchedulingWork",
    "Waitlist",
]


class Appointments(Protocol):
    """Appointments. Among those that hold time (booked, checked in, completed: ``HOLDING``) no
    practitioner and no patient has two that overlap; back to back is fine.

    A write that would break that is refused with ``CollisionError`` saying whose time it is
    (``who``: the practitioner's is named when both are), not yet which appointment: the unit of
    work cannot go on after it (PostgreSQL has aborted its transaction) and ends with the error;
    ``colliding`` then names the appointment, in a unit of its own.
    """

    async def add(self, new: NewAppointment, at: datetime) -> Appointment:
        """The appointment booked, as stored: version 1, created and updated ``at``."""
        ...

    async def get(self, appointment_id: uuid.UUID, *, lock: bool = False) -> Appointment | None:
        """The appointment; ``lock`` holds it until the unit ends."""
        ...

    async def set_status(self, appointment: Appointment, status: Status, at: datetime) -> Appointment:
        """The appointment moved to ``status``, its version one higher, updated ``at``."""
        ...

    async def move(self, appointment: Appointment, during: Interval, at: datetime) -> Appointment:
        """The appointment at its new times, its version one higher, updated ``at``."""
        ...

    async def busy(self, practitioner_id: uuid.UUID, window: Interval) -> list[Interval]:
        """The times of the practitioner's appointments that hold time and overlap ``window``,
        in no particular order."""
        ...

    async def of_patient(self, patient_id: uuid.UUID, limit: int) -> list[Appointment]:
        """The patient's appointments, in every state, the latest start first."""
        ...

    async def of_practitioner(self, practitioner_id: uuid.UUID, window: Interval, limit: int) -> list[Appointment]:
        """The practitioner's appointments, in every state, that start within ``window`` (from its
        start, up to but not including its end; one that started earlier and runs into it is not
        among them), the earliest start first and, at one start, by id; at most ``limit``."""
        ...

    async def colliding(self, who: str, wanted: NewAppointment | Appointment) -> Appointment | None:
        """The earliest appointment holding time of ``wanted``'s practitioner or patient (``who``)
        that overlaps ``wanted.during``, other than ``wanted`` itself; None if there is none (any
        more)."""
        ...


class Waitlist(Protocol):
    """Patients waiting for a practitioner and a service. A patient has at most one open entry
    (waiting or offered) per practitioner and service; an entry holds an offer exactly while it
    is offered."""

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
        """A new entry, waiting since ``at``. ``WaitlistDuplicateError`` when the patient has an
        open one for this practitioner and service already; the unit of work cannot go on after it."""
        ...

    async def get(self, entry_id: uuid.UUID, *, lock: bool = False) -> WaitlistEntry | None:
        """The entry; ``lock`` holds it until the unit ends."""
        ...

    async def of_patient(self, patient_id: uuid.UUID) -> list[WaitlistEntry]:
        """The patient's entries, in every state, the newest first (at most 100)."""
        ...

    async def waiting_for(self, practitioner_id: uuid.UUID) -> list[WaitlistEntry]:
        """Entries waiting for the practitioner, first come first served (by ``created_at``, then
        id), at most 50. They are locked until the unit ends, and those another unit holds are
        skipped, so two offers never race for one entry."""
        ...

    async def set_status(self, entry_id: uuid.UUID, status: WaitlistStatus, offer: Offer | None = None) -> None:
        """The entry moved to ``status``, with ``offer`` (which it holds only while offered)."""
        ...


class SchedulingWork(Work, Protocol):
    """A unit of work of scheduling."""

    @property
    def appointments(self) -> Appointments: ...

    @property
    def waitlist(self) -> Waitlist: ...

    @property
    def patients(self) -> Known: ...


#: Where scheduling's units of work come from.
SchedulingUnits = Units[SchedulingWork]
