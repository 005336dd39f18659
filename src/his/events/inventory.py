"""Events published by the inventory service (item codes, locations, lots and quantities)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from his.kernel.events import Event, event


@event
class StockReceived(Event):
    """A lot of an item arrived at a location."""

    type = "his.inventory.stock.received.v1"
    item_code: str
    location: str
    lot: str
    quantity: Decimal
    expires_on: date | None = None


@event
class StockConsumed(Event):
    """Stock was used, first-expiring lots first. ``chargeable`` items are billed to the patient
    at billing's price for ``item.<item_code>``."""

    type = "his.inventory.stock.consumed.v1"
    consumption_id: uuid.UUID
    item_code: str
    location: str
    quantity: Decimal
    #: Why: ``lab_order`` (reagents for a resulted order), ``patient`` (used for a patient), ``other``.
    reason: str
    #: What it was used for, where that may travel: never a lab order (its reagents would say
    #: which tests the order held, which travel sealed); inventory keeps it in its own tables.
    source_id: uuid.UUID | None = None
    patient_id: uuid.UUID | None = None
    chargeable: bool = False
    consumed_at: datetime


@event
class StockBackordered(Event):
    """A consumption found too little stock: nothing was taken and the shortfall is back-ordered."""

    type = "his.inventory.stock.backordered.v1"
    backorder_id: uuid.UUID
    item_code: str
    location: str
    requested: Decimal
    available: Decimal
    source_id: uuid.UUID | None = None


@event
class LowStockAlerted(Event):
    """Stock of an item at a location fell below its threshold (once per crossing)."""

    type = "his.inventory.stock.low.v1"
    item_code: str
    location: str
    on_hand: Decimal
    threshold: Decimal
