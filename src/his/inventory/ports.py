"""What the inventory's use cases work through: its items, the stock of each (item, location) and
its lots, the consumptions and back-orders, the low-stock alerts and the reagents of the lab's
tests, inside a unit of work (``his.kernel.ports``). The store implements them on PostgreSQL
(``his.inventory.store``); ``his.testing.inventory`` in memory, for unit tests. Both pass the same
contract tests (``tests/integration/test_inventory_contract.py``).

Quantities are exact decimals kept to three places (the columns' ``NUMERIC(14,3)``): ``5`` comes
back as ``5.000``, which compares equal.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from his.inventory.domain import (
    Backorder,
    ExpiringLot,
    Item,
    Lot,
    LowStockAlert,
    Place,
    ReagentUse,
    Reason,
    StockLevel,
    Take,
)
from his.kernel.ports import Units, Work


class Items(Protocol):
    """The items the hospital keeps, with their low-stock thresholds per location."""

    async def add(self, item: Item) -> None:
        """Define an item and its thresholds (each location's ``Place``); ``DuplicateItemError``
        if its code exists."""
        ...

    async def get(self, code: str) -> Item | None:
        """The item with its thresholds."""
        ...

    async def all(self) -> list[Item]:
        """Every item with its thresholds, by code."""
        ...


class Stock(Protocol):
    """The stock of each (item, location): its ``Place`` (the row every change of that stock locks
    first) and its lots."""

    async def lock(self, item_code: str, location: str, *, create: bool) -> Place | None:
        """The (item, location), locked until the unit ends (created first, without a threshold,
        when ``create``; else None if it is not kept)."""
        ...

    async def save(self, item_code: str, location: str, *, low: bool, version: int) -> None:
        """Its low-stock state, and its event version (never lowered)."""
        ...

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
        """Record a receipt and add it to its lot (one per item, location, lot and expiry; created,
        received ``at``, if new): the lot after it. The place must be kept (``lock(create=True)``)."""
        ...

    async def usable(self, item_code: str, location: str, today: date) -> list[Lot]:
        """The lots with stock not expired ``today``, first-expiring first (then by receipt),
        locked until the unit ends."""
        ...

    async def on_hand(self, item_code: str, location: str, today: date) -> Decimal:
        """What is left in the lots not expired ``today``."""
        ...

    async def levels(self, item_code: str | None, location: str | None, limit: int, today: date) -> list[StockLevel]:
        """The kept (item, location)s, by item and location, each with its lots with stock in the
        order they are used; at most ``limit`` lots (a place without lots counts as one)."""
        ...

    async def expiring(self, until: date, location: str | None, limit: int) -> list[ExpiringLot]:
        """Lots with stock expiring on or before ``until``, soonest first (then item, location, lot)."""
        ...


class Consumptions(Protocol):
    """Stock used, and what a lab order has had."""

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
        """Record a consumption and take its quantities from the lots. A lot never goes below zero
        and a source uses an item once: either refused fails the unit."""
        ...

    async def handled(self, source_id: uuid.UUID) -> set[str]:
        """The items already consumed or back-ordered for a source (a lab order)."""
        ...


class Backorders(Protocol):
    """Requests that found too little stock and took nothing."""

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
        """Record a back-order (less ``available`` than ``requested``; once per source and item)."""
        ...

    async def find(self, item_code: str | None, location: str | None, limit: int) -> list[Backorder]:
        """Back-orders, latest first (ties by id)."""
        ...


class Alerts(Protocol):
    """The low-stock alerts, one per fall of a place's stock to or below its threshold."""

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
        """Record an alert of a kept place, raised ``at``."""
        ...

    async def find(self, item_code: str | None, location: str | None, limit: int) -> list[LowStockAlert]:
        """Alerts, latest first (ties by id)."""
        ...


class Reagents(Protocol):
    """Which items the laboratory's tests use."""

    async def for_tests(self, test_codes: Sequence[str]) -> list[ReagentUse]:
        """What the tests use, summed per (item, location), by item and location (the order locks
        are taken in)."""
        ...


class InventoryWork(Work, Protocol):
    """A unit of work of the inventory."""

    @property
    def items(self) -> Items: ...

    @property
    def stock(self) -> Stock: ...

    @property
    def consumptions(self) -> Consumptions: ...

    @property
    def backorders(self) -> Backorders: ...

    @property
    def alerts(self) -> Alerts: ...

    @property
    def reagents(self) -> Reagents: ...


#: Where the inventory's units of work come from.
InventoryUnits = Units[InventoryWork]
