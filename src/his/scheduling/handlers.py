"""Use cases of the scheduling service: one function per command or consumed event.

Remote reads (the practitioner's working time, an unknown patient) happen before the database
transaction opens, so no transaction waits on the network; the exclusion constraints then decide
between concurrent bookings inside it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter

from his.clients import replica
from his.events.scheduling import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentCompleted,
    AppointmentEvent,
    AppointmentMissed,
    AppointmentRescheduled,
    WaitlistOffered,
)
from his.kernel.consumer import PermanentError
from his.kernel.db import Database, UnitOfWork, retry_aborted
from his.kernel.events import Envelope, Event
from his.kernel.intervals import Interval, subtract
from his.scheduling import store
from his.scheduling.domain import (
    Action,
    InvalidTransitionError,
    Status,
    can_reschedule,
    check_booking,
    duration_of,
    slots,
    transition,
)
from his.scheduling.ports import Calendar, PatientLookup, PatientRef


class UnknownError(LookupError):
    """A patient, practitioner or appointment that does not exist."""


class UnavailableError(Exception):
    """The practitioner does not work then (no shift, or approved leave)."""


@dataclass(frozen=True)
class Booking:
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    service: str
    start: datetime
    end: datetime


async def patient(db: Database, lookup: PatientLookup, patient_id: uuid.UUID) -> PatientRef:
    """A patient known from patients' events, else asked of patients (authoritative)."""
    ref = await replica.resolve(db, lookup, patient_id)
    if ref is None:
        raise UnknownError("patient not found")
    return ref


async def ensure_working(calendar: Calendar, practitioner_id: uuid.UUID, span: Interval) -> None:
    working = await calendar.working_time(practitioner_id, span)
    if working is None:
        raise UnknownError("practitioner not found")
    if subtract([span], working):  # some of the span lies outside working time
        raise UnavailableError("the practitioner is not working then (no shift, or on approved leave)")


def _event(model: type[AppointmentEvent], row: dict[str, Any], **extra: Any) -> AppointmentEvent:
    span = store.as_interval(row["during"])
    return model(
        appointment_id=row["id"],
        patient_id=row["patient_id"],
        practitioner_id=row["practitioner_id"],
        service=row["service"],
        start=span.start,
        end=span.end,
        **extra,
    )


#: Called inside the booking's transaction (the audit record commits with the change, or neither).
BOOKED = Counter("his_appointments_booked_total", "Appointments booked (counted after their commit)")

Also = Callable[[UnitOfWork], Awaitable[None]] | None


async def book(db: Database, calendar: Calendar, b: Booking, actor: uuid.UUID, also: Also = None) -> dict[str, Any]:
    span = check_booking(b.start, b.end, b.service, db.clock())
    await ensure_working(calendar, b.practitioner_id, span)
    aid = uuid.uuid4()
    row: dict[str, Any] = {
        "id": aid,
        "patient_id": b.patient_id,
        "practitioner_id": b.practitioner_id,
        "service": b.service,
        "during": store.as_range(span),
        "booked_by": actor,
    }

    async def attempt() -> dict[str, Any]:
        async with db.uow() as uow:
            saved = await store.insert_appointment(uow.conn, row)
            uow.add(_event(AppointmentBooked, saved), aggregate_id=aid, aggregate_version=saved["version"])
            uow.on_commit(BOOKED.inc)
            if also:
                await also(uow)
        return saved

    try:
        return await retry_aborted(attempt)  # overlapping bookings at once can deadlock: see there
    except store.CollisionError as exc:
        raise await _described(db, exc, row) from exc


async def _described(db: Database, exc: store.CollisionError, row: dict[str, Any]) -> store.CollisionError:
    """The collision naming the other appointment, looked up once the failed transaction rolled back."""
    async with db.pool.acquire() as conn:
        return await store.collision_with(conn, exc, row)


async def act(uow: UnitOfWork, appointment_id: uuid.UUID, action: Action) -> dict[str, Any]:
    """Move an appointment along its life: check in, complete, cancel, or mark a no-show."""
    row = await store.get_appointment(uow.conn, appointment_id, lock=True)
    if row is None:
        raise UnknownError("appointment not found")
    after = transition(Status(row["status"]), action)
    row["version"] = await store.set_status(uow.conn, appointment_id, after)
    row["status"] = after.value
    model = {
        Status.CHECKED_IN: AppointmentCheckedIn,
        Status.COMPLETED: AppointmentCompleted,
        Status.CANCELLED: AppointmentCancelled,
        Status.NO_SHOW: AppointmentMissed,
    }[after]
    uow.add(_event(model, row), aggregate_id=appointment_id, aggregate_version=row["version"])
    return row


async def reschedule(
    db: Database, calendar: Calendar, appointment_id: uuid.UUID, start: datetime, end: datetime, *, also: Also = None
) -> dict[str, Any]:
    async with db.pool.acquire() as conn:
        current = await store.get_appointment(conn, appointment_id)
    if current is None:
        raise UnknownError("appointment not found")
    span = check_booking(start, end, current["service"], db.clock())
    await ensure_working(calendar, current["practitioner_id"], span)
    during = store.as_range(span)

    async def attempt() -> dict[str, Any]:
        async with db.uow() as uow:
            row = await store.get_appointment(uow.conn, appointment_id, lock=True)
            assert row is not None
            if not can_reschedule(Status(row["status"])):
                raise InvalidTransitionError(f"a {row['status']} appointment cannot be rescheduled")
            before = store.as_interval(row["during"])
            moved = await store.move_appointment(uow.conn, row, during)
            uow.add(
                _event(AppointmentRescheduled, moved, previous_start=before.start, previous_end=before.end),
                aggregate_id=appointment_id,
                aggregate_version=moved["version"],
            )
            if also:
                await also(uow)
        return moved

    try:
        return await retry_aborted(attempt)
    except store.CollisionError as exc:
        raise await _described(db, exc, {**current, "during": during}) from exc


async def free_slots(
    db: Database, calendar: Calendar, practitioner_id: uuid.UUID, day: Interval, service: str
) -> list[Interval]:
    """Slots of ``service`` length: the practitioner's working time minus their appointments."""
    length = duration_of(service)
    working = await calendar.working_time(practitioner_id, day)
    if working is None:
        raise UnknownError("practitioner not found")
    async with db.pool.acquire() as conn:
        taken = await store.busy(conn, practitioner_id, day)
    return slots(subtract(working, taken), length, not_before=db.clock())


#: How long a waitlisted patient has to take up an offered slot (never past the slot's start).
OFFER_TIME = timedelta(minutes=30)


async def join_waitlist(
    uow: UnitOfWork, patient_id: uuid.UUID, practitioner_id: uuid.UUID, service: str, actor: uuid.UUID
) -> dict[str, Any]:
    duration_of(service)
    entry_id = uuid.uuid4()
    entry = {
        "id": entry_id,
        "patient_id": patient_id,
        "practitioner_id": practitioner_id,
        "service": service,
        "created_by": actor,
    }
    await store.add_to_waitlist(uow.conn, entry)
    row = await store.waitlist_entry(uow.conn, entry_id)
    assert row is not None
    return row


async def on_slot_freed(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
    """A cancelled (or moved) appointment freed time: offer it to the first patient waiting for
    that practitioner whose service fits, if the time is still free and still ahead."""
    if isinstance(ev, AppointmentRescheduled):
        freed = Interval(ev.previous_start, ev.previous_end)
    elif isinstance(ev, AppointmentCancelled):
        freed = Interval(ev.start, ev.end)
    else:
        raise PermanentError(f"unexpected event {env.type}")
    moment = uow.clock()
    if freed.end <= moment:
        return
    freed = Interval(max(freed.start, moment), freed.end)
    free = subtract([freed], await store.busy(uow.conn, ev.practitioner_id, freed))
    for entry in await store.waiting_for(uow.conn, ev.practitioner_id):
        length = duration_of(entry["service"])
        piece = next((p for p in free if p.end - p.start >= length), None)
        if piece is None:
            continue
        slot = Interval(piece.start, piece.start + length)
        expires = min(slot.start, moment + OFFER_TIME)
        await store.set_waitlist_status(uow.conn, entry["id"], "offered", slot, expires)
        uow.add(
            WaitlistOffered(
                entry_id=entry["id"],
                patient_id=entry["patient_id"],
                practitioner_id=ev.practitioner_id,
                service=entry["service"],
                start=slot.start,
                end=slot.end,
                expires_at=expires,
            ),
            aggregate_id=entry["id"],
        )
        return


class OfferError(Exception):
    """The waitlist entry holds no offer that can still be taken."""


async def accept_offer(
    db: Database, calendar: Calendar, entry_id: uuid.UUID, actor: uuid.UUID, also: Also = None
) -> dict[str, Any]:
    """Book the offered slot for the waitlisted patient (409 if it expired or was taken meanwhile)."""
    async with db.pool.acquire() as conn:
        entry = await store.waitlist_entry(conn, entry_id)
    if entry is None:
        raise UnknownError("waitlist entry not found")
    if entry["status"] != "offered" or entry["offer_expires_at"] <= db.clock():
        raise OfferError("there is no open offer on this waitlist entry")
    slot = store.as_interval(entry["offered_during"])
    booking = Booking(entry["patient_id"], entry["practitioner_id"], entry["service"], slot.start, slot.end)

    async def taken(uow: UnitOfWork) -> None:  # in the booking's transaction: both happen, or neither
        await store.set_waitlist_status(uow.conn, entry_id, "booked")
        if also:
            await also(uow)

    return await book(db, calendar, booking, actor, also=taken)
