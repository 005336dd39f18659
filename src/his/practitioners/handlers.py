"""Use cases of the practitioners service: one function per command."""

from __future__ import annotations

import uuid
from datetime import datetime

from his.events.practitioners import LeaveApproved, LeaveCancelled, PractitionerRegistered, ShiftScheduled
from his.events.scheduling import AppointmentBooked, AppointmentCancelled, AppointmentRescheduled
from his.kernel.consumer import PermanentError
from his.kernel.db import Connection, UnitOfWork
from his.kernel.events import Envelope, Event
from his.kernel.intervals import Interval
from his.practitioners import store
from his.practitioners.domain import (
    SPECIALTIES,
    InvalidScheduleError,
    LeaveAction,
    LeaveStatus,
    availability,
    check_leave,
    check_shift,
    transition,
)


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
    row = await store.leave_for_update(uow.conn, pid, lid)
    if row is None:
        raise NotFoundError("leave request not found")
    before = LeaveStatus(row["status"])
    after = transition(before, action)
    await store.set_leave_status(uow.conn, lid, after, actor)
    if after is LeaveStatus.APPROVED:
        r = row["during"]
        uow.add(LeaveApproved(leave_id=lid, practitioner_id=pid, start=r.lower, end=r.upper), aggregate_id=pid)
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
