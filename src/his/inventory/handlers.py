"""Use cases of the inventory service: one function per command or consumed event, and the
``Inventory`` use cases its routes call.

Every change of an (item, location)'s stock runs in one transaction that first locks that
(item, location)'s row, then the lots it takes from: concurrent consumptions queue there and each
sees what the one before it left, so none can take stock that is gone (and the CHECK on the lots
would refuse it if one tried). The low-stock state is decided in the same transaction, so the
alert fires once per crossing of the threshold.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from his.access import NONE, Decision, Relationship
from his.clients.audited import AccessLog
from his.clients.patients import PatientLookup
from his.events.audit import InventoryRecordAccessed
from his.events.inventory import LowStockAlerted, StockBackordered, StockConsumed, StockReceived
from his.events.laboratory import LabResults
from his.inventory import policy
from his.inventory.domain import (
    LAB,
    UNITS,
    DuplicateItemError,
    ExpiringLot,
    Item,
    LowStockAlert,
    Place,
    Reason,
    ShortfallError,
    StockLevel,
    Take,
    UnknownUnitError,
    UnsplittableQuantityError,
    allocate,
    check_quantity,
    check_split,
    known_unit,
    low_stock,
    plain,
)
from his.inventory.domain import Backorder as BackorderRow
from his.inventory.policy import Operation
from his.inventory.ports import InventoryUnits, InventoryWork
from his.inventory.store import InventoryUnit
from his.kernel.clock import Clock
from his.kernel.db import UnitOfWork
from his.kernel.events import Envelope, Event
from his.kernel.problems import ProblemError
from his.kernel.security import Principal


class UnknownItemError(LookupError):
    """No item has this code."""


class ExpiredLotError(ValueError):
    """A lot past its expiry date cannot be received."""


@dataclass(frozen=True)
class NewItem:
    code: str
    description: str
    unit: str
    chargeable: bool
    thresholds: dict[str, Decimal]


@dataclass(frozen=True)
class Receipt:
    item_code: str
    location: str
    lot: str
    quantity: Decimal
    expires_on: date | None


@dataclass(frozen=True)
class Consumption:
    item_code: str
    location: str
    quantity: Decimal
    reason: Reason
    patient_id: uuid.UUID | None = None
    source_id: uuid.UUID | None = None
    backorder: bool = False


@dataclass(frozen=True)
class Received:
    """A receipt, with the quantity of its lot and of the (item, location) after it."""

    id: uuid.UUID
    receipt: Receipt
    lot_quantity: Decimal
    on_hand: Decimal


@dataclass(frozen=True)
class Consumed:
    id: uuid.UUID
    takes: list[Take]
    on_hand: Decimal
    chargeable: bool


@dataclass(frozen=True)
class Backordered:
    id: uuid.UUID
    requested: Decimal
    available: Decimal


def _aggregate(item_code: str, location: str) -> str:
    """Events of one (item, location)'s stock share an aggregate, in order of its version."""
    return f"{item_code}@{location}"


class _Place:
    """A locked (item, location): hands out consecutive event versions and settles the alert state."""

    def __init__(self, uow: InventoryWork, place: Place | None, item_code: str, location: str) -> None:
        self.uow, self.item_code, self.location = uow, item_code, location
        self.exists = place is not None
        self.threshold: Decimal | None = plain(place.threshold) if place and place.threshold is not None else None
        self.low: bool = place.low if place else False
        self.version: int = place.version if place else 0

    def add(self, ev: Event) -> None:
        self.version += 1
        self.uow.add(ev, aggregate_id=_aggregate(self.item_code, self.location), aggregate_version=self.version)

    async def settle(self, today: date, at: datetime) -> Decimal:
        """Decide the low-stock state from the stock now; alert on a fresh crossing; save the row."""
        level = plain(await self.uow.stock.on_hand(self.item_code, self.location, today))
        decision = low_stock(level, self.threshold, self.low)
        if decision.alert:
            assert self.threshold is not None
            await self.uow.alerts.add(
                alert_id=uuid.uuid4(),
                item_code=self.item_code,
                location=self.location,
                on_hand=level,
                threshold=self.threshold,
                at=at,
            )
            self.add(
                LowStockAlerted(
                    item_code=self.item_code, location=self.location, on_hand=level, threshold=self.threshold
                )
            )
        self.low = decision.low
        if self.exists:
            await self.uow.stock.save(self.item_code, self.location, low=self.low, version=self.version)
        return level


async def create_item(uow: InventoryWork, item: NewItem) -> Item:
    """Define an item; its unit must be one the hospital knows (``UnknownUnitError``)."""
    created = Item(item.code, item.description, known_unit(item.unit), item.chargeable, dict(item.thresholds))
    await uow.items.add(created)
    return created


async def receive(uow: InventoryWork, r: Receipt, actor: uuid.UUID, today: date) -> Received:
    """Receive a lot into a location (adding to the lot if it is already there)."""
    r = replace(r, quantity=plain(check_quantity(r.quantity)))
    item = await uow.items.get(r.item_code)
    if item is None:
        raise UnknownItemError(r.item_code)
    check_split(r.quantity, item.unit)
    if r.expires_on is not None and r.expires_on < today:
        raise ExpiredLotError(f"lot {r.lot} expired on {r.expires_on.isoformat()}")
    place = _Place(uow, await uow.stock.lock(r.item_code, r.location, create=True), r.item_code, r.location)
    receipt_id, at = uuid.uuid4(), uow.clock()
    lot = await uow.stock.receive(
        receipt_id=receipt_id,
        item_code=r.item_code,
        location=r.location,
        lot=r.lot,
        expires_on=r.expires_on,
        quantity=r.quantity,
        received_by=actor,
        at=at,
    )
    place.add(
        StockReceived(
            item_code=r.item_code, location=r.location, lot=r.lot, quantity=r.quantity, expires_on=r.expires_on
        )
    )
    level = await place.settle(today, at)
    return Received(receipt_id, r, lot_quantity=lot.quantity, on_hand=level)


async def consume(uow: InventoryWork, c: Consumption, actor: uuid.UUID | None, today: date) -> Consumed | Backordered:
    """Take stock first-expiring first, all or nothing. A shortfall raises ``ShortfallError``, or,
    when ``c.backorder``, takes nothing and records a back-order instead."""
    c = replace(c, quantity=plain(check_quantity(c.quantity)))
    item = await uow.items.get(c.item_code)
    if item is None:
        raise UnknownItemError(c.item_code)
    check_split(c.quantity, item.unit)
    place = _Place(uow, await uow.stock.lock(c.item_code, c.location, create=False), c.item_code, c.location)
    lots = await uow.stock.usable(c.item_code, c.location, today) if place.exists else []
    moment = uow.clock()
    try:
        takes = allocate(lots, c.quantity, today)
    except ShortfallError as short:
        if not c.backorder:
            raise
        return await _backorder(place, c, plain(short.available), actor, moment)
    chargeable = item.chargeable and c.reason is Reason.PATIENT
    cid = uuid.uuid4()
    await uow.consumptions.add(
        consumption_id=cid,
        item_code=c.item_code,
        location=c.location,
        quantity=c.quantity,
        reason=c.reason,
        patient_id=c.patient_id,
        source_id=c.source_id,
        chargeable=chargeable,
        consumed_by=actor,
        at=moment,
        takes=takes,
    )
    place.add(
        StockConsumed(
            consumption_id=cid,
            item_code=c.item_code,
            location=c.location,
            quantity=c.quantity,
            reason=c.reason.value,
            source_id=travelling_source(c),
            patient_id=c.patient_id,
            chargeable=chargeable,
            consumed_at=moment,
        )
    )
    level = await place.settle(today, moment)
    return Consumed(cid, takes, level, chargeable)


def travelling_source(c: Consumption) -> uuid.UUID | None:
    """The source a stock event names on the bus: never a lab order's (its reagents would tell
    which tests it held, which travel sealed: ADR 0032); inventory keeps it in its own tables."""
    return None if c.reason is Reason.LAB_ORDER else c.source_id


async def _backorder(
    place: _Place, c: Consumption, available: Decimal, actor: uuid.UUID | None, at: datetime
) -> Backordered:
    bid = uuid.uuid4()
    await place.uow.backorders.add(
        backorder_id=bid,
        item_code=c.item_code,
        location=c.location,
        requested=c.quantity,
        available=available,
        reason=c.reason,
        patient_id=c.patient_id,
        source_id=c.source_id,
        created_by=actor,
        at=at,
    )
    place.add(
        StockBackordered(
            backorder_id=bid,
            item_code=c.item_code,
            location=c.location,
            requested=c.quantity,
            available=available,
            source_id=travelling_source(c),
        )
    )
    if not place.exists:  # remember the place, so its events keep counting versions
        await place.uow.stock.lock(c.item_code, c.location, create=True)
    await place.uow.stock.save(c.item_code, c.location, low=place.low, version=place.version)
    return Backordered(bid, c.quantity, available)


def today_in(zone: ZoneInfo, now: datetime) -> date:
    """The hospital's calendar date at ``now`` (lots expire by the local calendar)."""
    return now.astimezone(zone).date()


def make_on_lab_order_resulted(zone: ZoneInfo) -> Callable[[UnitOfWork, Envelope, LabResults], Awaitable[None]]:
    """The consumer of a released order (opened from ``his.laboratory.order.resulted.v3``) for
    the hospital's time zone."""

    async def on_lab_order_resulted(uow: UnitOfWork, env: Envelope, ev: LabResults) -> None:
        await use_reagents(InventoryUnit(uow), env, ev, today_in(zone, uow.clock()))

    return on_lab_order_resulted


async def use_reagents(uow: InventoryWork, env: Envelope, ev: LabResults, today: date) -> None:
    """Consume the reagents of a resulted order's tests at LAB, first-expiring first, not charged.

    A shortfall never fails the consumer and never goes negative: that item is back-ordered
    (nothing taken) and the others are still consumed. Each (order, item) is handled once: the
    inbox skips a redelivered event, and an item already consumed or back-ordered for the order
    (a replay under another event id) is skipped; a unique key on (source, item) is the backstop.
    """
    codes = sorted({r.code for r in ev.results})
    if not codes:
        return
    done = await uow.consumptions.handled(ev.order_id)
    for use in await uow.reagents.for_tests(codes):
        if use.item_code in done:
            continue
        c = Consumption(
            use.item_code,
            use.location or LAB,
            plain(use.quantity),
            Reason.LAB_ORDER,
            source_id=ev.order_id,
            backorder=True,
        )
        await consume(uow, c, None, today)


#: Most rows a stock or expiry report holds.
MAX_ROWS = 500


class Inventory:
    """The use cases staff call, each with its caller: decided through ``his.inventory.policy``;
    a consumption for a patient is that patient's data (care rule, audited either way)."""

    def __init__(self, units: InventoryUnits, patients: PatientLookup, zone: ZoneInfo, clock: Clock) -> None:
        #: Where its units of work come from (``units`` is the use case listing the item units).
        self.store, self.patients, self.zone, self.clock = units, patients, zone, clock
        self.log = AccessLog(units, InventoryRecordAccessed, "inventory/consumption")

    def today(self) -> date:
        """The hospital's date now (its time zone): what "expired" is measured against."""
        return today_in(self.zone, self.clock())

    async def create_item(self, who: Principal, item: NewItem) -> Item:
        """Define an item (ADMIN). 409 if the code exists; an unknown unit is a 422 naming the valid ones."""
        allow(who, policy.ITEM_ADMINS)
        try:
            async with self.store.uow() as uow:
                return await create_item(uow, item)
        except DuplicateItemError:
            raise ProblemError(409, f"item {item.code} already exists") from None
        except UnknownUnitError as exc:
            raise ProblemError(422, str(exc), field="unit", valid_values=list(UNITS)) from None

    def units(self, who: Principal) -> list[str]:
        """The units an item may be kept in (staff)."""
        allow(who, policy.STAFF)
        return list(UNITS)

    async def items(self, who: Principal) -> list[Item]:
        allow(who, policy.STAFF)
        async with self.store.read() as unit:
            return await unit.items.all()

    async def receive(self, who: Principal, receipt: Receipt) -> Received:
        """Receive a lot (ADMIN, NURSE, LAB_TECH); 422 for an unknown item or an expired lot."""
        allow(who, policy.RECEIVERS)
        try:
            async with self.store.uow() as uow:
                return await receive(uow, receipt, uuid.UUID(who.subject), self.today())
        except UnknownItemError:
            raise ProblemError(422, f"unknown item_code {receipt.item_code}") from None
        except (ExpiredLotError, UnsplittableQuantityError) as exc:
            raise ProblemError(422, str(exc)) from None

    async def consume(self, who: Principal, c: Consumption) -> Consumed | Backordered:
        """Use stock, first-expiring lots first, all or nothing; a shortfall is a 409 naming what is
        available, or a back-order when asked for. For a patient, the care rule holds and the
        decision is recorded."""
        decision = None if c.patient_id is None else await self.charging(who, c.patient_id)
        allow(who, policy.CONSUMERS)
        try:
            async with self.store.uow() as uow:
                done = await consume(uow, c, uuid.UUID(who.subject), self.today())
                if c.patient_id is not None and decision is not None:
                    self.log.record(uow, who, c.patient_id, "create", decision)
        except UnknownItemError:
            raise ProblemError(422, f"unknown item_code {c.item_code}") from None
        except UnsplittableQuantityError as exc:
            raise ProblemError(422, str(exc)) from None
        except ShortfallError as exc:
            requested, available = plain(exc.requested), plain(exc.available)
            raise ProblemError(
                409,
                f"not enough {c.item_code} at {c.location}: {available:f} available "
                f"(expired lots excluded), {requested:f} requested; nothing was taken",
                item_code=c.item_code,
                location=c.location,
                requested=f"{requested:f}",
                available=f"{available:f}",
            ) from None
        return done

    async def charging(self, who: Principal, patient_id: uuid.UUID) -> Decision:
        """The policy's decision on using stock for this patient; a refusal is recorded and raised.
        An unknown patient is a 422 (to roles that may use stock at all)."""
        op = Operation.CONSUME_FOR_PATIENT
        rel: Relationship | None = NONE
        if policy.RULES[op].admits(who.roles):  # one call: whether the patient exists, and the care
            rel = await self.patients.relationship(patient_id, uuid.UUID(who.subject))
        if rel is None:
            raise ProblemError(422, "unknown patient_id")
        decision = policy.decide(op, who.roles, rel)
        if not decision.allowed:
            raise await self.log.refuse(who, patient_id, decision, "create")
        return decision

    async def stock(self, who: Principal, item_code: str | None, location: str | None) -> list[StockLevel]:
        allow(who, policy.STAFF)
        async with self.store.read() as unit:
            await known_item(unit, item_code)
            return await unit.stock.levels(item_code, location, 4 * MAX_ROWS, self.today())

    async def expiring(self, who: Principal, until: date, location: str | None) -> list[ExpiringLot]:
        allow(who, policy.STAFF)
        async with self.store.read() as unit:
            return await unit.stock.expiring(until, location, MAX_ROWS)

    async def alerts(
        self, who: Principal, item_code: str | None, location: str | None, limit: int
    ) -> list[LowStockAlert]:
        allow(who, policy.STAFF)
        async with self.store.read() as unit:
            await known_item(unit, item_code)
            return await unit.alerts.find(item_code, location, limit)

    async def backorders(
        self, who: Principal, item_code: str | None, location: str | None, limit: int
    ) -> list[BackorderRow]:
        allow(who, policy.STAFF)
        async with self.store.read() as unit:
            await known_item(unit, item_code)
            return await unit.backorders.find(item_code, location, limit)


def allow(who: Principal, roles: frozenset[str]) -> None:
    if not who.roles & roles:
        raise ProblemError(403, "not allowed for your role")


async def known_item(unit: InventoryWork, code: str | None) -> None:
    """A filter by item names an item that exists: 422 otherwise, never an empty list."""
    if code is not None and await unit.items.get(code) is None:
        raise ProblemError(422, f"unknown item_code {code}: GET /api/inventory/items lists the items")
