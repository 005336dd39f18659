"""Internal HTTP API of the scheduling service (reached through the gateway).

Every route re-verifies the caller's token. A patient books, reads, moves and cancels only their
own appointments (any other id answers 404); reception and ADMIN act for anyone; clinicians
check in and complete. Every read or write of an appointment is audited.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from his.clients.patients import CLINICIANS, care_required, clinician_purpose
from his.events.audit import Action as AuditAction
from his.events.audit import SchedulingRecordAccessed, record_access
from his.kernel.auth import authenticate, jwks_verifier
from his.kernel.db import UnitOfWork
from his.kernel.intervals import Interval
from his.kernel.problems import HTTPException, ProblemError
from his.kernel.security import Principal, TokenVerifier
from his.kernel.service import ServiceContext
from his.scheduling import handlers, store
from his.scheduling.domain import SERVICE_TYPES, Action, InvalidBookingError, InvalidTransitionError
from his.scheduling.ports import Calendar, PatientLookup, PatientRef

BOOKERS = ("RECEPTIONIST", "ADMIN")
READERS = ("RECEPTIONIST", "ADMIN", "DOCTOR", "NURSE")
WHO_MAY: dict[Action, tuple[str, ...]] = {
    Action.CANCEL: ("RECEPTIONIST", "ADMIN"),
    Action.CHECK_IN: ("RECEPTIONIST", "ADMIN", "NURSE"),
    Action.COMPLETE: ("DOCTOR", "NURSE", "ADMIN"),
    Action.NO_SHOW: ("RECEPTIONIST", "ADMIN"),
}
#: Actions a patient may take on their own appointment.
SELF_SERVICE = (Action.CANCEL,)


class NewAppointment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    start: AwareDatetime
    end: AwareDatetime
    service: str = Field(min_length=1, max_length=64)


class NewTimes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: AwareDatetime
    end: AwareDatetime


class JoinWaitlist(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    service: str = Field(min_length=1, max_length=64)


class Booked(BaseModel):
    id: uuid.UUID
    status: str


def router(
    ctx: ServiceContext,
    calendar: Calendar,
    patients: PatientLookup,
    verifier: TokenVerifier | None = None,
    timezone: str = "UTC",
) -> APIRouter:
    r = APIRouter(tags=["scheduling"])
    tokens = verifier or jwks_verifier()
    zone = ZoneInfo(timezone)

    def audit(
        uow: UnitOfWork, who: Principal, patient_id: uuid.UUID, action: AuditAction, resource: str = "appointment",
        *, purpose: str | None = None,
    ) -> None:  # fmt: skip
        purpose = purpose or ("care" if who.has_any(*READERS) else "own_record")
        record_access(uow, SchedulingRecordAccessed, who, patient_id=patient_id, action=action,
                      resource=resource, purpose=purpose)  # fmt: skip

    def audited(who: Principal, patient_id: uuid.UUID, action: AuditAction) -> handlers.Also:
        """An audit record written inside the handler's transaction."""

        async def write(uow: UnitOfWork) -> None:
            audit(uow, who, patient_id, action)

        return write

    async def may_act_for(who: Principal, patient_id: uuid.UUID, staff: tuple[str, ...]) -> bool:
        """Staff by role; a patient only for the record linked to their own account."""
        if who.has_any(*staff):
            return True
        if not who.has_any("PATIENT"):
            return False
        return owns(who, await handlers.patient(ctx.db, patients, patient_id))

    async def reading(who: Principal, patient_id: uuid.UUID) -> str | None:
        """The purpose on which ``who`` may read the patient's appointments, or None: RECEPTIONIST
        and ADMIN by role; a DOCTOR or NURSE with a care relationship or an emergency grant (asked
        of patients; an appointment gives its practitioner care); a patient their own."""
        if who.has_any(*BOOKERS):
            return "care"
        if who.has_any(*CLINICIANS) and (
            purpose := await clinician_purpose(patients, patient_id, uuid.UUID(who.subject))
        ):
            return purpose
        if await may_act_for(who, patient_id, ()):
            return "own_record"
        return None

    def owns(who: Principal, ref: PatientRef) -> bool:
        return ref.account_id is not None and str(ref.account_id) == who.subject

    async def known_and_allowed(who: Principal, patient_id: uuid.UUID) -> bool:
        """The patient exists (raises UnknownError otherwise) and the caller may book for them:
        one look-up of the patient, whoever asks."""
        ref = await handlers.patient(ctx.db, patients, patient_id)
        return who.has_any(*BOOKERS) or (who.has_any("PATIENT") and owns(who, ref))

    def conflict(exc: store.CollisionError) -> ProblemError:
        return ProblemError(409, f"the time collides with another appointment of the {exc.who}",
                            conflict={"with": exc.who, "appointment": exc.other})  # fmt: skip

    @r.get("/appointments/services")
    async def services(request: Request) -> dict[str, Any]:
        """Service types and how long each lasts (any signed-in user)."""
        await authenticate(request, tokens)
        return {"items": [{"code": c, "name": n, "minutes": int(d.total_seconds() // 60)}
                          for c, (n, d) in SERVICE_TYPES.items()]}  # fmt: skip

    @r.post("/appointments", status_code=201, response_model=Booked)
    async def book(body: NewAppointment, request: Request) -> Booked:
        """Book an appointment (a patient for themself, RECEPTIONIST, ADMIN). 409 if the practitioner
        or the patient is already booked then, naming the appointment it collides with."""
        who = await authenticate(request, tokens)
        try:
            allowed = await known_and_allowed(who, body.patient_id)
        except handlers.UnknownError:
            if not who.has_any(*BOOKERS):  # to a patient, someone else's id and no id look the same
                raise HTTPException(404, "you cannot book for this patient") from None
            raise HTTPException(422, "unknown patient_id") from None
        if not allowed:
            raise HTTPException(403 if not who.has_any("PATIENT") else 404, "you cannot book for this patient")
        cmd = handlers.Booking(body.patient_id, body.practitioner_id, body.service, body.start, body.end)
        try:
            row = await handlers.book(
                ctx.db,
                calendar,
                cmd,
                uuid.UUID(who.subject),
                also=audited(who, body.patient_id, "create"),
            )
        except InvalidBookingError as exc:
            raise HTTPException(422, str(exc)) from None
        except handlers.UnknownError as exc:
            raise HTTPException(422, f"unknown practitioner_id: {exc}") from None
        except handlers.UnavailableError as exc:
            raise ProblemError(409, str(exc), conflict={"with": "availability"}) from None
        except store.CollisionError as exc:
            raise conflict(exc) from None
        return Booked(id=row["id"], status=row["status"])

    async def load(who: Principal, appointment_id: uuid.UUID, staff: tuple[str, ...]) -> dict[str, Any]:
        async with ctx.db.pool.acquire() as conn:
            row = await store.get_appointment(conn, appointment_id)
        if row is None or not await may_act_for(who, row["patient_id"], staff):
            raise HTTPException(404, "appointment not found")
        return row

    @r.get("/appointments/{appointment_id}")
    async def one(appointment_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """One appointment: its patient, reception, or clinicians in the patient's care."""
        who = await authenticate(request, tokens)
        async with ctx.db.pool.acquire() as conn:
            row = await store.get_appointment(conn, appointment_id)
        try:
            purpose = None if row is None else await reading(who, row["patient_id"])
        except handlers.UnknownError:
            purpose = None
        if row is None or purpose is None:
            raise HTTPException(404, "appointment not found")
        async with ctx.db.read() as uow:
            audit(uow, who, row["patient_id"], "read", purpose=purpose)
        return store.as_json(row)

    @r.get("/appointments")
    async def of_patient(
        request: Request, patient_id: uuid.UUID, limit: Annotated[int, Query(ge=1, le=200)] = 50
    ) -> dict[str, Any]:
        """A patient's appointments, latest first: the patient, reception, or clinicians in the
        patient's care (others get a 403 that points to emergency access)."""
        who = await authenticate(request, tokens)
        try:
            purpose = await reading(who, patient_id)
        except handlers.UnknownError:
            purpose = None
        if purpose is None:
            if who.has_any(*CLINICIANS):
                raise HTTPException(403, care_required(patient_id))
            raise HTTPException(404, "patient not found")
        async with ctx.db.read() as uow:
            rows = await store.appointments_of_patient(uow.conn, patient_id, limit)
            audit(uow, who, patient_id, "read", purpose=purpose)
        return {"items": [store.as_json(x) for x in rows]}

    @r.post("/appointments/{appointment_id}/reschedule")
    async def move(appointment_id: uuid.UUID, body: NewTimes, request: Request) -> dict[str, Any]:
        """Move a booked appointment to new times (its patient, RECEPTIONIST, ADMIN); 409 on a collision."""
        who = await authenticate(request, tokens)
        row = await load(who, appointment_id, BOOKERS)
        try:
            moved = await handlers.reschedule(
                ctx.db, calendar, appointment_id, body.start, body.end,
                also=audited(who, row["patient_id"], "update"),
            )  # fmt: skip
        except InvalidBookingError as exc:
            raise HTTPException(422, str(exc)) from None
        except InvalidTransitionError as exc:
            raise HTTPException(409, str(exc)) from None
        except handlers.UnavailableError as exc:
            raise ProblemError(409, str(exc), conflict={"with": "availability"}) from None
        except store.CollisionError as exc:
            raise conflict(exc) from None
        return store.as_json(moved)

    @r.post("/appointments/{appointment_id}/{action}")
    async def step(appointment_id: uuid.UUID, action: Action, request: Request) -> dict[str, Any]:
        """Check in, complete, cancel or mark a no-show. A patient may cancel their own appointment;
        an invalid transition answers 409. Cancelling frees the time and offers it to the waitlist."""
        who = await authenticate(request, tokens)
        staff = WHO_MAY[action]
        row = await load(who, appointment_id, staff if action not in SELF_SERVICE else (*staff, *READERS))
        # Self-service is for the appointment's own patient: holding PATIENT is not enough when
        # another role (a clinician's) is what let the caller see the appointment.
        if not who.has_any(*staff) and not (
            action in SELF_SERVICE
            and who.has_any("PATIENT")
            and owns(who, await handlers.patient(ctx.db, patients, row["patient_id"]))
        ):
            raise HTTPException(403, f"not allowed to {action.value} this appointment")
        try:
            async with ctx.db.uow() as uow:
                row = await handlers.act(uow, appointment_id, action)
                audit(uow, who, row["patient_id"], "update")
        except InvalidTransitionError as exc:
            raise HTTPException(409, str(exc)) from None
        return store.as_json(row)

    @r.post("/waitlist", status_code=201)
    async def join(body: JoinWaitlist, request: Request) -> dict[str, Any]:
        """Wait for a practitioner (a patient for themself, RECEPTIONIST, ADMIN): when one of their
        appointments is cancelled, the first patient waiting is offered the freed slot."""
        who = await authenticate(request, tokens)
        try:
            allowed = await known_and_allowed(who, body.patient_id)
        except handlers.UnknownError:
            allowed = False
        if not allowed:
            raise HTTPException(404, "patient not found")
        if await calendar.working_time(body.practitioner_id, _today(ctx.db.clock(), zone)) is None:
            raise HTTPException(422, "unknown practitioner_id")
        try:
            async with ctx.db.uow() as uow:
                row = await handlers.join_waitlist(
                    uow, body.patient_id, body.practitioner_id, body.service, uuid.UUID(who.subject)
                )
                audit(uow, who, body.patient_id, "create", "waitlist")
        except InvalidBookingError as exc:
            raise HTTPException(422, str(exc)) from None
        except store.WaitlistDuplicateError:
            raise HTTPException(409, "the patient already waits for this practitioner and service") from None
        return store.waitlist_json(row)

    @r.get("/waitlist")
    async def waiting(request: Request, patient_id: uuid.UUID) -> dict[str, Any]:
        """A patient's waitlist entries and their offers (the patient, reception, ADMIN)."""
        who = await authenticate(request, tokens)
        try:
            allowed = await may_act_for(who, patient_id, BOOKERS)
        except handlers.UnknownError:
            allowed = False
        if not allowed:
            raise HTTPException(404, "patient not found")
        async with ctx.db.read() as uow:
            rows = await store.waitlist_of_patient(uow.conn, patient_id)
            audit(uow, who, patient_id, "read", "waitlist")
        return {"items": [store.waitlist_json(x) for x in rows]}

    async def entry_of(who: Principal, entry_id: uuid.UUID) -> dict[str, Any]:
        async with ctx.db.pool.acquire() as conn:
            row = await store.waitlist_entry(conn, entry_id)
        if row is None or not await may_act_for(who, row["patient_id"], BOOKERS):
            raise HTTPException(404, "waitlist entry not found")
        return row

    @r.post("/waitlist/{entry_id}/accept", status_code=201, response_model=Booked)
    async def accept(entry_id: uuid.UUID, request: Request) -> Booked:
        """Take up the slot offered to this entry: books it (409 if the offer expired or the time was taken)."""
        who = await authenticate(request, tokens)
        entry = await entry_of(who, entry_id)
        try:
            row = await handlers.accept_offer(
                ctx.db, calendar, entry_id, uuid.UUID(who.subject), also=audited(who, entry["patient_id"], "create")
            )
        except handlers.OfferError as exc:
            raise HTTPException(409, str(exc)) from None
        except (InvalidBookingError, handlers.UnavailableError) as exc:
            raise HTTPException(409, f"the offered slot can no longer be booked: {exc}") from None
        except store.CollisionError as exc:
            raise conflict(exc) from None
        return Booked(id=row["id"], status=row["status"])

    @r.post("/waitlist/{entry_id}/withdraw")
    async def withdraw(entry_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """Leave the waitlist (the patient, reception, ADMIN)."""
        who = await authenticate(request, tokens)
        entry = await entry_of(who, entry_id)
        if entry["status"] not in ("waiting", "offered"):
            raise HTTPException(409, f"a {entry['status']} waitlist entry cannot be withdrawn")
        async with ctx.db.uow() as uow:
            await store.set_waitlist_status(uow.conn, entry_id, "withdrawn")
            audit(uow, who, entry["patient_id"], "update", "waitlist")
        return {"id": str(entry_id), "status": "withdrawn"}

    @r.get("/slots/{practitioner_id}")
    async def free(
        practitioner_id: uuid.UUID,
        request: Request,
        day: Annotated[date, Query(alias="date")],
        service: Annotated[str, Query(max_length=64)] = "consultation",
    ) -> dict[str, Any]:
        """Free slots of one practitioner on a day (hospital time zone) for a service type (any signed-in)."""
        await authenticate(request, tokens)
        if service not in SERVICE_TYPES:
            raise HTTPException(422, f"unknown service {service!r}")
        if not date.min < day < date.max:  # its window would end (or start, in UTC) beyond the calendar
            raise HTTPException(422, "date is out of range")
        start = datetime.combine(day, time(0), tzinfo=zone)
        window = Interval(start, datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone))
        try:
            free = await handlers.free_slots(ctx.db, calendar, practitioner_id, window, service)
        except handlers.UnknownError:
            raise HTTPException(404, "practitioner not found") from None
        return {"date": day.isoformat(), "service": service, "timezone": timezone,
                "items": [{"start": s.start.isoformat(), "end": s.end.isoformat()} for s in free]}  # fmt: skip

    return r


def _today(now: datetime, zone: ZoneInfo) -> Interval:
    start = datetime.combine(now.astimezone(zone).date(), time(0), tzinfo=zone)
    return Interval(start, start + timedelta(days=1))
