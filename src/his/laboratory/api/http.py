"""Internal HTTP API of the laboratory service (reached through the gateway).

Every route re-verifies the caller's token and decides through ``his.laboratory.policy``: doctors
order and nurses collect for patients in their care (or under an emergency grant); technicians
collect, start and result; the ordering doctor, a technician or ADMIN cancels. Technicians read
every order; clinicians the orders of patients in their care and those they placed; a patient
only the orders of the record linked to their own account (another patient's id answers 404).
Every decision on an order, allowed or denied, is audited.

The routes only translate: the caller and the use cases (``his.laboratory.handlers``) arrive
through ``Depends``; each route turns the request into a command, calls one use case and turns
the ``Order`` it returns into the response model.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from his.clients.laboratory import RESULTS_PATH
from his.kernel.params import Limit
from his.kernel.web import Caller, Moment, errors, provided, public
from his.laboratory.domain import MAX_TESTS, VALUE_MAX, Action, LabTest, Order, Priority, Result, Status, Submitted
from his.laboratory.handlers import FindOrders, Laboratory, PlaceOrder

router = APIRouter(prefix="/lab", tags=["laboratory"])
Lab = Annotated[Laboratory, Depends(provided(Laboratory))]

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


def _dec(v: Decimal | None) -> str | None:
    return None if v is None else str(v)


class CatalogueTest(BaseModel):
    """A test that may be ordered; limits and price are decimals written as text."""

    code: str
    label: str
    specimen: str
    unit: str | None
    reference_low: str | None
    reference_high: str | None
    critical_low: str | None
    critical_high: str | None
    price: str
    currency: str

    @classmethod
    def of(cls, t: LabTest) -> CatalogueTest:
        return cls(
            code=t.code,
            label=t.label,
            specimen=t.specimen,
            unit=t.unit,
            reference_low=_dec(t.reference_low),
            reference_high=_dec(t.reference_high),
            critical_low=_dec(t.critical_low),
            critical_high=_dec(t.critical_high),
            price=f"{t.price:.2f}",
            currency=t.currency,
        )


class Catalogue(BaseModel):
    items: list[CatalogueTest]


class LabResult(BaseModel):
    """One result with the reference range it was flagged against (N, L, H, LL, HH or A)."""

    code: str
    value: str
    unit: str | None
    reference_low: str | None
    reference_high: str | None
    flag: str

    @classmethod
    def of(cls, r: Result) -> LabResult:
        return cls(
            code=r.code,
            value=r.value,
            unit=r.unit,
            reference_low=_dec(r.reference_low),
            reference_high=_dec(r.reference_high),
            flag=r.flag.value,
        )


class LabOrder(BaseModel):
    """A lab order: its tests in order, its state and when it reached each, its results."""

    id: uuid.UUID
    patient_id: uuid.UUID
    ordered_by: uuid.UUID
    priority: Priority
    status: Status
    version: int
    tests: list[str]
    placed_at: Moment
    collected_at: Moment | None
    started_at: Moment | None
    resulted_at: Moment | None
    cancelled_at: Moment | None
    results: list[LabResult]

    @classmethod
    def of(cls, o: Order) -> LabOrder:
        return cls(
            id=o.id,
            patient_id=o.patient_id,
            ordered_by=o.ordered_by,
            priority=o.priority,
            status=o.status,
            version=o.version,
            tests=list(o.tests),
            placed_at=o.placed_at,
            collected_at=o.collected_at,
            started_at=o.started_at,
            resulted_at=o.resulted_at,
            cancelled_at=o.cancelled_at,
            results=[LabResult.of(r) for r in o.results],
        )


class LabOrders(BaseModel):
    items: list[LabOrder]


class Placed(BaseModel):
    id: uuid.UUID
    status: Status


@router.get("/catalog", openapi_extra=public("/api/lab/catalog"))
async def catalog(who: Caller, lab: Lab) -> Catalogue:
    """The test catalogue: codes, specimen, unit, reference and critical ranges, price (any signed-in)."""
    return Catalogue(items=[CatalogueTest.of(t) for t in await lab.catalogue()])


@router.post("/orders", status_code=201, responses=errors(403, 404, 422), openapi_extra=public("/api/lab/orders"))
async def place(body: NewOrder, who: Caller, lab: Lab) -> Placed:
    """Order lab tests for a patient (a DOCTOR caring for the patient, or under an emergency
    grant; the caller is the ordering doctor). 422 for unknown or repeated test codes or an
    unknown patient; 503 if patients cannot be asked."""
    order = await lab.place(who, PlaceOrder(body.patient_id, body.tests, body.priority))
    return Placed(id=order.id, status=order.status)


@router.get("/orders", responses=errors(403, 404), openapi_extra=public("/api/lab/orders"))
async def orders(
    who: Caller, lab: Lab, patient_id: uuid.UUID | None = None, status: Status | None = None, limit: Limit = 50
) -> LabOrders:
    """Orders, newest first, by patient and/or status. LAB_TECH lists every order; a DOCTOR or
    NURSE one patient's orders in their care or under an emergency grant, and without
    patient_id the orders they placed; a patient their own (patient_id required)."""
    found = await lab.orders(who, FindOrders(patient_id, status, limit))
    return LabOrders(items=[LabOrder.of(o) for o in found])


@router.get("/orders/{order_id}", responses=errors(403, 404), openapi_extra=public("/api/lab/orders/{id}"))
async def one(order_id: uuid.UUID, who: Caller, lab: Lab) -> LabOrder:
    """One order with its results: LAB_TECH; its ordering doctor; a DOCTOR or NURSE caring for
    its patient or under an emergency grant; its patient."""
    return LabOrder.of(await lab.order(who, order_id))


# The route patients asks for a resulted order's values (``his.clients.laboratory``): no public
# path, so the gateway never forwards it; the listener admits patients' certificate on it alone.
@router.get(RESULTS_PATH.removeprefix(router.prefix), responses=errors(404, 409), include_in_schema=False)
async def released(order_id: uuid.UUID, lab: Lab) -> LabOrder:
    """Internal (the patients service only): a resulted order with its values, which
    ``LabOrderResulted`` does not carry; patients copies them into the chart. 404 for an unknown
    order, 409 for one not resulted."""
    return LabOrder.of(await lab.released(order_id))


@router.post(
    "/orders/{order_id}/results",
    responses=errors(403, 404, 409, 422),
    openapi_extra=public("/api/lab/orders/{id}/results"),
)
async def enter_results(order_id: uuid.UUID, body: NewResults, who: Caller, lab: Lab) -> LabOrder:
    """Result an in-progress order (LAB_TECH): one result per ordered test. Numbers are flagged
    from the catalogue's ranges (a contradicting flag is refused); other values need flag N or A.
    Publishes ``LabOrderResulted`` with the tests' prices. 409 unless the order is in progress."""
    submitted = [Submitted(x.code, x.value, x.unit, x.flag) for x in body.results]
    return LabOrder.of(await lab.enter_results(who, order_id, submitted))


@router.post(
    "/orders/{order_id}/{action}",
    responses=errors(403, 404, 409),
    openapi_extra=public("/api/lab/orders/{id}/{action}"),
)
async def step(order_id: uuid.UUID, action: Action, who: Caller, lab: Lab) -> LabOrder:
    """Collect the specimen (LAB_TECH, a NURSE caring for the patient), start the analysis
    (LAB_TECH) or cancel (the ordering DOCTOR, LAB_TECH, ADMIN). An action the order's state
    does not allow answers 409, naming the state."""
    return LabOrder.of(await lab.act(who, order_id, action))
