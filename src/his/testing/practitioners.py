"""The practitioners' ports in memory (``his.practitioners.ports``).

What the tables enforce, the fakes enforce too: one practitioner per user account (as the unique
key: ``AccountLinkedError``), one person's shifts never overlapping (as the exclusion constraint:
``ShiftOverlapError`` naming the earliest shift hit), shifts and leave only of a practitioner
there is (as the foreign keys) and a name of 1 to 200 characters (as the check): those last two
raise ``ValueError``, which no use case handles, as none meets the database's errors for them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime

from his.kernel.clock import Clock, utc_now
from his.kernel.intervals import Interval
from his.practitioners.domain import (
    AccountLinkedError,
    Calendar,
    LeaveRequest,
    LeaveStatus,
    Practitioner,
    Shift,
    ShiftOverlapError,
)
from his.testing.units import FakeUnits, FakeWork


@dataclass
class PractitionersState:
    practitioners: dict[uuid.UUID, Practitioner] = field(default_factory=dict)
    #: Shifts by id, with the practitioner whose they are.
    shifts: dict[uuid.UUID, tuple[uuid.UUID, Shift]] = field(default_factory=dict)
    #: Leave requests by id, with the practitioner whose they are.
    leave: dict[uuid.UUID, tuple[uuid.UUID, LeaveRequest]] = field(default_factory=dict)
    #: The time each appointment takes, by appointment: its practitioner and when.
    booked: dict[uuid.UUID, tuple[uuid.UUID, Interval]] = field(default_factory=dict)

    def known(self, practitioner_id: uuid.UUID) -> None:
        if practitioner_id not in self.practitioners:
            raise ValueError(f"no practitioner {practitioner_id}")  # the foreign key


class FakeProfiles:
    def __init__(self, state: PractitionersState) -> None:
        self.state = state

    async def add(self, *, full_name: str, specialty: str, user_id: uuid.UUID | None, at: datetime) -> Practitioner:
        if not 1 <= len(full_name) <= 200:
            raise ValueError("a name of 1 to 200 characters")  # the check
        if user_id is not None and any(p.user_id == user_id for p in self.state.practitioners.values()):
            raise AccountLinkedError(str(user_id))
        added = Practitioner(uuid.uuid4(), full_name, specialty, user_id, at)
        self.state.practitioners[added.id] = added
        return added

    async def get(self, practitioner_id: uuid.UUID) -> Practitioner | None:
        return self.state.practitioners.get(practitioner_id)

    async def find(self, *, specialty: str | None, limit: int) -> list[Practitioner]:
        found = [p for p in self.state.practitioners.values() if specialty is None or p.specialty == specialty]
        return sorted(found, key=lambda p: (p.full_name, p.id))[:limit]


class FakeShifts:
    def __init__(self, state: PractitionersState) -> None:
        self.state = state

    async def add(self, practitioner_id: uuid.UUID, during: Interval, actor: uuid.UUID) -> Shift:
        self.state.known(practitioner_id)
        hit = await self.overlapping(practitioner_id, during)
        if hit:
            raise ShiftOverlapError(hit[0])
        shift = Shift(uuid.uuid4(), during)
        self.state.shifts[shift.id] = (practitioner_id, shift)
        return shift

    async def overlapping(self, practitioner_id: uuid.UUID, window: Interval) -> list[Shift]:
        found = [s for pid, s in self.state.shifts.values() if pid == practitioner_id and s.during.overlaps(window)]
        return sorted(found, key=lambda s: s.during)


class FakeLeaveRequests:
    def __init__(self, state: PractitionersState) -> None:
        self.state = state

    async def add(self, practitioner_id: uuid.UUID, during: Interval, actor: uuid.UUID, at: datetime) -> LeaveRequest:
        self.state.known(practitioner_id)
        leave = LeaveRequest(uuid.uuid4(), LeaveStatus.REQUESTED, during, at, None)
        self.state.leave[leave.id] = (practitioner_id, leave)
        return leave

    async def get(self, practitioner_id: uuid.UUID, leave_id: uuid.UUID, *, lock: bool = False) -> LeaveRequest | None:
        pid, leave = self.state.leave.get(leave_id, (None, None))
        return leave if pid == practitioner_id else None

    async def decide(self, leave: LeaveRequest, status: LeaveStatus, actor: uuid.UUID, at: datetime) -> LeaveRequest:
        pid, stored = self.state.leave[leave.id]
        decided = replace(stored, status=status, decided_at=at)
        self.state.leave[leave.id] = (pid, decided)
        return decided

    async def of(self, practitioner_id: uuid.UUID, *, limit: int = 200) -> list[LeaveRequest]:
        found = [x for pid, x in self.state.leave.values() if pid == practitioner_id]
        return sorted(found, key=lambda x: x.during.start, reverse=True)[:limit]


class FakeBookedTime:
    def __init__(self, state: PractitionersState) -> None:
        self.state = state

    async def hold(self, appointment_id: uuid.UUID, practitioner_id: uuid.UUID, during: Interval) -> None:
        """A hold moved keeps its practitioner (as the table's upsert, which moves only the time)."""
        held = self.state.booked.get(appointment_id)
        self.state.booked[appointment_id] = (held[0] if held else practitioner_id, during)

    async def release(self, appointment_id: uuid.UUID) -> None:
        self.state.booked.pop(appointment_id, None)


class FakeCalendars:
    def __init__(self, state: PractitionersState) -> None:
        self.state = state

    async def of(self, practitioner_id: uuid.UUID, window: Interval, *, booked: bool) -> Calendar | None:
        if practitioner_id not in self.state.practitioners:
            return None

        def of_theirs(spans: list[tuple[uuid.UUID, Interval]]) -> list[Interval]:
            return sorted(i for pid, i in spans if pid == practitioner_id and i.overlaps(window))

        return Calendar(
            of_theirs([(pid, s.during) for pid, s in self.state.shifts.values()]),
            of_theirs([(pid, x.during) for pid, x in self.state.leave.values() if x.status is LeaveStatus.APPROVED]),
            of_theirs(list(self.state.booked.values())) if booked else [],
        )


class FakePractitionersWork(FakeWork):
    def __init__(self, state: PractitionersState, clock: Clock) -> None:
        super().__init__(clock)
        self.profiles = FakeProfiles(state)
        self.shifts = FakeShifts(state)
        self.leave = FakeLeaveRequests(state)
        self.booked = FakeBookedTime(state)
        self.calendars = FakeCalendars(state)


class FakePractitioners(FakeUnits[PractitionersState, FakePractitionersWork]):
    """The practitioners' units of work in memory."""

    def __init__(self, clock: Clock = utc_now, state: PractitionersState | None = None) -> None:
        super().__init__(state or PractitionersState(), FakePractitionersWork, clock)
