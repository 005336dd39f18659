"""Internal HTTP API of the inventory service (reached through the gateway).

Every route re-verifies the caller's token and calls one use case of
``his.inventory.handlers.Inventory``. Stock is visible to all staff (every role but PATIENT);
ADMIN defines items; ADMIN, nurses and lab technicians receive stock; clinicians, lab
technicians and ADMIN consume it. A consumption for a patient is that patient's data, decided by
``his.inventory.policy`` (a clinician needs a care relationship or an emergency grant); the
decision, allowed or denied, is audited, and the patient must exist. Codes are case-insensitive
on input and stored upper-case.
"""

from __future__ import annotations

import re
import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StringConstraints, model_validator

from his.inventory import domain, handlers
from his.inventory.domain import COUNTED_UNITS, ITEM_CODE, LOCATION, MAX_QUANTITY, Reason, plain
from his.inventory.handlers import Inventory
from his.kernel.params import Limit
from his.kernel.problems import HTTPException
from his.kernel.web import Caller, Moment, errors, provided, public

router = APIRouter(tags=["inventory"])
Stock = Annotated[Inventory, Depends(provided(Inventory))]


def _upper(v: object) -> object:
    return v.upper() if isinstance(v, str) and len(v) <= 64 else v


def _iso_date(v: object) -> object:
    """Only ``YYYY-MM-DD`` (no timestamps, no numbers): a malformed date is a 422."""
    if isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        return v
    if v is None or isinstance(v, date):
        return v
    raise ValueError("expected a date as YYYY-MM-DD")


ItemCode = Annotated[str, StringConstraints(max_length=32, pattern=ITEM_CODE.pattern), BeforeValidator(_upper)]
Location = Annotated[str, StringConstraints(max_length=32, pattern=LOCATION.pattern), BeforeValidator(_upper)]
Quantity = Annotated[Decimal, Field(gt=0, le=MAX_QUANTITY, max_digits=14, decimal_places=3)]
Threshold = Annotated[Decimal, Field(ge=0, le=MAX_QUANTITY, max_digits=14, decimal_places=3)]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]


class NewItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: ItemCode
    description: str = Field(min_length=1, max_length=500)
    unit: str = Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9%/._ -]+$")
    chargeable: StrictBool
    thresholds: dict[Location, Threshold] = Field(default_factory=dict, max_length=50)


class NewReceipt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_code: ItemCode
    location: Location
    lot: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
    quantity: Quantity
    expires_on: IsoDate | None = None


class NewConsumption(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_code: ItemCode
    location: Location
    quantity: Quantity
    patient_id: uuid.UUID | None = None
    reason: Literal["patient", "other"]
    backorder: StrictBool = False

    @model_validator(mode="after")
    def _patient_iff_for_a_patient(self) -> NewConsumption:
        if (self.reason == "patient") != (self.patient_id is not None):
            raise ValueError("patient_id is required when the reason is 'patient', and only then")
        return self


def qty(value: Decimal) -> str:
    """A quantity as a plain decimal string without trailing zeros (``"20"``, ``"2.5"``)."""
    return format(plain(value), "f")


def _code(value: str | None, pattern: re.Pattern[str], what: str) -> str | None:
    if value is None:
        return None
    code = value.upper()
    if not pattern.fullmatch(code):
        raise HTTPException(422, f"malformed {what}")
    return code


#: Quantities are decimals written as text without trailing zeros ("20", "2.5").
Amount = str
ItemFilter = Annotated[str | None, Query(max_length=32)]
LocationFilter = Annotated[str | None, Query(max_length=32)]


class ItemOut(BaseModel):
    model_config = ConfigDict(title="Item")
    code: str
    description: str
    unit: str
    chargeable: bool
    #: The low-stock threshold per location.
    thresholds: dict[str, Amount]

    @classmethod
    def of(cls, i: domain.Item) -> ItemOut:
        thresholds = {k: qty(v) for k, v in i.thresholds.items()}
        return cls(code=i.code, description=i.description, unit=i.unit, chargeable=i.chargeable, thresholds=thresholds)


class Items(BaseModel):
    items: list[ItemOut]


class Unit(BaseModel):
    unit: str
    #: Counted units (a piece, a pack, a vial) take whole quantities only.
    whole_numbers_only: bool


class Units(BaseModel):
    items: list[Unit]


class Received(BaseModel):
    id: uuid.UUID
    item_code: str
    location: str
    lot: str
    expires_on: date | None
    quantity: Amount
    #: The lot's quantity after the receipt.
    lot_quantity: Amount
    #: Usable stock of the item at the location after the receipt.
    on_hand: Amount


class LotTaken(BaseModel):
    lot: str
    expires_on: date | None
    quantity: Amount


class Consumed(BaseModel):
    status: Literal["consumed"] = "consumed"
    id: uuid.UUID
    item_code: str
    location: str
    quantity: Amount
    reason: str
    patient_id: uuid.UUID | None
    chargeable: bool
    lots: list[LotTaken]
    on_hand: Amount


class Backordered(BaseModel):
    status: Literal["backordered"] = "backordered"
    backorder_id: uuid.UUID
    item_code: str
    location: str
    requested: Amount
    available: Amount
    detail: str


class ShelvedLot(BaseModel):
    lot: str
    expires_on: date | None
    quantity: Amount
    expired: bool
    received_at: Moment


class StockLevel(BaseModel):
    item_code: str
    location: str
    unit: str
    on_hand: Amount
    expired: Amount
    threshold: Amount | None
    low: bool
    lots: list[ShelvedLot]

    @classmethod
    def of(cls, s: domain.StockLevel) -> StockLevel:
        return cls(
            item_code=s.item_code,
            location=s.location,
            unit=s.unit,
            on_hand=qty(s.on_hand),
            expired=qty(s.expired),
            threshold=None if s.threshold is None else qty(s.threshold),
            low=s.low,
            lots=[
                ShelvedLot(
                    lot=x.lot,
                    expires_on=x.expires_on,
                    quantity=qty(x.quantity),
                    expired=x.expired,
                    received_at=x.received_at,
                )
                for x in s.lots
            ],
        )


class StockReport(BaseModel):
    as_of: date
    items: list[StockLevel]


class ExpiringLot(BaseModel):
    item_code: str
    unit: str
    location: str
    lot: str
    expires_on: date
    quantity: Amount
    expired: bool
    days_left: int


class ExpiryReport(BaseModel):
    as_of: date
    days: int
    items: list[ExpiringLot]


class LowStockAlert(BaseModel):
    id: uuid.UUID
    item_code: str
    location: str
    on_hand: Amount
    threshold: Amount
    alerted_at: Moment


class LowStockAlerts(BaseModel):
    items: list[LowStockAlert]


class Backorder(BaseModel):
    id: uuid.UUID
    item_code: str
    location: str
    requested: Amount
    available: Amount
    reason: str
    source_id: uuid.UUID | None
    created_at: Moment


class Backorders(BaseModel):
    items: list[Backorder]


@router.post(
    "/inventory/items", status_code=201, responses=errors(403, 409), openapi_extra=public("/api/inventory/items")
)
async def create_item(body: NewItem, who: Caller, stock: Stock) -> ItemOut:
    """Define an item with its unit, whether it is billed to the patient, and low-stock
    thresholds per location (ADMIN). 409 if the code exists; a unit the hospital does not know
    is a 422 naming the valid ones (``GET /api/inventory/units``)."""
    item = handlers.NewItem(body.code, body.description, body.unit, body.chargeable, dict(body.thresholds))
    return ItemOut.of(await stock.create_item(who, item))


@router.get("/inventory/units", responses=errors(403), openapi_extra=public("/api/inventory/units"))
async def units(who: Caller, stock: Stock) -> Units:
    """The units an item may be kept in: counted ones take whole quantities only (staff)."""
    return Units(items=[Unit(unit=u, whole_numbers_only=u in COUNTED_UNITS) for u in stock.units(who)])


@router.get("/inventory/items", responses=errors(403), openapi_extra=public("/api/inventory/items"))
async def items(who: Caller, stock: Stock) -> Items:
    """Every item with its thresholds per location (staff)."""
    return Items(items=[ItemOut.of(i) for i in await stock.items(who)])


@router.post(
    "/inventory/receipts", status_code=201, responses=errors(403), openapi_extra=public("/api/inventory/receipts")
)
async def receive(body: NewReceipt, who: Caller, stock: Stock) -> Received:
    """Receive a lot of an item into a location; receiving into an existing lot adds to it
    (ADMIN, NURSE, LAB_TECH). 422 for an unknown item or a lot already past its expiry."""
    receipt = handlers.Receipt(body.item_code, body.location, body.lot, body.quantity, body.expires_on)
    done = await stock.receive(who, receipt)
    r = done.receipt
    return Received(
        id=done.id,
        item_code=r.item_code,
        location=r.location,
        lot=r.lot,
        expires_on=r.expires_on,
        quantity=qty(r.quantity),
        lot_quantity=qty(done.lot_quantity),
        on_hand=qty(done.on_hand),
    )


@router.post(
    "/inventory/consumptions",
    status_code=201,
    response_model=Consumed,
    responses={202: {"model": Backordered, "description": "back-ordered: nothing was taken"}, **errors(403, 404, 409)},
    openapi_extra=public("/api/inventory/consumptions"),
)
async def consume(body: NewConsumption, who: Caller, stock: Stock) -> Consumed | JSONResponse:
    """Use stock, first-expiring lots first (expired lots never), all or nothing (NURSE, DOCTOR,
    LAB_TECH, ADMIN; for a patient, a DOCTOR or NURSE only within a care relationship or under
    an emergency grant). A shortfall answers 409 with what is available, or with ``backorder: true``
    takes nothing, records a back-order and answers 202. A chargeable item used for a patient
    is billed to them."""
    c = handlers.Consumption(
        body.item_code,
        body.location,
        body.quantity,
        Reason(body.reason),
        patient_id=body.patient_id,
        backorder=body.backorder,
    )
    done = await stock.consume(who, c)
    if isinstance(done, handlers.Backordered):
        available = qty(done.available)
        later = Backordered(
            backorder_id=done.id,
            item_code=body.item_code,
            location=body.location,
            requested=qty(done.requested),
            available=available,
            detail=f"only {available} available: nothing was taken and the request was back-ordered",
        )
        return JSONResponse(later.model_dump(mode="json"), status_code=202)
    return Consumed(
        id=done.id,
        item_code=body.item_code,
        location=body.location,
        quantity=qty(body.quantity),
        reason=body.reason,
        patient_id=body.patient_id,
        chargeable=done.chargeable,
        lots=[LotTaken(lot=t.lot.lot, expires_on=t.lot.expires_on, quantity=qty(t.quantity)) for t in done.takes],
        on_hand=qty(done.on_hand),
    )


@router.get("/inventory/stock", responses=errors(403), openapi_extra=public("/api/inventory/stock"))
async def stock_report(
    who: Caller, stock: Stock, item_code: ItemFilter = None, location: LocationFilter = None
) -> StockReport:
    """Stock per (item, location): usable total, expired quantity still on the shelf, threshold,
    low-stock state, and the lots in the order they will be used (staff)."""
    code, place = _code(item_code, ITEM_CODE, "item_code"), _code(location, LOCATION, "location")
    levels = await stock.stock(who, code, place)
    return StockReport(as_of=stock.today(), items=[StockLevel.of(s) for s in levels])


@router.get("/inventory/expiring", responses=errors(403), openapi_extra=public("/api/inventory/expiring"))
async def expiring(
    who: Caller, stock: Stock, days: Annotated[int, Query(ge=0, le=3650)] = 30, location: LocationFilter = None
) -> ExpiryReport:
    """The expiry report: lots with stock that expire within ``days`` (and those already
    expired), soonest first (staff)."""
    place = _code(location, LOCATION, "location")
    day = stock.today()
    found = await stock.expiring(who, day + timedelta(days=days), place)
    return ExpiryReport(
        as_of=day,
        days=days,
        items=[
            ExpiringLot(
                item_code=x.item_code,
                unit=x.unit,
                location=x.location,
                lot=x.lot,
                expires_on=x.expires_on,
                quantity=qty(x.quantity),
                expired=x.expires_on < day,
                days_left=(x.expires_on - day).days,
            )
            for x in found
        ],
    )


@router.get("/inventory/alerts", responses=errors(403), openapi_extra=public("/api/inventory/alerts"))
async def alerts(
    who: Caller, stock: Stock, item_code: ItemFilter = None, location: LocationFilter = None, limit: Limit = 100
) -> LowStockAlerts:
    """Low-stock alerts, latest first: one per fall to or below an (item, location)'s threshold (staff)."""
    code, place = _code(item_code, ITEM_CODE, "item_code"), _code(location, LOCATION, "location")
    found = await stock.alerts(who, code, place, limit)
    return LowStockAlerts(
        items=[
            LowStockAlert(
                id=x.id,
                item_code=x.item_code,
                location=x.location,
                on_hand=qty(x.on_hand),
                threshold=qty(x.threshold),
                alerted_at=x.alerted_at,
            )
            for x in found
        ]
    )


@router.get("/inventory/backorders", responses=errors(403), openapi_extra=public("/api/inventory/backorders"))
async def backorders(
    who: Caller, stock: Stock, item_code: ItemFilter = None, location: LocationFilter = None, limit: Limit = 100
) -> Backorders:
    """Back-orders (requests that found too little stock and took nothing), latest first (staff).
    A lab order's back-order names the order as ``source_id``; patients are not listed here."""
    code, place = _code(item_code, ITEM_CODE, "item_code"), _code(location, LOCATION, "location")
    found = await stock.backorders(who, code, place, limit)
    return Backorders(
        items=[
            Backorder(
                id=x.id,
                item_code=x.item_code,
                location=x.location,
                requested=qty(x.requested),
                available=qty(x.available),
                reason=x.reason,
                source_id=x.source_id,
                created_at=x.created_at,
            )
            for x in found
        ]
    )
