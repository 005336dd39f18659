"""Use cases of the practitioners service: one function per command or consumed event, and the
``Practitioners`` use cases its routes call."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from his.events.practitioners import LeaveApproved, LeaveCancelled, PractitionerRegistered, ShiftScheduled
from his.events.scheduling import AppointmentBooked, AppointmentCancelled, AppointmentRescheduled
from his.kernel.consumer import PermanentError
from his.kernel.db import Connection, Database, UnitOfWork, retry_aborted
from his.kernel.events import Envelope, Event
from his.kernel.intervals import Interval
from his.kernel.problems import ProblemError
from his.kernel.security import Principal
from his.practitioners import policy, store
from his.practitioners.domain import (
    SPECIALTIES,
    InvalidScheduleError,
    InvalidTransitionError,
    LeaveAction,
    LeaveRequest,
    LeaveStatus,
    Practitioner,
    Shift,
    availability,
    check_leave,
    check_shift,
    check_window,
    transition,
)
from his.practitioners.policy import Operation


class NotFoundError(LookupError):
    """No such practitioner (or leave request of that practitioner)."""


async def register(uow: UnitOfWork, full_name: str, specialty: str, user_id: uuid.UUID | None) -> uuid.UUID:
    name = full_name.strip()
    if not name:
        raise InvalidScheduleError("full_name must not be blank")
    if specialty not in SPECIALTIES:
        raise InvalidScheduleError(f"unknown specialty {specialty!r}; see /api/practitioners/specialties")
    pid = await store.insert_practitioner(uow.conn, name, specialty, user_id)
    uow.add(PractitionerRegistered(practitioner_id=pid, specialty=specialty, account_id=user_id), aggregate_id=pid)
    return pid


async def add_shift(uow: UnitOfWork, pid: uuid.UUID, start: datetime, end: datetime, actor: uuid.UUID) -> uuid.UUID:
    during = check_shift(start, end, uow.clock())
    sid = await store.insert_shift(uow.conn, pid, during, actor)
    uow.add(ShiftScheduled(shift_id=sid, practitioner_id=pid, start=start, end=end), aggregate_id=pid)
    return sid


async def request_leave(uow: UnitOfWork, pid: uuid.UUID, start: datetime, end: datetime, actor: uuid.UUID) -> uuid.UUID:
    return await store.insert_leave(uow.conn, pid, check_leave(start, end, uow.clock()), actor)


async def decide_leave(
    uow: UnitOfWork, pid: uuid.UUID, lid: uuid.UUID, action: LeaveAction, actor: uuid.UUID
) -> LeaveStatus:
    leave = await store.leave_for_update(uow.conn, pid, lid)
    if leave is None:
        raise NotFoundError("leave request not found")
    before = leave.status
    after = transition(before, action)
    await store.set_leave_status(uow.conn, lid, after, actor)
    if after is LeaveStatus.APPROVED:
        r = leave.during
        uow.add(LeaveApproved(leave_id=lid, practitioner_id=pid, start=r.start, end=r.end), aggregate_id=pid)
    elif before is LeaveStatus.APPROVED and after is LeaveStatus.CANCELLED:
        uow.add(LeaveCancelled(leave_id=lid, practitioner_id=pid), aggregate_id=pid)
    return after


async def working_time(conn: Connection, pid: uuid.UUID, window: Interval) -> list[Interval] | None:
    """Shifts minus approved leave: when the practitioner can be booked at all (None: no such practitioner)."""
    cal = await store.calendar(conn, pid, window, booked=False)
    return None if cal is None else availability(cal.shifts, cal.leave, [], window)


async def free_time(conn: Connection, pid: uuid.UUID, window: Interval) -> list[Interval] | None:
    """Availability: shifts minus approved leave minus booked time (as scheduling has announced it)."""
    cal = await store.calendar(conn, pid, window, booked=True)
    return None if cal is None else availability(cal.shifts, cal.leave, cal.booked, window)


async def on_appointment_changed(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
    """Booked or moved appointments take time; cancelled or missed ones give it back."""
    if isinstance(ev, (AppointmentBooked, AppointmentRescheduled)):
        await store.hold_booked(uow.conn, ev.appointment_id, ev.practitioner_id, Interval(ev.start, ev.end))
    elif isinstance(ev, AppointmentCancelled):
        await store.release_booked(uow.conn, ev.appointment_id)
    else:
        raise PermanentError(f"unexpected event {env.type}")


@dataclass(frozen=True)
class NewPractitioner:
    full_name: str
    specialty: str
    user_id: uuid.UUID | None = None


class Practitioners:
    """The use cases of the directory, shifts, leave and availability, each with its caller and
    decided through ``his.practitioners.policy`` (a refusal is a 403 naming what is allowed)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def register(self, who: Principal, new: NewPractitioner) -> uuid.UUID:
        """Create a profile (ADMIN); publishes ``PractitionerRegistered``. 409 when the user account
        is linked to another practitioner."""
        allow(who, Operation.REGISTER)
        try:
            async with self.db.uow() as uow:
                return await register(uow, new.full_name, new.specialty, new.user_id)
        except InvalidScheduleError as exc:
            raise ProblemError(422, str(exc)) from None
        except store.AccountLinkedError:
            raise ProblemError(409, "this user account is already linked to a practitioner") from None

    async def directory(self, specialty: str | None, limit: int) -> list[Practitioner]:
        async with self.db.pool.acquire() as conn:
            return await store.list_practitioners(conn, specialty, limit)

    async def profile(self, pid: uuid.UUID) -> Practitioner:
        """The practitioner, or 404."""
        async with self.db.pool.acquire() as conn:
            found = await store.get_practitioner(conn, pid)
        if found is None:
            raise ProblemError(404, "practitioner not found")
        return found

    async def add_shift(self, who: Principal, pid: uuid.UUID, start: datetime, end: datetime) -> uuid.UUID:
        """Give a shift; publishes ``ShiftScheduled``. 409 names the shift it would overlap."""
        allow(who, Operation.ADD_SHIFT, await self.profile(pid))

        async def attempt() -> uuid.UUID:
            async with self.db.uow() as uow:
                return await add_shift(uow, pid, start, end, uuid.UUID(who.subject))

        try:
            return await retry_aborted(attempt)  # overlapping shifts added at once can deadlock: see there
        except InvalidScheduleError as exc:
            raise ProblemError(422, str(exc)) from None
        except store.ShiftOverlapError as exc:
            raise ProblemError(
                409, "the shift overlaps another shift of this practitioner", conflict=exc.other
            ) from None

    async def shifts(self, who: Principal, pid: uuid.UUID, start: datetime, end: datetime) -> list[Shift]:
        """Shifts overlapping a window of at most 31 days."""
        allow(who, Operation.READ_SHIFTS, await self.profile(pid))
        span = window(start, end)
        async with self.db.pool.acquire() as conn:
            return await store.shifts(conn, pid, span)

    async def request_leave(self, who: Principal, pid: uuid.UUID, start: datetime, end: datetime) -> uuid.UUID:
        """Request leave; it starts as ``requested``."""
        allow(who, Operation.REQUEST_LEAVE, await self.profile(pid))
        try:
            async with self.db.uow() as uow:
                return await request_leave(uow, pid, start, end, uuid.UUID(who.subject))
        except InvalidScheduleError as exc:
            raise ProblemError(422, str(exc)) from None

    async def leave_requests(self, who: Principal, pid: uuid.UUID) -> list[LeaveRequest]:
        """Leave requests of one practitioner, newest first."""
        allow(who, Operation.READ_LEAVE, await self.profile(pid))
        async with self.db.pool.acquire() as conn:
            return await store.leave_requests(conn, pid)

    async def decide_leave(self, who: Principal, pid: uuid.UUID, lid: uuid.UUID, action: LeaveAction) -> LeaveStatus:
        """Approve, reject or cancel a leave request; 409 when its state does not allow it."""
        op = Operation.CANCEL_LEAVE if action is LeaveAction.CANCEL else Operation.DECIDE_LEAVE
        allow(who, op, await self.profile(pid), action=action.value)
        try:
            async with self.db.uow() as uow:
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
        async with self.db.pool.acquire() as conn:
            free = await free_time(conn, pid, span)
        if free is None:
            raise ProblemError(404, "practitioner not found")
        return free


def allow(who: Principal, op: Operation, of: Practitioner | None = None, *, action: str = "") -> None:
    """Raise the policy's refusal (403) unless the caller may perform ``op``."""
    if not policy.may(op, who.roles, themself=of is not None and of.is_user(who.subject)):
        raise ProblemError(403, policy.RULES[op].refusal.format(action=action))


def window(start: datetime, end: datetime) -> Interval:
    try:
        return check_window(start, end)
    except InvalidScheduleError as exc:
        raise ProblemError(422, str(exc)) from None
