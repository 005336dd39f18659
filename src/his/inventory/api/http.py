"""Internal HTTP API of the inventory service (reached through the gateway).

Every route re-verifies the caller's token. Stock is visible to all staff (every role but
PATIENT); ADMIN defines items; ADMIN, nurses and lab technicians receive stock; clinicians, lab
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
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StringConstraints, model_validator

from his.access import NONE, Decision, Relationship, Role
from his.clients.patients import PatientLookup, refused
from his.events.audit import InventoryRecordAccessed, record_access
from his.inventory import handlers, policy, store
from his.inventory.domain import (
    COUNTED_UNITS,
    ITEM_CODE,
    LOCATION,
    MAX_QUANTITY,
    UNITS,
    Reason,
    ShortfallError,
    UnknownUnitError,
    UnsplittableQuantityError,
    is_expired,
    plain,
)
from his.inventory.domain import Lot as LotState
from his.inventory.policy import CONSUMERS, Operation
from his.kernel.auth import authenticate, jwks_verifier, require
from his.kernel.db import Connection, UnitOfWork
from his.kernel.params import Limit
from his.kernel.problems import HTTPException, ProblemError
from his.kernel.security import Principal, TokenVerifier
from his.kernel.service import ServiceContext

STAFF = (Role.ADMIN, Role.RECEPTIONIST, Role.DOCTOR, Role.NURSE, Role.LAB_TECH, Role.BILLING, Role.AUDITOR)
ITEM_ADMINS = (Role.ADMIN,)
RECEIVERS = (Role.ADMIN, Role.NURSE, Role.LAB_TECH)
MAX_ROWS = 500


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


def qty(value: Decimal | None) -> str | None:
    """A quantity as a plain decimal string without trailing zeros (``"20"``, ``"2.5"``)."""
    if value is None:
        return None
    return format(plain(value), "f")


def _code(value: str | None, pattern: re.Pattern[str], what: str) -> str | None:
    if value is None:
        return None
    code = value.upper()
    if not pattern.fullmatch(code):
        raise HTTPException(422, f"malformed {what}")
    return code


def router(
    ctx: ServiceContext, patients: PatientLookup, verifier: TokenVerifier | None = None, timezone: str = "UTC"
) -> APIRouter:
    r = APIRouter(tags=["inventory"])
    tokens = verifier or jwks_verifier()
    zone = ZoneInfo(timezone)

    def today() -> date:
        return handlers.today_in(zone, ctx.db.clock())

    async def known_item(conn: Connection, code: str | None) -> None:
        """A filter by item names an item that exists: 422 otherwise, never an empty list."""
        if code is not None and await store.get_item(conn, code) is None:
            raise HTTPException(422, f"unknown item_code {code}: GET /api/inventory/items lists the items")

    def audit(uow: UnitOfWork, who: Principal, patient_id: uuid.UUID, decision: Decision) -> None:
        record_access(
            uow,
            InventoryRecordAccessed,
            who,
            patient_id=patient_id,
            action="create",
            resource="inventory/consumption",
            purpose=decision.purpose,
            outcome=decision.outcome,
        )

    async def charging(who: Principal, patient_id: uuid.UUID) -> Decision:
        """The policy's decision on using stock for this patient; a refusal is audited and raised.
        An unknown patient is a 422 (to roles that may use stock at all)."""
        op = Operation.CONSUME_FOR_PATIENT
        rel: Relationship | None = NONE
        if policy.RULES[op].admits(who.roles):  # one call: whether the patient exists, and the care
            rel = await patients.relationship(patient_id, uuid.UUID(who.subject))
        if rel is None:
            raise HTTPException(422, "unknown patient_id")
        decision = policy.decide(op, who.roles, rel)
        if not decision.allowed:
            async with ctx.db.read() as uow:
                audit(uow, who, patient_id, decision)
            raise refused(decision, patient_id)
        return decision

    @r.post("/inventory/items", status_code=201)
    async def create_item(body: NewItem, request: Request) -> dict[str, Any]:
        """Define an item with its unit, whether it is billed to the patient, and low-stock
        thresholds per location (ADMIN). 409 if the code exists; a unit the hospital does not know
        is a 422 naming the valid ones (``GET /api/inventory/units``)."""
        require(await authenticate(request, tokens), *ITEM_ADMINS)
        item = handlers.NewItem(body.code, body.description, body.unit, body.chargeable, dict(body.thresholds))
        try:
            async with ctx.db.uow() as uow:
                row = await handlers.create_item(uow, item)
        except store.DuplicateItemError:
            raise HTTPException(409, f"item {body.code} already exists") from None
        except UnknownUnitError as exc:
            raise ProblemError(422, str(exc), field="unit", valid_values=list(UNITS)) from None
        return {**_item_json(row), "thresholds": {k: qty(v) for k, v in body.thresholds.items()}}

    @r.get("/inventory/units")
    async def units(request: Request) -> dict[str, Any]:
        """The units an item may be kept in: counted ones take whole quantities only (staff)."""
        require(await authenticate(request, tokens), *STAFF)
        return {"items": [{"unit": u, "whole_numbers_only": u in COUNTED_UNITS} for u in UNITS]}

    @r.get("/inventory/items")
    async def items(request: Request) -> dict[str, Any]:
        """Every item with its thresholds per location (staff)."""
        require(await authenticate(request, tokens), *STAFF)
        async with ctx.db.pool.acquire() as conn:
            rows = await store.list_items(conn)
        return {"items": [_item_json(x) for x in rows]}

    @r.post("/inventory/receipts", status_code=201)
    async def receive(body: NewReceipt, request: Request) -> dict[str, Any]:
        """Receive a lot of an item into a location; receiving into an existing lot adds to it
        (ADMIN, NURSE, LAB_TECH). 422 for an unknown item or a lot already past its expiry."""
        who = await authenticate(request, tokens)
        require(who, *RECEIVERS)
        receipt = handlers.Receipt(body.item_code, body.location, body.lot, body.quantity, body.expires_on)
        try:
            async with ctx.db.uow() as uow:
                row = await handlers.receive(uow, receipt, uuid.UUID(who.subject), today())
        except handlers.UnknownItemError:
            raise HTTPException(422, f"unknown item_code {body.item_code}") from None
        except (handlers.ExpiredLotError, UnsplittableQuantityError) as exc:
            raise HTTPException(422, str(exc)) from None
        return {
            "id": str(row["id"]),
            "item_code": row["item_code"],
            "location": row["location"],
            "lot": row["lot"],
            "expires_on": row["expires_on"].isoformat() if row["expires_on"] else None,
            "quantity": qty(row["quantity"]),
            "lot_quantity": qty(row["lot_quantity"]),
            "on_hand": qty(row["on_hand"]),
        }

    @r.post("/inventory/consumptions", status_code=201, response_model=None)
    async def consume(body: NewConsumption, request: Request) -> dict[str, Any] | JSONResponse:
        """Use stock, first-expiring lots first (expired lots never), all or nothing (NURSE, DOCTOR,
        LAB_TECH, ADMIN; for a patient, a DOCTOR or NURSE only within a care relationship or under
        an emergency grant). A shortfall answers 409 with what is available, or with ``backorder: true``
        takes nothing, records a back-order and answers 202. A chargeable item used for a patient
        is billed to them."""
        who = await authenticate(request, tokens)
        decision = None if body.patient_id is None else await charging(who, body.patient_id)
        require(who, *CONSUMERS)
        c = handlers.Consumption(
            body.item_code,
            body.location,
            body.quantity,
            Reason(body.reason),
            patient_id=body.patient_id,
            backorder=body.backorder,
        )
        try:
            async with ctx.db.uow() as uow:
                done = await handlers.consume(uow, c, uuid.UUID(who.subject), today())
                if body.patient_id is not None and decision is not None:
                    audit(uow, who, body.patient_id, decision)
        except handlers.UnknownItemError:
            raise HTTPException(422, f"unknown item_code {body.item_code}") from None
        except UnsplittableQuantityError as exc:
            raise HTTPException(422, str(exc)) from None
        except ShortfallError as exc:
            raise ProblemError(
                409,
                f"not enough {body.item_code} at {body.location}: {qty(exc.available)} available "
                f"(expired lots excluded), {qty(exc.requested)} requested; nothing was taken",
                item_code=body.item_code,
                location=body.location,
                requested=qty(exc.requested),
                available=qty(exc.available),
            ) from None
        if isinstance(done, handlers.Backordered):
            return JSONResponse(
                {
                    "status": "backordered",
                    "backorder_id": str(done.id),
                    "item_code": body.item_code,
                    "location": body.location,
                    "requested": qty(done.requested),
                    "available": qty(done.available),
                    "detail": (
                        f"only {qty(done.available)} available: nothing was taken and the request was back-ordered"
                    ),
                },
                status_code=202,
            )
        return {
            "status": "consumed",
            "id": str(done.id),
            "item_code": body.item_code,
            "location": body.location,
            "quantity": qty(body.quantity),
            "reason": body.reason,
            "patient_id": str(body.patient_id) if body.patient_id else None,
            "chargeable": done.chargeable,
            "lots": [
                {"lot": t.lot.lot, "expires_on": _day(t.lot.expires_on), "quantity": qty(t.quantity)}
                for t in done.takes
            ],
            "on_hand": qty(done.on_hand),
        }

    @r.get("/inventory/stock")
    async def stock(
        request: Request,
        item_code: Annotated[str | None, Query(max_length=32)] = None,
        location: Annotated[str | None, Query(max_length=32)] = None,
    ) -> dict[str, Any]:
        """Stock per (item, location): usable total, expired quantity still on the shelf, threshold,
        low-stock state, and the lots in the order they will be used (staff)."""
        require(await authenticate(request, tokens), *STAFF)
        code, place = _code(item_code, ITEM_CODE, "item_code"), _code(location, LOCATION, "location")
        async with ctx.db.pool.acquire() as conn:
            await known_item(conn, code)
            rows = await store.stock(conn, code, place, 4 * MAX_ROWS)
        return {"as_of": today().isoformat(), "items": _stock_json(rows, today())}

    @r.get("/inventory/expiring")
    async def expiring(
        request: Request,
        days: Annotated[int, Query(ge=0, le=3650)] = 30,
        location: Annotated[str | None, Query(max_length=32)] = None,
    ) -> dict[str, Any]:
        """The expiry report: lots with stock that expire within ``days`` (and those already
        expired), soonest first (staff)."""
        require(await authenticate(request, tokens), *STAFF)
        place = _code(location, LOCATION, "location")
        day = today()
        async with ctx.db.pool.acquire() as conn:
            rows = await store.expiring(conn, day + timedelta(days=days), place, MAX_ROWS)
        return {
            "as_of": day.isoformat(),
            "days": days,
            "items": [
                {
                    "item_code": x["item_code"],
                    "unit": x["unit"],
                    "location": x["location"],
                    "lot": x["lot"],
                    "expires_on": x["expires_on"].isoformat(),
                    "quantity": qty(x["quantity"]),
                    "expired": x["expires_on"] < day,
                    "days_left": (x["expires_on"] - day).days,
                }
                for x in rows
            ],
        }

    @r.get("/inventory/alerts")
    async def alerts(
        request: Request,
        item_code: Annotated[str | None, Query(max_length=32)] = None,
        location: Annotated[str | None, Query(max_length=32)] = None,
        limit: Limit = 100,
    ) -> dict[str, Any]:
        """Low-stock alerts, latest first: one per fall to or below an (item, location)'s threshold (staff)."""
        require(await authenticate(request, tokens), *STAFF)
        code, place = _code(item_code, ITEM_CODE, "item_code"), _code(location, LOCATION, "location")
        async with ctx.db.pool.acquire() as conn:
            await known_item(conn, code)
            rows = await store.alerts(conn, code, place, limit)
        return {
            "items": [
                {
                    "id": str(x["id"]),
                    "item_code": x["item_code"],
                    "location": x["location"],
                    "on_hand": qty(x["on_hand"]),
                    "threshold": qty(x["threshold"]),
                    "alerted_at": x["alerted_at"].isoformat(),
                }
                for x in rows
            ]
        }

    @r.get("/inventory/backorders")
    async def backorders(
        request: Request,
        item_code: Annotated[str | None, Query(max_length=32)] = None,
        location: Annotated[str | None, Query(max_length=32)] = None,
        limit: Limit = 100,
    ) -> dict[str, Any]:
        """Back-orders (requests that found too little stock and took nothing), latest first (staff).
        A lab order's back-order names the order as ``source_id``; patients are not listed here."""
        require(await authenticate(request, tokens), *STAFF)
        code, place = _code(item_code, ITEM_CODE, "item_code"), _code(location, LOCATION, "location")
        async with ctx.db.pool.acquire() as conn:
            await known_item(conn, code)
            rows = await store.backorders(conn, code, place, limit)
        return {
            "items": [
                {
                    "id": str(x["id"]),
                    "item_code": x["item_code"],
                    "location": x["location"],
                    "requested": qty(x["requested"]),
                    "available": qty(x["available"]),
                    "reason": x["reason"],
                    "source_id": str(x["source_id"]) if x["source_id"] else None,
                    "created_at": x["created_at"].isoformat(),
                }
                for x in rows
            ]
        }

    return r


def _day(d: date | None) -> str | None:
    return d.isoformat() if d else None


def _item_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {"code": row["code"], "description": row["description"], "unit": row["unit"], "chargeable": row["chargeable"]}
    if "thresholds" in row:
        out["thresholds"] = {k: qty(Decimal(v)) for k, v in orjson.loads(row["thresholds"]).items()}
    return out


def _stock_json(rows: list[dict[str, Any]], today: date) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for x in rows:
        key = (x["item_code"], x["location"])
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "item_code": x["item_code"],
                "location": x["location"],
                "unit": x["unit"],
                "on_hand": Decimal(0),
                "expired": Decimal(0),
                "threshold": qty(x["threshold"]),
                "low": x["low"],
                "lots": [],
            }
        if x["lot"] is None:
            continue
        expired = is_expired(LotState(None, x["lot"], x["expires_on"], x["quantity"]), today)
        g["expired" if expired else "on_hand"] += x["quantity"]
        g["lots"].append(
            {
                "lot": x["lot"],
                "expires_on": _day(x["expires_on"]),
                "quantity": qty(x["quantity"]),
                "expired": expired,
                "received_at": x["received_at"].isoformat(),
            }
        )
    for g in groups.values():
        g["on_hand"], g["expired"] = qty(g["on_hand"]), qty(g["expired"])
    return list(groups.values())
