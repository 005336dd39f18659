"""Use cases of the practitioners service: one function per command or consumed event, and the
``Practitioners`` use cases its routes call. They work through the service's ports
(``his.practitioners.ports``): its units of work, on PostgreSQL in the hospital and in memory
in unit tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from his.events.practitioners import LeaveApproved, LeaveCancelled, PractitionerRegistered, ShiftScheduled
from his.events.scheduling import AppointmentBooked, AppointmentCancelled, AppointmentRescheduled
from his.kernel.consumer import PermanentError
from his.kernel.db import UnitOfWork, retry_aborted
from his.kernel.events import Envelope, Event
from his.kernel.intervals import Interval
from his.kernel.problems import ProblemError
from his.kernel.security import Principal
from his.practitioners import policy
from his.practitioners.domain import (
    SPECIALTIES,
    AccountLinkedError,
    InvalidScheduleError,
    InvalidTransitionError,
    LeaveAction,
    LeaveRequest,
    LeaveStatus,
    Practitioner,
    Shift,
    ShiftOverlapError,
    availability,
    check_leave,
    check_shift,
    check_window,
    transition,
)
from his.practitioners.policy import Operation
from his.practitioners.ports import Calendars, PractitionersUnits, PractitionersWork
from his.practitioners.store import PractitionersUnit


class NotFoundError(LookupError):
    """No such practitioner (or leave request of that practitioner)."""


async def register(uow: PractitionersWork, full_name: str, specialty: str, user_id: uuid.UUID | None) -> Practitioner:
    name = full_name.strip()
    if not name:
        raise InvalidScheduleError("full_name must not be blank")
    if specialty not in SPECIALTIES:
        raise InvalidScheduleError(f"unknown specialty {specialty!r}; see /api/practitioners/specialties")
    added = await uow.profiles.add(full_name=name, specialty=specialty, user_id=user_id, at=uow.clock())
    uow.add(
        PractitionerRegistered(practitioner_id=added.id, specialty=specialty, account_id=user_id), aggregate_id=added.id
    )
    return added


async def add_shift(uow: PractitionersWork, pid: uuid.UUID, start: datetime, end: datetime, actor: uuid.UUID) -> Shift:
    during = check_shift(start, end, uow.clock())
    shift = await uow.shifts.add(pid, during, actor)
    uow.add(ShiftScheduled(shift_id=shift.id, practitioner_id=pid, start=start, end=end), aggregate_id=pid)
    return shift


async def request_leave(
    uow: PractitionersWork, pid: uuid.UUID, start: datetime, end: datetime, actor: uuid.UUID
) -> LeaveRequest:
    now = uow.clock()
    return await uow.leave.add(pid, check_leave(start, end, now), actor, now)


async def decide_leave(
    uow: PractitionersWork, pid: uuid.UUID, lid: uuid.UUID, action: LeaveAction, actor: uuid.UUID
) -> LeaveStatus:
    leave = await uow.leave.get(pid, lid, lock=True)
    if leave is None:
        raise NotFoundError("leave request not found")
    before = leave.status
    after = transition(before, action)
    await uow.leave.decide(leave, after, actor, uow.clock())
    if after is LeaveStatus.APPROVED:
        r = leave.during
        uow.add(LeaveApproved(leave_id=lid, practitioner_id=pid, start=r.start, end=r.end), aggregate_id=pid)
    elif before is LeaveStatus.APPROVED and after is LeaveStatus.CANCELLED:
        uow.add(LeaveCancelled(leave_id=lid, practitioner_id=pid), aggregate_id=pid)
    return after


async def working_time(calendars: Calendars, pid: uuid.UUID, window: Interval) -> list[Interval] | None:
    """Shifts minus approved leave: when the practitioner can be booked at all (None: no such practitioner)."""
    cal = await calendars.of(pid, window, booked=False)
    return None if cal is None else availability(cal.shifts, cal.leave, [], window)


async def free_time(calendars: Calendars, pid: uuid.UUID, window: Interval) -> list[Interval] | None:
    """Availability: shifts minus approved leave minus booked time (as scheduling has announced it)."""
    cal = await calendars.of(pid, window, booked=True)
    return None if cal is None else availability(cal.shifts, cal.leave, cal.booked, window)


async def appointment_changed(uow: PractitionersWork, env: Envelope, ev: Event) -> None:
    """Booked or moved appointments take time; cancelled or missed ones give it back."""
    if isinstance(ev, (AppointmentBooked, AppointmentRescheduled)):
        await uow.booked.hold(ev.appointment_id, ev.practitioner_id, Interval(ev.start, ev.end))
    elif isinstance(ev, AppointmentCancelled):
        await uow.booked.release(ev.appointment_id)
    else:
        raise PermanentError(f"unexpected event {env.type}")


async def on_appointment_changed(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
    """``appointment_changed`` in the unit of work the consumer loop opened."""
    await appointment_changed(PractitionersUnit(uow), env, ev)


@dataclass(frozen=True)
class NewPractitioner:
    full_name: str
    specialty: str
    user_id: uuid.UUID | None = None


class Practitioners:
    """The use cases of the directory, shifts, leave and availability, each with its caller and
    decided through ``his.practitioners.policy`` (a refusal is a 403 naming what is allowed)."""

    def __init__(self, units: PractitionersUnits) -> None:
        self.units = units

    async def register(self, who: Principal, new: NewPractitioner) -> uuid.UUID:
        """Create a profile (ADMIN); publishes ``PractitionerRegistered``. 409 when the user account
        is linked to another practitioner."""
        allow(who, Operation.REGISTER)
        try:
            async with self.units.uow() as uow:
                return (await register(uow, new.full_name, new.specialty, new.user_id)).id
        except InvalidScheduleError as exc:
            raise ProblemError(422, str(exc)) from None
        except AccountLinkedError:
            raise ProblemError(409, "this user account is already linked to a practitioner") from None

    async def directory(self, specialty: str | None, limit: int) -> list[Practitioner]:
        async with self.units.read() as unit:
            return await unit.profiles.find(specialty=specialty, limit=limit)

    async def profile(self, pid: uuid.UUID) -> Practitioner:
        """The practitioner, or 404."""
        async with self.units.read() as unit:
            found = await unit.profiles.get(pid)
        if found is None:
            raise ProblemError(404, "practitioner not found")
        return found

    async def add_shift(self, who: Principal, pid: uuid.UUID, start: datetime, end: datetime) -> uuid.UUID:
        """Give a shift; publishes ``ShiftScheduled``. 409 names the shift it would overlap."""
        allow(who, Operation.ADD_SHIFT, await self.profile(pid))

        async def attempt() -> uuid.UUID:
            async with self.units.uow() as uow:
                return (await add_shift(uow, pid, start, end, uuid.UUID(who.subject))).id

        try:
            return await retry_aborted(attempt)  # overlapping shifts added at once can deadlock: see there
        except InvalidScheduleError as exc:
            raise ProblemError(422, str(exc)) from None
        except ShiftOverlapError as exc:
            raise ProblemError(
                409, "the shift overlaps another shift of this practitioner", conflict=conflict(exc.other)
            ) from None

    async def shifts(self, who: Principal, pid: uuid.UUID, start: datetime, end: datetime) -> list[Shift]:
        """Shifts overlapping a window of at most 31 days."""
        allow(who, Operation.READ_SHIFTS, await self.profile(pid))
        span = window(start, end)
        async with self.units.read() as unit:
            return await unit.shifts.overlapping(pid, span)

    async def request_leave(self, who: Principal, pid: uuid.UUID, start: datetime, end: datetime) -> uuid.UUID:
        """Request leave; it starts as ``requested``."""
        allow(who, Operation.REQUEST_LEAVE, await self.profile(pid))
        try:
            async with self.units.uow() as uow:
                return (await request_leave(uow, pid, start, end, uuid.UUID(who.subject))).id
        except InvalidScheduleError as exc:
            raise ProblemError(422, str(exc)) from None

    async def leave_requests(self, who: Principal, pid: uuid.UUID) -> list[LeaveRequest]:
        """Leave requests of one practitioner, newest first."""
        allow(who, Operation.READ_LEAVE, await self.profile(pid))
        async with self.units.read() as unit:
            return await unit.leave.of(pid)

    async def decide_leave(self, who: Principal, pid: uuid.UUID, lid: uuid.UUID, action: LeaveAction) -> LeaveStatus:
        """Approve, reject or cancel a leave request; 409 when its state does not allow it."""
        op = Operation.CANCEL_LEAVE if action is LeaveAction.CANCEL else Operation.DECIDE_LEAVE
        allow(who, op, await self.profile(pid), action=action.value)
        try:
            async with self.units.uow() as uow:
                return await decide_leave(uow, pid, lid, action, uuid.UUID(who.subject))
        except NotFoundError:
            raise ProblemError(404, "leave request not found") from None
        except InvalidTransitionError as exc:
            raise ProblemError(409, str(exc)) from None

    async def availability(self, who: Principal, pid: uuid.UUID, start: datetime, end: datetime) -> list[Interval]:
        """Free time in a window of at most 31 days: shifts minus approved leave minus booked time."""
        allow(who, Operation.READ_AVAILABILITY)
        await self.profile(pid)
        span = window(start, end)
        async with self.units.read() as unit:
            free = await free_time(unit.calendars, pid, span)
        if free is None:
            raise ProblemError(404, "practitioner not found")
        return free


def conflict(shift: Shift | None) -> dict[str, str] | None:
    """The shift a new one collides with, as the 409 names it."""
    if shift is None:
        return None
    return {"id": str(shift.id), "start": shift.during.start.isoformat(), "end": shift.during.end.isoformat()}


def allow(who: Principal, op: Operation, of: Practitioner | None = None, *, action: str = "") -> None:
    """Raise the policy's refusal (403) unless the caller may perform ``op``."""
    if not policy.may(op, who.roles, themself=of is not None and of.is_user(who.subject)):
        raise ProblemError(403, policy.RULES[op].refusal.format(action=action))


def window(start: datetime, end: datetime) -> Interval:
    try:
        return check_window(start, end)
    except InvalidScheduleError as exc:
        raise ProblemError(422, str(exc)) from None
