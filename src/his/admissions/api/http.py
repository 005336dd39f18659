"""Internal HTTP API of the admissions service (reached through the gateway).

Every route re-verifies the caller's token. Wards and beds are visible to all staff (every role
but PATIENT) and shaped by ADMIN; nurses and ADMIN move beds through housekeeping, closure and
isolation. Admissions are a patient's data, decided by ``his.admissions.policy``: reception and
ADMIN admit, read, move and discharge anyone; clinicians only patients in their care or under an
emergency grant (else 403, offering emergency access); billing reads the bed charges; never
patients through this API. Every decision on one, allowed or denied, is audited.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from his.access import NONE, Decision, Role
from his.admissions import handlers, policy, store
from his.admissions.domain import (
    MAX_BEDS_PER_WARD,
    BedAction,
    BedState,
    InvalidTransitionError,
    InvalidWardError,
)
from his.admissions.policy import Operation
from his.clients.billing import UnknownValueError, known_currency
from his.clients.patients import refused, relationship_for
from his.events.audit import Action as AuditAction
from his.events.audit import AdmissionsRecordAccessed, record_access
from his.kernel.auth import authenticate, jwks_verifier, require
from his.kernel.db import UnitOfWork
from his.kernel.params import CalendarDate, Limit
from his.kernel.problems import HTTPException, ProblemError
from his.kernel.security import Principal, TokenVerifier
from his.kernel.service import ServiceContext

STAFF = (Role.ADMIN, Role.RECEPTIONIST, Role.DOCTOR, Role.NURSE, Role.LAB_TECH, Role.BILLING, Role.AUDITOR)
HOUSEKEEPING = (Role.NURSE, Role.ADMIN)


class NewWard(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    type: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", max_length=32)
    daily_rate: Decimal = Field(ge=0, max_digits=12, decimal_places=2)
    currency: str = Field(pattern=r"^[A-Z]{3}$", max_length=3)
    beds: int = Field(ge=1, le=MAX_BEDS_PER_WARD)
    rooms: int | None = Field(default=None, ge=1, le=MAX_BEDS_PER_WARD)


class WardChanges(BaseModel):
    """What may be corrected on a ward; fields left out stay as they are (beds are not changed here)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    type: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,31}$", max_length=32)
    daily_rate: Decimal | None = Field(default=None, ge=0, max_digits=12, decimal_places=2)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", max_length=3)


class NewAdmission(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    ward_id: uuid.UUID


class Transfer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ward_id: uuid.UUID
    bed_id: uuid.UUID | None = None


class BedStep(StrEnum):
    """What staff may do to a bed; occupying and vacating follow admissions."""

    RELEASE = "release"
    CLOSE = "close"
    OPEN = "open"
    ISOLATE = "isolate"


class Created(BaseModel):
    id: uuid.UUID


class Admitted(BaseModel):
    id: uuid.UUID
    bed_id: uuid.UUID
    ward_id: uuid.UUID
    status: str


def router(
    ctx: ServiceContext,
    known: handlers.Directories,
    verifier: TokenVerifier | None = None,
    timezone: str = "UTC",
) -> APIRouter:
    r = APIRouter(tags=["admissions"])
    tokens = verifier or jwks_verifier()
    zone = ZoneInfo(timezone)

    def audit(
        uow: UnitOfWork,
        who: Principal,
        patient_id: uuid.UUID,
        action: AuditAction,
        decision: Decision,
        *,
        resource: str,
    ) -> None:
        record_access(
            uow,
            AdmissionsRecordAccessed,
            who,
            patient_id=patient_id,
            action=action,
            resource=resource,
            purpose=decision.purpose,
            outcome=decision.outcome,
        )

    async def access(who: Principal, op: Operation, patient_id: uuid.UUID, what: str) -> Decision:
        """The policy's decision on ``op`` for the caller and this patient (not yet audited)."""
        rel = await relationship_for(known.patients, policy.RULES[op], patient_id, who)
        if rel is None:
            raise refused(policy.not_found(op, who.roles), patient_id, what)
        return policy.decide(op, who.roles, rel)

    async def deny(
        who: Principal, patient_id: uuid.UUID, decision: Decision, action: AuditAction, *, resource: str, what: str
    ) -> ProblemError:
        """Audit a refusal (committed before the answer) and give the error to raise."""
        async with ctx.db.read() as uow:
            audit(uow, who, patient_id, action, decision, resource=resource)
        return refused(decision, patient_id, what)

    async def opened(
        who: Principal, admission_id: uuid.UUID, op: Operation, action: AuditAction, resource: str = "admission"
    ) -> tuple[dict[str, Any], Decision]:
        """The admission and the policy's decision on ``op``; a refusal is audited and raised."""
        async with ctx.db.pool.acquire() as conn:
            row = await store.get_admission(conn, admission_id)
        if row is None:
            raise refused(policy.not_found(op, who.roles), None, "admission")
        decision = await access(who, op, row["patient_id"], "admission")
        if not decision.allowed:
            raise await deny(who, row["patient_id"], decision, action, resource=resource, what="admission")
        return row, decision

    async def signed_in(request: Request, roles: tuple[str, ...]) -> Principal:
        who = await authenticate(request, tokens)
        require(who, *roles)
        return who

    async def billable(currency: str) -> None:
        """A ward's rate is in a currency billing invoices in, or the request is a 422 naming them:
        its nights would otherwise be charged and never billed."""
        if known.billing is None:
            raise HTTPException(503, "currencies cannot be checked: billing is not reachable from admissions")
        try:
            known_currency(await known.billing.terms(), currency)
        except UnknownValueError as exc:
            raise exc.problem() from None

    # --- wards and beds --------------------------------------------------------------------------

    @r.post("/wards", status_code=201, response_model=Created)
    async def create_ward(body: NewWard, request: Request) -> Created:
        """Create a ward with ``beds`` beds spread over ``rooms`` rooms (default one), all available
        (ADMIN). Beds are labelled by room, e.g. ``R1-B2``. A currency billing does not invoice in
        is a 422 naming the valid ones."""
        who = await signed_in(request, (Role.ADMIN,))
        await billable(body.currency)
        spec = handlers.NewWard(body.name, body.type, body.daily_rate, body.currency, body.beds, body.rooms)
        try:
            async with ctx.db.uow() as uow:
                ward_id = await handlers.create_ward(uow, spec, uuid.UUID(who.subject))
        except InvalidWardError as exc:
            raise HTTPException(422, str(exc)) from None
        return Created(id=ward_id)

    @r.patch("/wards/{ward_id}")
    async def correct_ward(ward_id: uuid.UUID, body: WardChanges, request: Request) -> dict[str, Any]:
        """Correct what was entered for a ward: name, type, daily rate, currency (ADMIN). Nights
        posted from now on carry the new rate and currency; publishes
        ``his.admissions.ward.updated.v1`` when anything changed. A currency billing does not
        invoice in is a 422 naming the valid ones."""
        who = await signed_in(request, (Role.ADMIN,))
        if body.currency is not None:
            await billable(body.currency)
        changes = {"name": body.name, "ward_type": body.type, "daily_rate": body.daily_rate, "currency": body.currency}
        try:
            async with ctx.db.uow() as uow:
                ward = await handlers.update_ward(uow, ward_id, changes, uuid.UUID(who.subject))
        except handlers.UnknownError:
            raise HTTPException(404, "ward not found") from None
        except InvalidWardError as exc:
            raise HTTPException(422, str(exc)) from None
        async with ctx.db.pool.acquire() as conn:
            counts = await store.bed_counts(conn, [ward_id])
        return store.ward_json(ward, counts[ward_id])

    @r.get("/wards")
    async def list_wards(request: Request) -> dict[str, Any]:
        """Every ward with its daily rate and how many beds are in each state (staff)."""
        await signed_in(request, STAFF)
        async with ctx.db.pool.acquire() as conn:
            rows = await store.wards(conn)
            counts = await store.bed_counts(conn, [w["id"] for w in rows])
        return {"items": [store.ward_json(w, counts[w["id"]]) for w in rows]}

    @r.get("/wards/{ward_id}")
    async def one_ward(ward_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """One ward: rate, rooms and bed counts per state (staff)."""
        await signed_in(request, STAFF)
        async with ctx.db.pool.acquire() as conn:
            ward = await store.get_ward(conn, ward_id)
            if ward is None:
                raise HTTPException(404, "ward not found")
            counts = await store.bed_counts(conn, [ward_id])
            rooms = await store.rooms_of(conn, ward_id)
        return {**store.ward_json(ward, counts[ward_id]), "rooms": rooms}

    @r.get("/beds")
    async def list_beds(
        request: Request,
        ward_id: uuid.UUID | None = None,
        state: BedState | None = None,
        limit: Limit = MAX_BEDS_PER_WARD,
    ) -> dict[str, Any]:
        """Beds and their states, of one ward or all, optionally of one state (staff)."""
        await signed_in(request, STAFF)
        async with ctx.db.pool.acquire() as conn:
            if ward_id is not None and await store.get_ward(conn, ward_id) is None:
                raise HTTPException(404, "ward not found")
            rows = await store.beds(conn, ward_id, state, limit)
        return {"items": [store.bed_json(b) for b in rows]}

    @r.post("/beds/{bed_id}/{action}")
    async def bed_step(bed_id: uuid.UUID, action: BedStep, request: Request) -> dict[str, Any]:
        """Release a cleaned bed (housekeeping), close or open one, or put it in isolation (NURSE,
        ADMIN). A step the bed's state does not allow answers 409."""
        await signed_in(request, HOUSEKEEPING)
        try:
            async with ctx.db.uow() as uow:
                bed = await handlers.bed_action(uow, bed_id, BedAction(action.value))
        except handlers.UnknownError:
            raise HTTPException(404, "bed not found") from None
        except InvalidTransitionError as exc:
            raise HTTPException(409, str(exc)) from None
        return store.bed_json(bed)

    # --- admissions ------------------------------------------------------------------------------

    @r.post("/admissions/charges/run")
    async def run_charges(request: Request, night: Annotated[CalendarDate, Query(alias="date")]) -> dict[str, Any]:
        """Post the bed charges of every night up to and including ``date`` not posted yet (ADMIN).
        Idempotent: a re-run posts nothing new; a later run catches up nights that were missed.
        Only nights that are over can be charged: ``date`` must be before today (hospital time)."""
        await signed_in(request, (Role.ADMIN,))
        if night >= ctx.db.clock().astimezone(zone).date():
            raise HTTPException(422, "only nights before today can be charged")
        summary = await handlers.run_charges(ctx.db, night, zone)
        return summary.as_json()

    @r.post("/admissions", status_code=201, response_model=Admitted)
    async def admit(body: NewAdmission, request: Request) -> Admitted:
        """Admit a patient to a free bed of the ward (RECEPTIONIST, ADMIN). 409 when the ward has no
        free bed or the patient is already admitted; 422 for an unknown patient or ward."""
        who = await authenticate(request, tokens)
        decision = policy.decide(Operation.ADMIT, who.roles, NONE)
        if not decision.allowed:
            raise await deny(who, body.patient_id, decision, "create", resource="admission", what="patient")

        async def audited(uow: UnitOfWork, row: dict[str, Any]) -> None:
            audit(uow, who, body.patient_id, "create", decision, resource="admission")

        try:
            cmd = handlers.Admit(body.patient_id, body.practitioner_id, body.ward_id)
            row = await handlers.admit(ctx.db, known, cmd, uuid.UUID(who.subject), also=audited)
        except handlers.UnknownError as exc:
            raise HTTPException(422, f"unknown {exc.what}_id") from None
        except handlers.NoFreeBedError:
            raise ProblemError(
                409, "the ward has no free bed", conflict={"with": "beds", "ward_id": str(body.ward_id)}
            ) from None
        except handlers.AlreadyAdmittedError:
            raise ProblemError(409, "the patient is already admitted", conflict={"with": "admission"}) from None
        return Admitted(id=row["id"], bed_id=row["bed_id"], ward_id=row["ward_id"], status=row["status"])

    @r.get("/admissions")
    async def list_admissions(
        request: Request,
        patient_id: uuid.UUID | None = None,
        active: bool | None = None,
        limit: Limit = 50,
    ) -> dict[str, Any]:
        """Admissions, latest first: of one patient, and/or only active ones (reception, ADMIN); a
        clinician lists one patient's (``patient_id``), in their care or under an emergency grant."""
        who = await authenticate(request, tokens)
        if patient_id is not None:
            decision = await access(who, Operation.READ, patient_id, "patient")
            if not decision.allowed:
                raise await deny(who, patient_id, decision, "read", resource="admission", what="patient")
        elif policy.lists_everyone(who.roles):
            decision = policy.decide(Operation.READ, who.roles, NONE)
        elif policy.RULES[Operation.READ].admits(who.roles):
            raise HTTPException(403, "clinicians list the admissions of one patient in their care: give patient_id")
        else:
            raise HTTPException(403, "not allowed for your role")
        async with ctx.db.read() as uow:
            rows = await store.admissions(uow.conn, patient_id, active, limit)
            for seen in dict.fromkeys(x["patient_id"] for x in rows):
                audit(uow, who, seen, "read", decision, resource="admission")
        return {"items": [store.admission_json(x) for x in rows]}

    @r.get("/admissions/{admission_id}")
    async def one(admission_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """One admission with the beds it went through and how many nights are charged so far
        (reception, ADMIN, clinicians caring for the patient)."""
        who = await authenticate(request, tokens)
        row, decision = await opened(who, admission_id, Operation.READ, "read")
        async with ctx.db.read() as uow:
            stays = await store.stay_history(uow.conn, admission_id)
            nights = await store.count_charges(uow.conn, admission_id)
            audit(uow, who, row["patient_id"], "read", decision, resource="admission")
        return {**store.admission_json(row), "nights": nights, "stays": [store.stay_json(s) for s in stays]}

    @r.get("/admissions/{admission_id}/charges")
    async def charges(admission_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """The bed nights charged for an admission, one per night (reception, ADMIN, BILLING,
        clinicians caring for the patient)."""
        who = await authenticate(request, tokens)
        row, decision = await opened(who, admission_id, Operation.READ_CHARGES, "read", "bed_charge")
        async with ctx.db.read() as uow:
            items = await store.charges_of(uow.conn, admission_id)
            audit(uow, who, row["patient_id"], "read", decision, resource="bed_charge")
        totals: dict[str, Decimal] = {}
        for c in items:
            totals[c["currency"]] = totals.get(c["currency"], Decimal("0")) + c["amount"]
        return {
            "admission_id": str(admission_id),
            "nights": len(items),
            "items": [store.charge_json(c) for c in items],
            "totals": [{"amount": store.money(v), "currency": k} for k, v in sorted(totals.items())],
        }

    @r.post("/admissions/{admission_id}/transfer")
    async def transfer(admission_id: uuid.UUID, body: Transfer, request: Request) -> dict[str, Any]:
        """Move an admitted patient to a free bed of a ward (or the bed named): the old bed goes to
        cleaning (RECEPTIONIST, ADMIN, a DOCTOR or NURSE caring for the patient). 409 if no bed is
        free or the admission is over."""
        who = await authenticate(request, tokens)
        _, decision = await opened(who, admission_id, Operation.TRANSFER, "update")
        try:
            async with ctx.db.uow() as uow:
                moved = await handlers.transfer(uow, admission_id, body.ward_id, body.bed_id)
                audit(uow, who, moved["patient_id"], "update", decision, resource="admission")
        except handlers.UnknownError as exc:
            if exc.what == "admission":
                raise HTTPException(404, "admission not found") from None
            raise HTTPException(422, f"unknown {exc.what}_id (or not in that ward)") from None
        except handlers.NoFreeBedError:
            raise ProblemError(
                409, "the ward has no free bed", conflict={"with": "beds", "ward_id": str(body.ward_id)}
            ) from None
        except InvalidTransitionError as exc:
            raise HTTPException(409, str(exc)) from None
        return store.admission_json(moved)

    @r.post("/admissions/{admission_id}/discharge")
    async def discharge(admission_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """Discharge: every remaining bed night is charged first, then the admission closes and its
        bed goes to cleaning (RECEPTIONIST, ADMIN, a DOCTOR or NURSE caring for the patient). 409 if
        already discharged."""
        who = await authenticate(request, tokens)
        _, decision = await opened(who, admission_id, Operation.DISCHARGE, "update")
        try:
            async with ctx.db.uow() as uow:
                done = await handlers.discharge(uow, admission_id, uuid.UUID(who.subject), zone)
                audit(uow, who, done["patient_id"], "update", decision, resource="admission")
        except handlers.UnknownError:
            raise HTTPException(404, "admission not found") from None
        except InvalidTransitionError as exc:
            raise HTTPException(409, str(exc)) from None
        return {**store.admission_json(done), "nights": done["nights"]}

    return r
