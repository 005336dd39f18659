"""The inventory's ports in memory (``his.inventory.ports``).

What the database enforces and the use cases rely on holds here too: an item's code is unique
(``DuplicateItemError``); a lot never goes below zero, a source (a lab order) uses an item once
and a back-order has less available than requested (``ValueError``, as the use cases do not
handle a CHECK or unique violation); lots, consumptions and alerts belong to a kept (item,
location) and places to an item (``ValueError``). Quantities are kept to three places, as the
``NUMERIC(14,3)`` columns keep them.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from his.inventory.domain import (
    LAB,
    Backorder,
    DuplicateItemError,
    ExpiringLot,
    Item,
    Lot,
    LowStockAlert,
    Place,
    ReagentUse,
    Reason,
    ShelvedLot,
    StockLevel,
    Take,
    is_expired,
)
from his.kernel.clock import Clock, utc_now
from his.testing.units import FakeUnits, FakeWork

_MIGRATION = "his.inventory.store.migrations.0002_items_stock_consumption"
#: The columns' precision: NUMERIC(14,3).
_PLACES, _LIMIT = Decimal("0.001"), Decimal(10) ** 11


def kept(quantity: Decimal) -> Decimal:
    """A quantity as a ``NUMERIC(14,3)`` column keeps it (rounded to three places, half away
    from zero); ``ValueError`` if it does not fit."""
    out = Decimal(quantity).quantize(_PLACES, rounding=ROUND_HALF_UP)
    if not out.is_finite() or abs(out) >= _LIMIT:
        raise ValueError(f"numeric field overflow: {quantity}")
    return out


def seeded_items() -> dict[str, Item]:
    """The reagent items the inventory's migration seeds (not chargeable), without thresholds."""
    reagents = importlib.import_module(_MIGRATION).REAGENTS
    return {code: Item(code, description, unit, False, {}) for code, description, unit, _ in reagents}


def seeded_reagent_use() -> dict[tuple[str, str], ReagentUse]:
    """Which item each of the laboratory's tests uses, by (test, item), at LAB (the migration's)."""
    uses = importlib.import_module(_MIGRATION).REAGENT_USE
    return {(test, item): ReagentUse(item, LAB, kept(Decimal(qty))) for test, item, qty in uses}


@dataclass(frozen=True)
class StoredLot:
    id: uuid.UUID
    item_code: str
    location: str
    lot: str
    expires_on: date | None
    quantity: Decimal
    received_seq: int
    received_at: datetime

    def as_lot(self) -> Lot:
        return Lot(self.id, self.lot, self.expires_on, self.quantity, self.received_seq)


@dataclass(frozen=True)
class StoredReceipt:
    id: uuid.UUID
    lot_id: uuid.UUID
    quantity: Decimal
    received_by: uuid.UUID
    received_at: datetime


@dataclass(frozen=True)
class StoredConsumption:
    id: uuid.UUID
    item_code: str
    location: str
    quantity: Decimal
    reason: Reason
    patient_id: uuid.UUID | None
    source_id: uuid.UUID | None
    chargeable: bool
    consumed_by: uuid.UUID | None
    consumed_at: datetime
    #: The lots it took from: (lot id, quantity).
    lots: tuple[tuple[uuid.UUID, Decimal], ...]


@dataclass(frozen=True)
class StoredBackorder:
    backorder: Backorder
    patient_id: uuid.UUID | None
    created_by: uuid.UUID | None


@dataclass
class InventoryState:
    """The inventory's tables as a test's database has them: the migration's reagent items and
    their use per lab test, and no stock (the tests empty the stock tables; ``his.testing`` does
    not guess the migration's starting lots, which expire a year after the day it ran)."""

    #: Items without their thresholds (those are the places').
    items: dict[str, Item] = field(default_factory=seeded_items)
    places: dict[tuple[str, str], Place] = field(default_factory=dict)
    lots: dict[uuid.UUID, StoredLot] = field(default_factory=dict)
    receipts: dict[uuid.UUID, StoredReceipt] = field(default_factory=dict)
    consumptions: dict[uuid.UUID, StoredConsumption] = field(default_factory=dict)
    backorders: dict[uuid.UUID, StoredBackorder] = field(default_factory=dict)
    alerts: dict[uuid.UUID, LowStockAlert] = field(default_factory=dict)
    reagent_use: dict[tuple[str, str], ReagentUse] = field(default_factory=seeded_reagent_use)
    #: The last ``received_seq`` handed out (an identity column: lots received later sort later).
    received_seq: int = 0

    def place(self, item_code: str, location: str) -> Place:
        """The kept (item, location) a row refers to (its foreign key)."""
        found = self.places.get((item_code, location))
        if found is None:
            raise ValueError(f"no place {item_code}@{location}: receive or lock it first")  # the foreign key
        return found


class FakeItems:
    def __init__(self, state: InventoryState) -> None:
        self.state = state

    async def add(self, item: Item) -> None:
        if item.code in self.state.items:
            raise DuplicateItemError(item.code)
        thresholds = {location: kept(t) for location, t in item.thresholds.items()}
        if any(t < 0 for t in thresholds.values()):
            raise ValueError("a threshold is never negative")  # the CHECK
        self.state.items[item.code] = replace(item, thresholds={})
        for location, threshold in thresholds.items():
            self.state.places[(item.code, location)] = Place(item.code, location, threshold, False, 0)

    def _with_thresholds(self, item: Item) -> Item:
        thresholds = {
            p.location: p.threshold
            for (code, _), p in self.state.places.items()
            if code == item.code and p.threshold is not None
        }
        return replace(item, thresholds=thresholds)

    async def get(self, code: str) -> Item | None:
        item = self.state.items.get(code)
        return None if item is None else self._with_thresholds(item)

    async def all(self) -> list[Item]:
        return [self._with_thresholds(self.state.items[code]) for code in sorted(self.state.items)]


def _fefo(lot: StoredLot) -> tuple[bool, date, int]:
    """``ORDER BY expires_on NULLS LAST, received_seq``."""
    return (lot.expires_on is None, lot.expires_on or date.max, lot.received_seq)


class FakeStock:
    def __init__(self, state: InventoryState) -> None:
        self.state = state

    async def lock(self, item_code: str, location: str, *, create: bool) -> Place | None:
        key = (item_code, location)
        if create and key not in self.state.places:
            if item_code not in self.state.items:
                raise ValueError(f"no item {item_code}")  # the foreign key
            self.state.places[key] = Place(item_code, location, None, False, 0)
        return self.state.places.get(key)

    async def save(self, item_code: str, location: str, *, low: bool, version: int) -> None:
        key = (item_code, location)
        if key in self.state.places:  # an UPDATE of no row changes nothing
            place = self.state.places[key]
            self.state.places[key] = replace(place, low=low, version=max(place.version, version))

    async def receive(
        self,
        *,
        receipt_id: uuid.UUID,
        item_code: str,
        location: str,
        lot: str,
        expires_on: date | None,
        quantity: Decimal,
        received_by: uuid.UUID,
        at: datetime,
    ) -> Lot:
        self.state.place(item_code, location)
        quantity = kept(quantity)
        if quantity <= 0:
            raise ValueError("a receipt is of a positive quantity")  # the CHECK
        if receipt_id in self.state.receipts:
            raise ValueError(f"receipt {receipt_id} exists")  # the primary key
        same = [
            x
            for x in self.state.lots.values()
            if (x.item_code, x.location, x.lot, x.expires_on) == (item_code, location, lot, expires_on)
        ]
        if same:  # ON CONFLICT: added to the lot, which keeps its id, place in line and time of receipt
            stored = replace(same[0], quantity=kept(same[0].quantity + quantity))
        else:
            self.state.received_seq += 1
            seq = self.state.received_seq
            stored = StoredLot(uuid.uuid4(), item_code, location, lot, expires_on, quantity, seq, at)
        self.state.lots[stored.id] = stored
        self.state.receipts[receipt_id] = StoredReceipt(receipt_id, stored.id, quantity, received_by, at)
        return stored.as_lot()

    def _of(self, item_code: str, location: str) -> list[StoredLot]:
        return [x for x in self.state.lots.values() if (x.item_code, x.location) == (item_code, location)]

    async def usable(self, item_code: str, location: str, today: date) -> list[Lot]:
        found = [
            x
            for x in self._of(item_code, location)
            if x.quantity > 0 and (x.expires_on is None or x.expires_on >= today)
        ]
        return [x.as_lot() for x in sorted(found, key=_fefo)]

    async def on_hand(self, item_code: str, location: str, today: date) -> Decimal:
        found = [x.quantity for x in self._of(item_code, location) if x.expires_on is None or x.expires_on >= today]
        return sum(found, Decimal(0))

    async def levels(self, item_code: str | None, location: str | None, limit: int, today: date) -> list[StockLevel]:
        rows: list[tuple[Place, StoredLot | None]] = []
        for key in sorted(self.state.places):
            place = self.state.places[key]
            if (item_code is not None and place.item_code != item_code) or (
                location is not None and place.location != location
            ):
                continue
            lots = sorted((x for x in self._of(*key) if x.quantity > 0), key=_fefo)
            rows += [(place, x) for x in lots] or [(place, None)]
        shelves: dict[tuple[str, str], tuple[Place, list[ShelvedLot]]] = {}
        for place, x in rows[:limit]:
            _, shelved = shelves.setdefault((place.item_code, place.location), (place, []))
            if x is not None:
                expired = is_expired(x.expires_on, today)
                shelved.append(ShelvedLot(x.lot, x.expires_on, x.quantity, expired, x.received_at))
        return [
            StockLevel(
                place.item_code,
                place.location,
                self.state.items[place.item_code].unit,
                on_hand=sum((x.quantity for x in shelved if not x.expired), Decimal(0)),
                expired=sum((x.quantity for x in shelved if x.expired), Decimal(0)),
                threshold=place.threshold,
                low=place.low,
                lots=tuple(shelved),
            )
            for place, shelved in shelves.values()
        ]

    async def expiring(self, until: date, location: str | None, limit: int) -> list[ExpiringLot]:
        found = [
            ExpiringLot(x.item_code, self.state.items[x.item_code].unit, x.location, x.lot, x.expires_on, x.quantity)
            for x in self.state.lots.values()
            if x.quantity > 0
            and x.expires_on is not None
            and x.expires_on <= until
            and (location is None or x.location == location)
        ]
        found.sort(key=lambda x: (x.expires_on, x.item_code, x.location, x.lot))
        return found[:limit]


def _reason_fits(reason: Reason, patient_id: uuid.UUID | None, source_id: uuid.UUID | None) -> None:
    """The CHECKs: a patient for (and only for) ``patient``, a source for (and only for) ``lab_order``."""
    if (reason is Reason.PATIENT) != (patient_id is not None):
        raise ValueError("a patient_id with reason patient, and only then")
    if (reason is Reason.LAB_ORDER) != (source_id is not None):
        raise ValueError("a source_id with reason lab_order, and only then")


class FakeConsumptions:
    def __init__(self, state: InventoryState) -> None:
        self.state = state

    async def add(
        self,
        *,
        consumption_id: uuid.UUID,
        item_code: str,
        location: str,
        quantity: Decimal,
        reason: Reason,
        patient_id: uuid.UUID | None,
        source_id: uuid.UUID | None,
        chargeable: bool,
        consumed_by: uuid.UUID | None,
        at: datetime,
        takes: Sequence[Take],
    ) -> None:
        self.state.place(item_code, location)
        quantity = kept(quantity)
        if quantity <= 0:
            raise ValueError("a consumption is of a positive quantity")  # the CHECK
        _reason_fits(reason, patient_id, source_id)
        if consumption_id in self.state.consumptions:
            raise ValueError(f"consumption {consumption_id} exists")  # the primary key
        if source_id is not None and any(
            (c.source_id, c.item_code) == (source_id, item_code) for c in self.state.consumptions.values()
        ):
            raise ValueError(f"{source_id} has used {item_code} already")  # UNIQUE (source_id, item_code)
        taken: dict[uuid.UUID, Decimal] = {}
        for t in takes:
            if t.lot.id in taken:
                raise ValueError(f"lot {t.lot.id} taken from twice")  # the primary key of consumption_lot
            taken[t.lot.id] = kept(t.quantity)
            if taken[t.lot.id] <= 0:
                raise ValueError("a take is of a positive quantity")  # the CHECK
        lots = {}
        for lot_id, q in taken.items():
            lot = self.state.lots.get(lot_id)
            if lot is None:
                raise ValueError(f"no lot {lot_id}")  # the foreign key
            if lot.quantity - q < 0:
                raise ValueError(f"lot {lot.lot} would go below zero")  # CHECK (quantity >= 0)
            lots[lot_id] = replace(lot, quantity=lot.quantity - q)
        self.state.lots.update(lots)
        self.state.consumptions[consumption_id] = StoredConsumption(
            consumption_id,
            item_code,
            location,
            quantity,
            reason,
            patient_id,
            source_id,
            chargeable,
            consumed_by,
            at,
            tuple(taken.items()),
        )

    async def handled(self, source_id: uuid.UUID) -> set[str]:
        used = {c.item_code for c in self.state.consumptions.values() if c.source_id == source_id}
        ordered = {b.backorder.item_code for b in self.state.backorders.values() if b.backorder.source_id == source_id}
        return used | ordered


class FakeBackorders:
    def __init__(self, state: InventoryState) -> None:
        self.state = state

    async def add(
        self,
        *,
        backorder_id: uuid.UUID,
        item_code: str,
        location: str,
        requested: Decimal,
        available: Decimal,
        reason: Reason,
        patient_id: uuid.UUID | None,
        source_id: uuid.UUID | None,
        created_by: uuid.UUID | None,
        at: datetime,
    ) -> None:
        if item_code not in self.state.items:
            raise ValueError(f"no item {item_code}")  # the foreign key
        requested, available = kept(requested), kept(available)
        if not (requested > 0 and 0 <= available < requested):
            raise ValueError("a back-order has less available than requested")  # the CHECKs
        _reason_fits(reason, patient_id, source_id)
        if backorder_id in self.state.backorders:
            raise ValueError(f"back-order {backorder_id} exists")  # the primary key
        if source_id is not None and any(
            (b.backorder.source_id, b.backorder.item_code) == (source_id, item_code)
            for b in self.state.backorders.values()
        ):
            raise ValueError(f"{source_id} has back-ordered {item_code} already")  # UNIQUE (source_id, item_code)
        row = Backorder(backorder_id, item_code, location, requested, available, reason.value, source_id, at)
        self.state.backorders[backorder_id] = StoredBackorder(row, patient_id, created_by)

    async def find(self, item_code: str | None, location: str | None, limit: int) -> list[Backorder]:
        found = [
            b.backorder
            for b in self.state.backorders.values()
            if (item_code is None or b.backorder.item_code == item_code)
            and (location is None or b.backorder.location == location)
        ]
        found.sort(key=lambda b: b.id)
        found.sort(key=lambda b: b.created_at, reverse=True)
        return found[:limit]


class FakeAlerts:
    def __init__(self, state: InventoryState) -> None:
        self.state = state

    async def add(
        self,
        *,
        alert_id: uuid.UUID,
        item_code: str,
        location: str,
        on_hand: Decimal,
        threshold: Decimal,
        at: datetime,
    ) -> None:
        self.state.place(item_code, location)
        if alert_id in self.state.alerts:
            raise ValueError(f"alert {alert_id} exists")  # the primary key
        self.state.alerts[alert_id] = LowStockAlert(alert_id, item_code, location, kept(on_hand), kept(threshold), at)

    async def find(self, item_code: str | None, location: str | None, limit: int) -> list[LowStockAlert]:
        found = [
            a
            for a in self.state.alerts.values()
            if (item_code is None or a.item_code == item_code) and (location is None or a.location == location)
        ]
        found.sort(key=lambda a: a.id)
        found.sort(key=lambda a: a.alerted_at, reverse=True)
        return found[:limit]


class FakeReagents:
    def __init__(self, state: InventoryState) -> None:
        self.state = state

    async def for_tests(self, test_codes: Sequence[str]) -> list[ReagentUse]:
        summed: dict[tuple[str, str], Decimal] = {}
        for (test, _), use in self.state.reagent_use.items():
            if test in test_codes:
                key = (use.item_code, use.location)
                summed[key] = summed.get(key, Decimal(0)) + use.quantity
        return [ReagentUse(item, location, quantity) for (item, location), quantity in sorted(summed.items())]


class FakeInventoryWork(FakeWork):
    def __init__(self, state: InventoryState, clock: Clock) -> None:
        super().__init__(clock)
        self.items = FakeItems(state)
        self.stock = FakeStock(state)
        self.consumptions = FakeConsumptions(state)
        self.backorders = FakeBackorders(state)
        self.alerts = FakeAlerts(state)
        self.reagents = FakeReagents(state)


class FakeInventory(FakeUnits[InventoryState, FakeInventoryWork]):
    """The inventory's units of work in memory, with the migration's reagent items and their use."""

    def __init__(self, clock: Clock = utc_now, state: InventoryState | None = None) -> None:
        super().__init__(state or InventoryState(), FakeInventoryWork, clock)
