"""Internal HTTP API of the scheduling service (reached through the gateway).

Every route re-verifies the caller's token and decides through ``his.scheduling.policy``: a
patient books, reads, moves and cancels only their own appointments (another patient's id
answers 404); reception and ADMIN act for anyone; clinicians read, check in and complete only
for patients in their care or under an emergency grant (else 403, offering emergency access).
Every decision on a patient's appointment, allowed or denied, is audited.
"""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from his.access import Decision, Relationship
from his.clients.patients import refused, relationship_for
from his.events.audit import Action as AuditAction
from his.events.audit import SchedulingRecordAccessed, record_access
from his.kernel.auth import authenticate, jwks_verifier
from his.kernel.db import UnitOfWork
from his.kernel.intervals import Interval
from his.kernel.params import CalendarDate, Limit, one_of
from his.kernel.problems import HTTPException, ProblemError
from his.kernel.security import Principal, TokenVerifier
from his.kernel.service import ServiceContext
from his.scheduling import handlers, policy, store
from his.scheduling.domain import SERVICE_TYPES, Action, InvalidBookingError, InvalidTransitionError
from his.scheduling.policy import Operation
from his.scheduling.ports import Calendar, PatientLookup, PatientRef


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
        uow: UnitOfWork,
        who: Principal,
        patient_id: uuid.UUID,
        action: AuditAction,
        decision: Decision,
        *,
        resource: str = "appointment",
    ) -> None:
        record_access(
            uow,
            SchedulingRecordAccessed,
            who,
            patient_id=patient_id,
            action=action,
            resource=resource,
            purpose=decision.purpose,
            outcome=decision.outcome,
        )

    def audited(who: Principal, patient_id: uuid.UUID, action: AuditAction, decision: Decision) -> handlers.Also:
        """An audit record written inside the handler's transaction."""

        async def write(uow: UnitOfWork) -> None:
            audit(uow, who, patient_id, action, decision)

        return write

    async def known(patient_id: uuid.UUID) -> PatientRef | None:
        try:
            return await handlers.patient(ctx.db, patients, patient_id)
        except handlers.UnknownError:
            return None

    async def access(who: Principal, op: Operation, patient_id: uuid.UUID, what: str) -> Decision:
        """The policy's decision on ``op`` for the caller and this patient (not yet audited)."""
        rel = await relationship_for(patients, policy.RULES[op], patient_id, who, known)
        if rel is None:
            raise refused(policy.not_found(op, who.roles), patient_id, what)
        return policy.decide(op, who.roles, rel)

    async def deny(
        who: Principal,
        patient_id: uuid.UUID,
        decision: Decision,
        action: AuditAction,
        *,
        resource: str = "appointment",
        what: str = "appointment",
    ) -> ProblemError:
        """Audit a refusal (committed before the answer) and give the error to raise."""
        async with ctx.db.read() as uow:
            audit(uow, who, patient_id, action, decision, resource=resource)
        return refused(decision, patient_id, what)

    async def booking(who: Principal, patient_id: uuid.UUID, op: Operation, what: str) -> Decision:
        """Booking or joining the waitlist for a patient named in the body: unknown to staff who
        book by role is a 422; the rest is the policy's (a patient's other id answers 404)."""
        ref = await known(patient_id)
        if ref is None:
            if who.has_any(*policy.BOOKERS):
                raise HTTPException(422, "unknown patient_id")
            raise refused(policy.not_found(op, who.roles), patient_id, what)
        return policy.decide(op, who.roles, Relationship(owner=owns(who, ref)))

    def owns(who: Principal, ref: PatientRef) -> bool:
        return ref.account_id is not None and str(ref.account_id) == who.subject

    def conflict(exc: store.CollisionError, who: Principal, patient_id: uuid.UUID) -> ProblemError:
        """The 409 of a collision. Reception and ADMIN see which appointment the time collides
        with; anyone else (a patient booking for themself) learns that the time is taken, and
        which appointment only when it is one of this patient's own."""
        if who.has_any(*policy.BOOKERS) or exc.other_patient == patient_id:
            return ProblemError(
                409,
                f"the time collides with another appointment of the {exc.who}",
                conflict={"with": exc.who, "appointment": exc.other},
            )
        return ProblemError(409, "the time is no longer free", conflict={"with": exc.who})

    @r.get("/appointments/services")
    async def services(request: Request) -> dict[str, Any]:
        """Service types and how long each lasts (any signed-in user)."""
        await authenticate(request, tokens)
        return {
            "items": [
                {"code": c, "name": n, "minutes": int(d.total_seconds() // 60)} for c, (n, d) in SERVICE_TYPES.items()
            ]
        }

    @r.post("/appointments", status_code=201, response_model=Booked)
    async def book(body: NewAppointment, request: Request) -> Booked:
        """Book an appointment (a patient for themself, RECEPTIONIST, ADMIN). 409 if the practitioner
        or the patient is already booked then: reception learns which appointment it collides with,
        a patient only that the time is taken (or which of their own appointments it is)."""
        who = await authenticate(request, tokens)
        decision = await booking(who, body.patient_id, Operation.BOOK, "patient")
        if not decision.allowed:
            raise await deny(who, body.patient_id, decision, "create", what="patient")
        cmd = handlers.Booking(body.patient_id, body.practitioner_id, body.service, body.start, body.end)
        try:
            row = await handlers.book(
                ctx.db,
                calendar,
                cmd,
                uuid.UUID(who.subject),
                also=audited(who, body.patient_id, "create", decision),
            )
        except InvalidBookingError as exc:
            raise HTTPException(422, str(exc)) from None
        except handlers.UnknownError as exc:
            raise HTTPException(422, f"unknown practitioner_id: {exc}") from None
        except handlers.UnavailableError as exc:
            raise ProblemError(409, str(exc), conflict={"with": "availability"}) from None
        except store.CollisionError as exc:
            raise conflict(exc, who, body.patient_id) from None
        return Booked(id=row["id"], status=row["status"])

    async def load(
        who: Principal, appointment_id: uuid.UUID, op: Operation, action: AuditAction
    ) -> tuple[dict[str, Any], Decision]:
        """The appointment and the policy's decision on ``op``; a refusal is audited and raised."""
        async with ctx.db.pool.acquire() as conn:
            row = await store.get_appointment(conn, appointment_id)
        if row is None:
            raise refused(policy.not_found(op, who.roles), None, "appointment")
        decision = await access(who, op, row["patient_id"], "appointment")
        if not decision.allowed:
            raise await deny(who, row["patient_id"], decision, action)
        return row, decision

    @r.get("/appointments/{appointment_id}")
    async def one(appointment_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """One appointment: its patient, reception, or clinicians in the patient's care."""
        who = await authenticate(request, tokens)
        row, decision = await load(who, appointment_id, Operation.READ, "read")
        async with ctx.db.read() as uow:
            audit(uow, who, row["patient_id"], "read", decision)
        return store.as_json(row)

    @r.get("/appointments")
    async def of_patient(request: Request, patient_id: uuid.UUID, limit: Limit = 50) -> dict[str, Any]:
        """A patient's appointments, latest first: the patient, reception, or clinicians in the
        patient's care (others get a 403 that points to emergency access)."""
        who = await authenticate(request, tokens)
        decision = await access(who, Operation.READ, patient_id, "patient")
        if not decision.allowed:
            raise await deny(who, patient_id, decision, "read", what="patient")
        async with ctx.db.read() as uow:
            rows = await store.appointments_of_patient(uow.conn, patient_id, limit)
            audit(uow, who, patient_id, "read", decision)
        return {"items": [store.as_json(x) for x in rows]}

    @r.post("/appointments/{appointment_id}/reschedule")
    async def move(appointment_id: uuid.UUID, body: NewTimes, request: Request) -> dict[str, Any]:
        """Move a booked appointment to new times (its patient, RECEPTIONIST, ADMIN); 409 on a collision."""
        who = await authenticate(request, tokens)
        row, decision = await load(who, appointment_id, Operation.RESCHEDULE, "update")
        try:
            moved = await handlers.reschedule(
                ctx.db,
                calendar,
                appointment_id,
                body.start,
                body.end,
                also=audited(who, row["patient_id"], "update", decision),
            )
        except InvalidBookingError as exc:
            raise HTTPException(422, str(exc)) from None
        except InvalidTransitionError as exc:
            raise HTTPException(409, str(exc)) from None
        except handlers.UnavailableError as exc:
            raise ProblemError(409, str(exc), conflict={"with": "availability"}) from None
        except store.CollisionError as exc:
            raise conflict(exc, who, row["patient_id"]) from None
        return store.as_json(moved)

    @r.post("/appointments/{appointment_id}/{action}")
    async def step(appointment_id: uuid.UUID, action: Action, request: Request) -> dict[str, Any]:
        """Check in (RECEPTIONIST, ADMIN, a NURSE caring for the patient), complete (ADMIN, a DOCTOR
        or NURSE caring for the patient), cancel (the patient, RECEPTIONIST, ADMIN) or mark a
        no-show (RECEPTIONIST, ADMIN). An invalid transition answers 409. Cancelling frees the
        time and offers it to the waitlist."""
        who = await authenticate(request, tokens)
        _, decision = await load(who, appointment_id, policy.OF_ACTION[action], "update")
        try:
            async with ctx.db.uow() as uow:
                row = await handlers.act(uow, appointment_id, action)
                audit(uow, who, row["patient_id"], "update", decision)
        except InvalidTransitionError as exc:
            raise HTTPException(409, str(exc)) from None
        return store.as_json(row)

    @r.post("/waitlist", status_code=201)
    async def join(body: JoinWaitlist, request: Request) -> dict[str, Any]:
        """Wait for a practitioner (a patient for themself, RECEPTIONIST, ADMIN): when one of their
        appointments is cancelled, the first patient waiting is offered the freed slot."""
        who = await authenticate(request, tokens)
        decision = await booking(who, body.patient_id, Operation.WAITLIST, "patient")
        if not decision.allowed:
            raise await deny(who, body.patient_id, decision, "create", resource="waitlist", what="patient")
        if await calendar.working_time(body.practitioner_id, _today(ctx.db.clock(), zone)) is None:
            raise HTTPException(422, "unknown practitioner_id")
        try:
            async with ctx.db.uow() as uow:
                row = await handlers.join_waitlist(
                    uow, body.patient_id, body.practitioner_id, body.service, uuid.UUID(who.subject)
                )
                audit(uow, who, body.patient_id, "create", decision, resource="waitlist")
        except InvalidBookingError as exc:
            raise HTTPException(422, str(exc)) from None
        except store.WaitlistDuplicateError:
            raise HTTPException(409, "the patient already waits for this practitioner and service") from None
        return store.waitlist_json(row)

    @r.get("/waitlist")
    async def waiting(request: Request, patient_id: uuid.UUID) -> dict[str, Any]:
        """A patient's waitlist entries and their offers (the patient, reception, ADMIN)."""
        who = await authenticate(request, tokens)
        decision = await access(who, Operation.WAITLIST, patient_id, "patient")
        if not decision.allowed:
            raise await deny(who, patient_id, decision, "read", resource="waitlist", what="patient")
        async with ctx.db.read() as uow:
            rows = await store.waitlist_of_patient(uow.conn, patient_id)
            audit(uow, who, patient_id, "read", decision, resource="waitlist")
        return {"items": [store.waitlist_json(x) for x in rows]}

    async def entry_of(who: Principal, entry_id: uuid.UUID, action: AuditAction) -> tuple[dict[str, Any], Decision]:
        async with ctx.db.pool.acquire() as conn:
            row = await store.waitlist_entry(conn, entry_id)
        if row is None:
            raise refused(policy.not_found(Operation.WAITLIST, who.roles), None, "waitlist entry")
        decision = await access(who, Operation.WAITLIST, row["patient_id"], "waitlist entry")
        if not decision.allowed:
            raise await deny(who, row["patient_id"], decision, action, resource="waitlist", what="waitlist entry")
        return row, decision

    @r.post("/waitlist/{entry_id}/accept", status_code=201, response_model=Booked)
    async def accept(entry_id: uuid.UUID, request: Request) -> Booked:
        """Take up the slot offered to this entry (the patient, RECEPTIONIST, ADMIN): books it (409 if the
        offer expired or the time was taken)."""
        who = await authenticate(request, tokens)
        entry, decision = await entry_of(who, entry_id, "create")
        try:
            row = await handlers.accept_offer(
                ctx.db,
                calendar,
                entry_id,
                uuid.UUID(who.subject),
                also=audited(who, entry["patient_id"], "create", decision),
            )
        except handlers.OfferError as exc:
            raise HTTPException(409, str(exc)) from None
        except (InvalidBookingError, handlers.UnavailableError) as exc:
            raise HTTPException(409, f"the offered slot can no longer be booked: {exc}") from None
        except store.CollisionError as exc:
            raise conflict(exc, who, entry["patient_id"]) from None
        return Booked(id=row["id"], status=row["status"])

    @r.post("/waitlist/{entry_id}/withdraw")
    async def withdraw(entry_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """Leave the waitlist (the patient, reception, ADMIN)."""
        who = await authenticate(request, tokens)
        entry, decision = await entry_of(who, entry_id, "update")
        if entry["status"] not in ("waiting", "offered"):
            raise HTTPException(409, f"a {entry['status']} waitlist entry cannot be withdrawn")
        async with ctx.db.uow() as uow:
            await store.set_waitlist_status(uow.conn, entry_id, "withdrawn")
            audit(uow, who, entry["patient_id"], "update", decision, resource="waitlist")
        return {"id": str(entry_id), "status": "withdrawn"}

    @r.get("/slots/{practitioner_id}")
    async def free(
        practitioner_id: uuid.UUID,
        request: Request,
        day: Annotated[CalendarDate, Query(alias="date")],
        service: Annotated[str, Query(max_length=64)] = "consultation",
    ) -> dict[str, Any]:
        """Free slots of one practitioner on a day (hospital time zone) for a service type (any signed-in)."""
        await authenticate(request, tokens)
        one_of("service", service, SERVICE_TYPES)
        start = datetime.combine(day, time(0), tzinfo=zone)
        window = Interval(start, datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone))
        try:
            free = await handlers.free_slots(ctx.db, calendar, practitioner_id, window, service)
        except handlers.UnknownError:
            raise HTTPException(404, "practitioner not found") from None
        return {
            "date": day.isoformat(),
            "service": service,
            "timezone": timezone,
            "items": [{"start": s.start.isoformat(), "end": s.end.isoformat()} for s in free],
        }

    return r


def _today(now: datetime, zone: ZoneInfo) -> Interval:
    start = datetime.combine(now.astimezone(zone).date(), time(0), tzinfo=zone)
    return Interval(start, start + timedelta(days=1))
