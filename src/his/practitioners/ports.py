"""What the practitioners' use cases work through: the directory of profiles, shifts, leave
requests, the time scheduling has booked, and a practitioner's calendar, inside a unit of work
(``his.kernel.ports``). The store implements them on PostgreSQL (``his.practitioners.store``);
``his.testing.practitioners`` in memory, for unit tests. Both pass the same contract tests
(``tests/integration/test_practitioners_contract.py``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

from his.kernel.intervals import Interval
from his.kernel.ports import Units, Work
from his.practitioners.domain import Calendar, LeaveRequest, LeaveStatus, Practitioner, Shift


class Profiles(Protocol):
    """The practitioner directory."""

    async def add(self, *, full_name: str, specialty: str, user_id: uuid.UUID | None, at: datetime) -> Practitioner:
        """A new practitioner, created ``at``; ``AccountLinkedError`` when ``user_id`` is
        already another practitioner's."""
        ...

    async def get(self, practitioner_id: uuid.UUID) -> Practitioner | None:
        """The practitioner, if there is one."""
        ...

    async def find(self, *, specialty: str | None, limit: int) -> list[Practitioner]:
        """Practitioners by name (ties by id), of one specialty or of all."""
        ...


class Shifts(Protocol):
    """Shifts: one practitioner's never overlap (back to back is fine)."""

    async def add(self, practitioner_id: uuid.UUID, during: Interval, actor: uuid.UUID) -> Shift:
        """A new shift of a practitioner, given by ``actor``. If it overlaps one of theirs it is
        not added: ``ShiftOverlapError`` names the earliest shift it overlaps, and the unit of
        work goes on."""
        ...

    async def overlapping(self, practitioner_id: uuid.UUID, window: Interval) -> list[Shift]:
        """The practitioner's shifts overlapping ``window``, earliest first."""
        ...


class LeaveRequests(Protocol):
    """Leave requests and their decisions."""

    async def add(self, practitioner_id: uuid.UUID, during: Interval, actor: uuid.UUID, at: datetime) -> LeaveRequest:
        """A new leave request of a practitioner, made by ``actor`` at ``at``: ``requested``."""
        ...

    async def get(self, practitioner_id: uuid.UUID, leave_id: uuid.UUID, *, lock: bool = False) -> LeaveRequest | None:
        """The practitioner's leave request (None for another's); ``lock`` holds it until the
        unit of work ends."""
        ...

    async def decide(self, leave: LeaveRequest, status: LeaveStatus, actor: uuid.UUID, at: datetime) -> LeaveRequest:
        """The leave request moved to ``status`` by ``actor``, decided ``at``."""
        ...

    async def of(self, practitioner_id: uuid.UUID, *, limit: int = 200) -> list[LeaveRequest]:
        """The practitioner's leave requests, the latest start first."""
        ...


class BookedTime(Protocol):
    """The time each appointment takes from a practitioner, as scheduling announced it."""

    async def hold(self, appointment_id: uuid.UUID, practitioner_id: uuid.UUID, during: Interval) -> None:
        """Remember the appointment's time, or move it: one hold per appointment."""
        ...

    async def release(self, appointment_id: uuid.UUID) -> None:
        """Forget the appointment's time (nothing if there is none)."""
        ...


class Calendars(Protocol):
    """What a practitioner's availability is computed from."""

    async def of(self, practitioner_id: uuid.UUID, window: Interval, *, booked: bool) -> Calendar | None:
        """The practitioner's shifts, approved leave and (if ``booked``, else none) booked time
        overlapping ``window``, read at one moment; None if there is no such practitioner."""
        ...


class PractitionersWork(Work, Protocol):
    """A unit of work of the practitioners service."""

    @property
    def profiles(self) -> Profiles: ...

    @property
    def shifts(self) -> Shifts: ...

    @property
    def leave(self) -> LeaveRequests: ...

    @property
    def booked(self) -> BookedTime: ...

    @property
    def calendars(self) -> Calendars: ...


#: Where the practitioners' units of work come from.
PractitionersUnits = Units[PractitionersWork]
