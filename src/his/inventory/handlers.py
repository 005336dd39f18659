"""Use cases of the inventory service: one function per command or consumed event.

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
from typing import Any
from zoneinfo import ZoneInfo

from his.events.inventory import LowStockAlerted, StockBackordered, StockConsumed, StockReceived
from his.events.laboratory import LabOrderResulted
from his.inventory import store
from his.inventory.domain import (
    LAB,
    Reason,
    ShortfallError,
    Take,
    allocate,
    check_quantity,
    check_split,
    known_unit,
    low_stock,
    plain,
)
from his.kernel.db import UnitOfWork
from his.kernel.events import Envelope, Event


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

    def __init__(self, uow: UnitOfWork, row: dict[str, Any] | None, item_code: str, location: str) -> None:
        self.uow, self.item_code, self.location = uow, item_code, location
        self.exists = row is not None
        self.threshold: Decimal | None = plain(row["threshold"]) if row and row["threshold"] is not None else None
        self.low: bool = row["low"] if row else False
        self.version: int = row["version"] if row else 0

    def add(self, ev: Event) -> None:
        self.version += 1
        self.uow.add(ev, aggregate_id=_aggregate(self.item_code, self.location), aggregate_version=self.version)

    async def settle(self, today: date) -> Decimal:
        """Decide the low-stock state from the stock now; alert on a fresh crossing; save the row."""
        level = plain(await store.on_hand(self.uow.conn, self.item_code, self.location, today))
        decision = low_stock(level, self.threshold, self.low)
        if decision.alert:
            assert self.threshold is not None
            alert = {
                "id": uuid.uuid4(),
                "item_code": self.item_code,
                "location": self.location,
                "on_hand": level,
                "threshold": self.threshold,
            }
            await store.insert_alert(self.uow.conn, alert)
            self.add(
                LowStockAlerted(
                    item_code=self.item_code, location=self.location, on_hand=level, threshold=self.threshold
                )
            )
        self.low = decision.low
        if self.exists:
            await store.save_place(self.uow.conn, self.item_code, self.location, self.low, self.version)
        return level


async def create_item(uow: UnitOfWork, item: NewItem) -> dict[str, Any]:
    """Define an item; its unit must be one the hospital knows (``UnknownUnitError``)."""
    row = {
        "code": item.code,
        "description": item.description,
        "unit": known_unit(item.unit),
        "chargeable": item.chargeable,
    }
    await store.insert_item(uow.conn, row, item.thresholds)
    saved = await store.get_item(uow.conn, item.code)
    assert saved is not None
    return saved


async def receive(uow: UnitOfWork, r: Receipt, actor: uuid.UUID, today: date) -> dict[str, Any]:
    """Receive a lot into a location (adding to the lot if it is already there)."""
    r = replace(r, quantity=plain(check_quantity(r.quantity)))
    item = await store.get_item(uow.conn, r.item_code)
    if item is None:
        raise UnknownItemError(r.item_code)
    check_split(r.quantity, item["unit"])
    if r.expires_on is not None and r.expires_on < today:
        raise ExpiredLotError(f"lot {r.lot} expired on {r.expires_on.isoformat()}")
    place = _Place(uow, await store.lock_place(uow.conn, r.item_code, r.location, create=True), r.item_code, r.location)
    receipt_id = uuid.uuid4()
    row = {
        "id": receipt_id,
        "item_code": r.item_code,
        "location": r.location,
        "lot": r.lot,
        "expires_on": r.expires_on,
        "quantity": r.quantity,
        "received_by": actor,
    }
    lot = await store.receive(uow.conn, row)
    place.add(
        StockReceived(
            item_code=r.item_code, location=r.location, lot=r.lot, quantity=r.quantity, expires_on=r.expires_on
        )
    )
    level = await place.settle(today)
    return {"id": receipt_id, **row, "lot_id": lot["lot_id"], "lot_quantity": lot["lot_quantity"], "on_hand": level}


async def consume(uow: UnitOfWork, c: Consumption, actor: uuid.UUID | None, today: date) -> Consumed | Backordered:
    """Take stock first-expiring first, all or nothing. A shortfall raises ``ShortfallError``, or,
    when ``c.backorder``, takes nothing and records a back-order instead."""
    c = replace(c, quantity=plain(check_quantity(c.quantity)))
    item = await store.get_item(uow.conn, c.item_code)
    if item is None:
        raise UnknownItemError(c.item_code)
    check_split(c.quantity, item["unit"])
    place = _Place(
        uow, await store.lock_place(uow.conn, c.item_code, c.location, create=False), c.item_code, c.location
    )
    lots = await store.lots_for_use(uow.conn, c.item_code, c.location, today) if place.exists else []
    try:
        takes = allocate(lots, c.quantity, today)
    except ShortfallError as short:
        if not c.backorder:
            raise
        return await _backorder(place, c, plain(short.available), actor)
    chargeable = bool(item["chargeable"]) and c.reason is Reason.PATIENT
    cid = uuid.uuid4()
    moment = uow.clock()
    await store.insert_consumption(
        uow.conn,
        {
            "id": cid,
            "item_code": c.item_code,
            "location": c.location,
            "quantity": c.quantity,
            "reason": c.reason.value,
            "patient_id": c.patient_id,
            "source_id": c.source_id,
            "chargeable": chargeable,
            "consumed_by": actor,
            "consumed_at": moment,
        },
    )
    await store.take(uow.conn, cid, takes)
    place.add(
        StockConsumed(
            consumption_id=cid,
            item_code=c.item_code,
            location=c.location,
            quantity=c.quantity,
            reason=c.reason.value,
            source_id=c.source_id,
            patient_id=c.patient_id,
            chargeable=chargeable,
            consumed_at=moment,
        )
    )
    level = await place.settle(today)
    return Consumed(cid, takes, level, chargeable)


async def _backorder(place: _Place, c: Consumption, available: Decimal, actor: uuid.UUID | None) -> Backordered:
    bid = uuid.uuid4()
    await store.insert_backorder(
        place.uow.conn,
        {
            "id": bid,
            "item_code": c.item_code,
            "location": c.location,
            "requested": c.quantity,
            "available": available,
            "reason": c.reason.value,
            "patient_id": c.patient_id,
            "source_id": c.source_id,
            "created_by": actor,
        },
    )
    place.add(
        StockBackordered(
            backorder_id=bid,
            item_code=c.item_code,
            location=c.location,
            requested=c.quantity,
            available=available,
            source_id=c.source_id,
        )
    )
    if not place.exists:  # remember the place, so its events keep counting versions
        await store.lock_place(place.uow.conn, c.item_code, c.location, create=True)
    await store.save_place(place.uow.conn, c.item_code, c.location, place.low, place.version)
    return Backordered(bid, c.quantity, available)


def today_in(zone: ZoneInfo, now: datetime) -> date:
    """The hospital's calendar date at ``now`` (lots expire by the local calendar)."""
    return now.astimezone(zone).date()


def make_on_lab_order_resulted(zone: ZoneInfo) -> Callable[[UnitOfWork, Envelope, LabOrderResulted], Awaitable[None]]:
    """The consumer of ``his.laboratory.order.resulted.v1`` for the hospital's time zone."""

    async def on_lab_order_resulted(uow: UnitOfWork, env: Envelope, ev: LabOrderResulted) -> None:
        await use_reagents(uow, env, ev, today_in(zone, uow.clock()))

    return on_lab_order_resulted


async def use_reagents(uow: UnitOfWork, env: Envelope, ev: LabOrderResulted, today: date) -> None:
    """Consume the reagents of a resulted order's tests at LAB, first-expiring first, not charged.

    A shortfall never fails the consumer and never goes negative: that item is back-ordered
    (nothing taken) and the others are still consumed. Each (order, item) is handled once: the
    inbox skips a redelivered event, and an item already consumed or back-ordered for the order
    (a replay under another event id) is skipped; a unique key on (source, item) is the backstop.
    """
    codes = sorted({r.code for r in ev.results})
    if not codes:
        return
    done = await store.handled_for_source(uow.conn, ev.order_id)
    for use in await store.reagents_for(uow.conn, codes):
        if use["item_code"] in done:
            continue
        c = Consumption(
            use["item_code"],
            use["location"] or LAB,
            plain(use["quantity"]),
            Reason.LAB_ORDER,
            source_id=ev.order_id,
            backorder=True,
        )
        await consume(uow, c, None, today)
