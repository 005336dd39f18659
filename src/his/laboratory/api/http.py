"""Internal HTTP API of the laboratory service (reached through the gateway).

Every route re-verifies the caller's token and decides through ``his.laboratory.policy``: doctors
order and nurses collect for patients in their care (or under an emergency grant); technicians
collect, start and result; the ordering doctor, a technician or ADMIN cancels. Technicians read
every order; clinicians the orders of patients in their care and those they placed; a patient
only the orders of the record linked to their own account (another patient's id answers 404).
Every decision on an order, allowed or denied, is audited.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from his.access import CARE, CLINICIANS, NONE, Basis, Decision, Relationship
from his.clients.patients import PatientLookup, PatientRef, refused, relationship_for
from his.events.audit import Action as AuditAction
from his.events.audit import LaboratoryRecordAccessed, record_access
from his.kernel.auth import authenticate, jwks_verifier
from his.kernel.db import UnitOfWork
from his.kernel.params import Limit
from his.kernel.problems import HTTPException, ProblemError
from his.kernel.security import Principal, TokenVerifier
from his.kernel.service import ServiceContext
from his.laboratory import handlers, policy, store
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
from his.laboratory.policy import Operation

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

    def audit(
        uow: UnitOfWork,
        who: Principal,
        patient_id: uuid.UUID,
        action: AuditAction,
        decision: Decision,
        *,
        resource: str = "lab_order",
    ) -> None:
        record_access(
            uow,
            LaboratoryRecordAccessed,
            who,
            patient_id=patient_id,
            action=action,
            resource=resource,
            purpose=decision.purpose,
            outcome=decision.outcome,
        )

    async def known(patient_id: uuid.UUID) -> PatientRef | None:
        try:
            return await handlers.patient(ctx.db, patients, patient_id)
        except handlers.UnknownError:
            return None

    async def access(
        who: Principal, op: Operation, patient_id: uuid.UUID, what: str, *, placed_it: bool = False
    ) -> Decision:
        """The policy's decision on ``op`` for the caller and this patient (not yet audited)."""
        rel: Relationship | None = NONE
        if policy.needs_relationship(op, who.roles, placed_it=placed_it):
            rel = await relationship_for(patients, policy.RULES[op], patient_id, who, known)
        if rel is None:
            raise refused(policy.not_found(op, who.roles), patient_id, what)
        return policy.decide(op, who.roles, rel, placed_it=placed_it)

    async def deny(
        who: Principal,
        patient_id: uuid.UUID,
        decision: Decision,
        action: AuditAction,
        *,
        resource: str = "lab_order",
        what: str = "order",
    ) -> ProblemError:
        """Audit a refusal (committed before the answer) and give the error to raise."""
        async with ctx.db.read() as uow:
            audit(uow, who, patient_id, action, decision, resource=resource)
        return refused(decision, patient_id, what)

    async def opened(
        who: Principal, order_id: uuid.UUID, op: Operation, action: AuditAction, resource: str = "lab_order"
    ) -> tuple[dict[str, Any], Decision]:
        """The order and the policy's decision on ``op``; a refusal is audited and raised."""
        async with ctx.db.pool.acquire() as conn:
            row = await store.get_order(conn, order_id)
        if row is None:
            raise refused(policy.not_found(op, who.roles), None, "order")
        placed_it = str(row["ordered_by"]) == who.subject
        decision = await access(who, op, row["patient_id"], "order", placed_it=placed_it)
        if not decision.allowed:
            raise await deny(who, row["patient_id"], decision, action, resource=resource)
        return row, decision

    def refused_step(exc: InvalidTransitionError) -> ProblemError:
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
        """Order lab tests for a patient (a DOCTOR caring for the patient, or under an emergency
        grant; the caller is the ordering doctor). 422 for unknown or repeated test codes or an
        unknown patient; 503 if patients cannot be asked."""
        who = await authenticate(request, tokens)
        if not policy.may_ever(Operation.PLACE, who.roles):
            decision = policy.decide(Operation.PLACE, who.roles, NONE)
            raise await deny(who, body.patient_id, decision, "create", what="patient")
        ref = await known(body.patient_id)
        if ref is None:
            raise HTTPException(422, "unknown patient_id")
        decision = await access(who, Operation.PLACE, body.patient_id, "patient")
        if not decision.allowed:
            raise await deny(who, body.patient_id, decision, "create", what="patient")
        try:
            async with ctx.db.uow() as uow:
                row = await handlers.place(uow, ref, body.tests, body.priority, uuid.UUID(who.subject))
                audit(uow, who, ref.patient_id, "create", decision)
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
        """Orders, newest first, by patient and/or status. LAB_TECH lists every order; a DOCTOR or
        NURSE one patient's orders in their care or under an emergency grant, and without
        patient_id the orders they placed; a patient their own (patient_id required)."""
        who = await authenticate(request, tokens)
        ordered_by: uuid.UUID | None = None
        if patient_id is not None:
            decision = await access(who, Operation.READ, patient_id, "patient")
            if not decision.allowed:
                raise await deny(who, patient_id, decision, "read", what="patient")
        elif policy.lists_everything(who.roles):
            decision = policy.decide(Operation.READ, who.roles, NONE)
        elif who.has_any(*CLINICIANS):
            decision, ordered_by = Decision(CARE, basis=Basis.CARE), uuid.UUID(who.subject)
        else:
            raise HTTPException(403, "not allowed for your role: a patient lists their own orders with patient_id")
        async with ctx.db.read() as uow:
            rows = await store.list_orders(
                uow.conn, patient_id=patient_id, status=status, limit=limit, ordered_by=ordered_by
            )
            results = await store.results_of(uow.conn, [x["id"] for x in rows if x["status"] == "resulted"])
            seen = [patient_id] if patient_id else list(dict.fromkeys(x["patient_id"] for x in rows))
            for pid in seen:
                audit(uow, who, pid, "read", decision)
        return {"items": [store.order_json(x, results.get(x["id"], [])) for x in rows]}

    @r.get("/orders/{order_id}")
    async def one(order_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """One order with its results: LAB_TECH; its ordering doctor; a DOCTOR or NURSE caring for
        its patient or under an emergency grant; its patient."""
        who = await authenticate(request, tokens)
        row, decision = await opened(who, order_id, Operation.READ, "read")
        async with ctx.db.read() as uow:
            results = await store.results_of(uow.conn, [order_id])
            audit(uow, who, row["patient_id"], "read", decision)
        return store.order_json(row, results.get(order_id, []))

    @r.post("/orders/{order_id}/results")
    async def enter_results(order_id: uuid.UUID, body: NewResults, request: Request) -> dict[str, Any]:
        """Result an in-progress order (LAB_TECH): one result per ordered test. Numbers are flagged
        from the catalogue's ranges (a contradicting flag is refused); other values need flag N or A.
        Publishes ``LabOrderResulted`` with the tests' prices. 409 unless the order is in progress."""
        who = await authenticate(request, tokens)
        _, decision = await opened(who, order_id, Operation.RESULT, "create", "lab_order/result")
        submitted = [Submitted(x.code, x.value, x.unit, x.flag) for x in body.results]
        try:
            async with ctx.db.uow() as uow:
                order = await handlers.locked(uow, order_id)
                row, _ = await handlers.result(uow, order, submitted, uuid.UUID(who.subject))
                audit(uow, who, row["patient_id"], "create", decision, resource="lab_order/result")
                results = await store.results_of(uow.conn, [order_id])
        except InvalidTransitionError as exc:
            raise refused_step(exc) from None
        except InvalidResultError as exc:
            raise HTTPException(422, str(exc)) from None
        return store.order_json(row, results.get(order_id, []))

    @r.post("/orders/{order_id}/{action}")
    async def step(order_id: uuid.UUID, action: Action, request: Request) -> dict[str, Any]:
        """Collect the specimen (LAB_TECH, a NURSE caring for the patient), start the analysis
        (LAB_TECH) or cancel (the ordering DOCTOR, LAB_TECH, ADMIN). An action the order's state
        does not allow answers 409, naming the state."""
        who = await authenticate(request, tokens)
        _, decision = await opened(who, order_id, policy.OF_ACTION[action], "update")
        try:
            async with ctx.db.uow() as uow:
                order = await handlers.locked(uow, order_id)
                row = await handlers.act(uow, order, action, uuid.UUID(who.subject))
                audit(uow, who, row["patient_id"], "update", decision)
        except InvalidTransitionError as exc:
            raise refused_step(exc) from None
        return store.order_json(row)

    return r
