"""Internal HTTP API of the laboratory service (reached through the gateway).

Every route re-verifies the caller's token. Doctors order; nurses and technicians collect;
technicians start and result; the ordering doctor, a technician or ADMIN cancels. Clinicians,
technicians and ADMIN read every order; a patient reads only the orders of the record linked to
their own account (any other id answers 404). Every read or write of an order is audited.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from his.clients.patients import CLINICIANS, PatientLookup, care_required, clinician_purpose
from his.events.audit import Action as AuditAction
from his.events.audit import LaboratoryRecordAccessed, record_access
from his.kernel.auth import authenticate, jwks_verifier, require
from his.kernel.db import UnitOfWork
from his.kernel.params import Limit
from his.kernel.problems import HTTPException, ProblemError
from his.kernel.security import Principal, TokenVerifier
from his.kernel.service import ServiceContext
from his.laboratory import handlers, store
from his.laboratory.domain import (
    MAX_TESTS,
    VALUE_MAX,
    Action,
    InvalidOrderError,
    InvalidResultError,
    InvalidTransitionError,
    Priority,
    Status,
    Submitted,
)

ORDERERS = ("DOCTOR",)
READERS = ("DOCTOR", "NURSE", "LAB_TECH", "ADMIN")
#: Read every order and its results by role alone (clinicians need a basis: ``CLINICIANS``).
BY_ROLE = ("LAB_TECH", "ADMIN")
RESULTERS = ("LAB_TECH",)
WHO_MAY: dict[Action, tuple[str, ...]] = {
    Action.COLLECT: ("NURSE", "LAB_TECH"),
    Action.START: ("LAB_TECH",),
    # A DOCTOR only for their own orders (checked on the order).
    Action.CANCEL: ("DOCTOR", "LAB_TECH", "ADMIN"),
}

Code = Annotated[str, Field(min_length=1, max_length=16)]


class NewOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient_id: uuid.UUID
    tests: list[Code] = Field(max_length=MAX_TESTS)
    priority: Priority = Priority.ROUTINE


class ResultIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Code
    #: The measured value as text: a plain number ("5.4") is flagged against the reference range.
    value: str = Field(min_length=1, max_length=VALUE_MAX)
    #: If given, it must be the catalogue's unit for the test.
    unit: str | None = Field(default=None, max_length=32)
    #: N, L, H, LL, HH or A; required (N or A) for a value that is not a number.
    flag: str | None = Field(default=None, max_length=2)


class NewResults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    results: list[ResultIn] = Field(min_length=1, max_length=MAX_TESTS)


class Placed(BaseModel):
    id: uuid.UUID
    status: str


def router(ctx: ServiceContext, patients: PatientLookup, verifier: TokenVerifier | None = None) -> APIRouter:
    r = APIRouter(prefix="/lab", tags=["laboratory"])
    tokens = verifier or jwks_verifier()

    def audit(uow: UnitOfWork, who: Principal, patient_id: uuid.UUID, action: AuditAction,
              resource: str = "lab_order", *, purpose: str | None = None) -> None:  # fmt: skip
        purpose = purpose or ("care" if who.has_any(*READERS) else "own_record")
        record_access(uow, LaboratoryRecordAccessed, who, patient_id=patient_id, action=action,
                      resource=resource, purpose=purpose)  # fmt: skip

    async def own(who: Principal, patient_id: uuid.UUID) -> bool:
        """The patient record is linked to the caller's own account."""
        if not who.has_any("PATIENT"):
            return False
        try:
            ref = await handlers.patient(ctx.db, patients, patient_id)
        except handlers.UnknownError:
            return False
        return ref.account_id is not None and str(ref.account_id) == who.subject

    async def may_see(who: Principal, patient_id: uuid.UUID) -> bool:
        """Staff by role; a patient only the record linked to their own account (state changes:
        who may make which is decided by role in ``step``)."""
        return who.has_any(*READERS) or await own(who, patient_id)

    async def reading(who: Principal, patient_id: uuid.UUID, ordered_by: uuid.UUID | None = None) -> str | None:
        """The purpose on which ``who`` may read the patient's lab orders and results, or None.

        The lab's staff and administrators read every order by role; a DOCTOR or NURSE needs a
        care relationship or an emergency grant with the patient (asked of patients), as for the
        chart, except that a doctor always reads the orders they placed; a patient their own.
        """
        if who.has_any(*BY_ROLE):
            return "care"
        if who.has_any(*CLINICIANS):
            if ordered_by is not None and str(ordered_by) == who.subject:
                return "care"
            if purpose := await clinician_purpose(patients, patient_id, uuid.UUID(who.subject)):
                return purpose
        if await own(who, patient_id):
            return "own_record"
        return None

    async def load(who: Principal, order_id: uuid.UUID) -> dict[str, Any]:
        async with ctx.db.pool.acquire() as conn:
            row = await store.get_order(conn, order_id)
        if row is None or not await may_see(who, row["patient_id"]):
            raise HTTPException(404, "order not found")
        return row

    def refused(exc: InvalidTransitionError) -> ProblemError:
        return ProblemError(409, str(exc), state=exc.status.value)

    @r.get("/catalog")
    async def catalog(request: Request) -> dict[str, Any]:
        """The test catalogue: codes, specimen, unit, reference and critical ranges, price (any signed-in)."""
        await authenticate(request, tokens)
        async with ctx.db.pool.acquire() as conn:
            tests = await store.catalogue(conn)
        return {"items": [store.catalogue_json(t) for t in tests.values()]}

    @r.post("/orders", status_code=201, response_model=Placed)
    async def place(body: NewOrder, request: Request) -> Placed:
        """Order lab tests for a patient (DOCTOR; the caller is the ordering doctor). 422 for unknown
        or repeated test codes or an unknown patient; 503 if patients cannot be asked."""
        who = await authenticate(request, tokens)
        require(who, *ORDERERS)
        try:
            ref = await handlers.patient(ctx.db, patients, body.patient_id)
        except handlers.UnknownError:
            raise HTTPException(422, "unknown patient_id") from None
        try:
            async with ctx.db.uow() as uow:
                row = await handlers.place(uow, ref, body.tests, body.priority, uuid.UUID(who.subject))
                audit(uow, who, ref.patient_id, "create")
        except InvalidOrderError as exc:
            raise HTTPException(422, str(exc)) from None
        return Placed(id=row["id"], status=row["status"])

    @r.get("/orders")
    async def orders(
        request: Request,
        patient_id: uuid.UUID | None = None,
        status: Status | None = None,
        limit: Limit = 50,
    ) -> dict[str, Any]:
        """Orders, newest first, by patient and/or status. LAB_TECH and ADMIN list every order; a
        DOCTOR or NURSE one patient's orders with a care relationship or emergency grant, and
        without patient_id the orders they placed; a patient their own (patient_id required)."""
        who = await authenticate(request, tokens)
        purpose: str | None = None
        ordered_by: uuid.UUID | None = None
        if patient_id is not None:
            purpose = await reading(who, patient_id)
            if purpose is None:
                if who.has_any(*CLINICIANS):
                    raise HTTPException(403, care_required(patient_id))
                raise HTTPException(404, "patient not found")
        elif who.has_any(*BY_ROLE):
            purpose = "care"
        elif who.has_any(*CLINICIANS):
            ordered_by = uuid.UUID(who.subject)
        else:
            raise HTTPException(404, "patient not found")
        async with ctx.db.read() as uow:
            rows = await store.list_orders(
                uow.conn, patient_id=patient_id, status=status, limit=limit, ordered_by=ordered_by
            )
            results = await store.results_of(uow.conn, [x["id"] for x in rows if x["status"] == "resulted"])
            seen = [patient_id] if patient_id else list(dict.fromkeys(x["patient_id"] for x in rows))
            for pid in seen:
                audit(uow, who, pid, "read", purpose=purpose or "care")
        return {"items": [store.order_json(x, results.get(x["id"], [])) for x in rows]}

    @r.get("/orders/{order_id}")
    async def one(order_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """One order with its results: LAB_TECH and ADMIN; its ordering doctor; a DOCTOR or NURSE
        with a care relationship or emergency grant with its patient; its patient."""
        who = await authenticate(request, tokens)
        async with ctx.db.pool.acquire() as conn:
            row = await store.get_order(conn, order_id)
        purpose = None if row is None else await reading(who, row["patient_id"], row["ordered_by"])
        if row is None or purpose is None:
            raise HTTPException(404, "order not found")
        async with ctx.db.read() as uow:
            results = await store.results_of(uow.conn, [order_id])
            audit(uow, who, row["patient_id"], "read", purpose=purpose)
        return store.order_json(row, results.get(order_id, []))

    @r.post("/orders/{order_id}/results")
    async def enter_results(order_id: uuid.UUID, body: NewResults, request: Request) -> dict[str, Any]:
        """Result an in-progress order (LAB_TECH): one result per ordered test. Numbers are flagged
        from the catalogue's ranges (a contradicting flag is refused); other values need flag N or A.
        Publishes ``LabOrderResulted`` with the tests' prices. 409 unless the order is in progress."""
        who = await authenticate(request, tokens)
        await load(who, order_id)
        require(who, *RESULTERS)
        submitted = [Submitted(x.code, x.value, x.unit, x.flag) for x in body.results]
        try:
            async with ctx.db.uow() as uow:
                order = await handlers.locked(uow, order_id)
                row, _ = await handlers.result(uow, order, submitted, uuid.UUID(who.subject))
                audit(uow, who, row["patient_id"], "create", "lab_order/result")
                results = await store.results_of(uow.conn, [order_id])
        except InvalidTransitionError as exc:
            raise refused(exc) from None
        except InvalidResultError as exc:
            raise HTTPException(422, str(exc)) from None
        return store.order_json(row, results.get(order_id, []))

    @r.post("/orders/{order_id}/{action}")
    async def step(order_id: uuid.UUID, action: Action, request: Request) -> dict[str, Any]:
        """Collect the specimen (NURSE, LAB_TECH), start the analysis (LAB_TECH) or cancel (the
        ordering DOCTOR, LAB_TECH, ADMIN). An action the order's state does not allow answers 409,
        naming the state."""
        who = await authenticate(request, tokens)
        current = await load(who, order_id)
        allowed = WHO_MAY[action]
        if not who.has_any(*allowed):
            raise HTTPException(403, f"not allowed to {action.value} lab orders")
        only_own = action is Action.CANCEL and not who.has_any(*(x for x in allowed if x != "DOCTOR"))
        if only_own and str(current["ordered_by"]) != who.subject:
            raise HTTPException(403, "a doctor cancels only their own orders")
        try:
            async with ctx.db.uow() as uow:
                order = await handlers.locked(uow, order_id)
                row = await handlers.act(uow, order, action, uuid.UUID(who.subject))
                audit(uow, who, row["patient_id"], "update")
        except InvalidTransitionError as exc:
            raise refused(exc) from None
        return store.order_json(row)

    return r
