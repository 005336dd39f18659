"""Inventory rules without IO: first-expiring-first allocation, shortfalls, and the low-stock
alert that fires once per crossing of a threshold.

Quantities are exact decimals in the item's unit; a unit counted in whole things (a piece, a
pack, a vial) takes whole numbers only. A lot is usable through its expiry date and
expired from the day after; a lot without an expiry date never expires and is used last.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

#: Item codes: upper-case letters, digits, ``-`` and ``_`` (billing prices them as ``item.<code>``).
ITEM_CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,31}$")
#: Location codes such as ``LAB``, ``PHARMACY``, ``WARD-GEN``.
LOCATION = re.compile(r"^[A-Z][A-Z0-9_-]{0,31}$")
#: The location whose stock the laboratory's reagents come from.
LAB = "LAB"
#: Largest quantity one request may move (and the column's precision: NUMERIC(14,3)).
MAX_QUANTITY = Decimal("99999999999.999")


class Reason(StrEnum):
    """Why stock was used. Staff record ``patient`` or ``other``; ``lab_order`` comes from results."""

    PATIENT = "patient"
    OTHER = "other"
    LAB_ORDER = "lab_order"


@dataclass(frozen=True)
class Lot:
    """Stock of one lot of an item at one location."""

    id: uuid.UUID
    lot: str
    expires_on: date | None
    quantity: Decimal
    #: Breaks ties between lots expiring the same day: the one received first goes first.
    received_seq: int = 0


@dataclass(frozen=True)
class Take:
    """How much to take from one lot."""

    lot: Lot
    quantity: Decimal


class ShortfallError(Exception):
    """Less usable stock than requested: nothing is taken."""

    def __init__(self, requested: Decimal, available: Decimal) -> None:
        super().__init__(f"only {available} of the {requested} requested are available")
        self.requested, self.available = requested, available


@dataclass(frozen=True)
class Item:
    code: str
    description: str
    unit: str
    #: Billed to the patient it is used for.
    chargeable: bool
    #: The low-stock threshold per location.
    thresholds: Mapping[str, Decimal]


class DuplicateItemError(Exception):
    """An item with this code already exists."""


@dataclass(frozen=True)
class Place:
    """An (item, location) whose stock is kept: its low-stock threshold and state, and the version
    of its events (``<item_code>@<location>``)."""

    item_code: str
    location: str
    threshold: Decimal | None
    low: bool
    version: int


@dataclass(frozen=True)
class ShelvedLot:
    """A lot on a shelf, as the stock report shows it."""

    lot: str
    expires_on: date | None
    quantity: Decimal
    expired: bool
    received_at: datetime


@dataclass(frozen=True)
class StockLevel:
    """The stock of one item at one location: usable and expired quantities, its lots in the
    order they will be used."""

    item_code: str
    location: str
    unit: str
    on_hand: Decimal
    expired: Decimal
    threshold: Decimal | None
    low: bool
    lots: tuple[ShelvedLot, ...]


@dataclass(frozen=True)
class ExpiringLot:
    item_code: str
    unit: str
    location: str
    lot: str
    expires_on: date
    quantity: Decimal


@dataclass(frozen=True)
class LowStockAlert:
    id: uuid.UUID
    item_code: str
    location: str
    on_hand: Decimal
    threshold: Decimal
    alerted_at: datetime


@dataclass(frozen=True)
class Backorder:
    """A request that found too little stock and took nothing."""

    id: uuid.UUID
    item_code: str
    location: str
    requested: Decimal
    available: Decimal
    reason: str
    #: The lab order whose reagents it was for, if any.
    source_id: uuid.UUID | None
    created_at: datetime


@dataclass(frozen=True)
class ReagentUse:
    """How much of an item a set of lab tests uses, at one location."""

    item_code: str
    location: str
    quantity: Decimal


def is_expired(expires_on: date | None, today: date) -> bool:
    """A lot expiring ``expires_on`` (never, when none) is expired on ``today``: the day after it."""
    return expires_on is not None and expires_on < today


def fefo_order(lots: list[Lot]) -> list[Lot]:
    """Lots in the order they are used: soonest expiry first, no expiry last, then oldest receipt."""
    return sorted(lots, key=lambda x: (x.expires_on is None, x.expires_on or date.max, x.received_seq, x.lot))


def usable(lots: list[Lot], today: date) -> list[Lot]:
    """Lots that may be used today, in FEFO order (expired and empty lots are never used)."""
    return [x for x in fefo_order(lots) if x.quantity > 0 and not is_expired(x.expires_on, today)]


def available(lots: list[Lot], today: date) -> Decimal:
    return sum((x.quantity for x in usable(lots, today)), Decimal(0))


def allocate(lots: list[Lot], quantity: Decimal, today: date) -> list[Take]:
    """Which lots to take ``quantity`` from, first-expiring first; ``ShortfallError`` if too little.

    All or nothing: a request that cannot be met in full takes nothing.
    """
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    if available(lots, today) < quantity:
        raise ShortfallError(quantity, available(lots, today))
    takes: list[Take] = []
    left = quantity
    for lot in usable(lots, today):
        take = min(lot.quantity, left)
        takes.append(Take(lot, take))
        left -= take
        if left == 0:
            break
    return takes


@dataclass(frozen=True)
class AlertDecision:
    """What a stock change means for the (item, location)'s low-stock state."""

    alert: bool
    low: bool


def low_stock(on_hand: Decimal, threshold: Decimal | None, was_low: bool) -> AlertDecision:
    """Hysteresis of the low-stock alert: it fires when stock falls to or below the threshold while
    the state is not low, and the state clears only when stock rises above the threshold again.
    So it fires once per crossing, however many consumptions follow below the threshold."""
    if threshold is None:
        return AlertDecision(alert=False, low=False)
    if on_hand <= threshold:
        return AlertDecision(alert=not was_low, low=True)
    return AlertDecision(alert=False, low=False)


def plain(quantity: Decimal) -> Decimal:
    """The same quantity without trailing zeros or an exponent (``5.000`` → ``5``, ``2.50`` → ``2.5``),
    as events and responses show it."""
    if quantity == quantity.to_integral_value():
        return quantity.quantize(Decimal(1))
    return quantity.normalize()


#: Units counted in whole things: a piece, a pack, a vial cannot be split (half a syringe is not
#: used, nor billed). Everything counted is listed, so a unit is never guessed to be divisible.
COUNTED_UNITS = (
    "ampoule",
    "bag",
    "bottle",
    "box",
    "capsule",
    "dose",
    "kit",
    "pack",
    "pair",
    "piece",
    "roll",
    "sachet",
    "set",
    "strip",
    "tablet",
    "test",
    "tube",
    "vial",
)
#: Units measured in amounts, where a fraction is a real quantity (2.5 ml).
MEASURED_UNITS = ("cm", "g", "kg", "l", "m", "mg", "ml")
UNITS = tuple(sorted(COUNTED_UNITS + MEASURED_UNITS))


class UnknownUnitError(ValueError):
    """A unit the hospital does not know; the message names the ones it does."""

    def __init__(self, unit: str) -> None:
        super().__init__(f"unknown unit {unit!r}: valid values are {', '.join(UNITS)}")
        self.unit = unit


class UnsplittableQuantityError(ValueError):
    """A fraction of a unit counted in whole things."""


def known_unit(unit: str) -> str:
    """The unit as the hospital spells it (lower case), or ``UnknownUnitError``."""
    spelled = unit.strip().lower()
    if spelled not in UNITS:
        raise UnknownUnitError(unit)
    return spelled


def check_split(quantity: Decimal, unit: str) -> Decimal:
    """A quantity of ``unit``: whole for counted units. A unit recorded before units were checked
    and not in the list is taken as counted (a fraction of it is refused, never assumed)."""
    if unit.strip().lower() in MEASURED_UNITS or quantity == quantity.to_integral_value():
        return quantity
    raise UnsplittableQuantityError(f"{plain(quantity)} {unit}: a {unit} cannot be split; use a whole number")


def check_quantity(quantity: Decimal) -> Decimal:
    """A positive, finite quantity within the stored precision."""
    if not quantity.is_finite() or quantity <= 0:
        raise ValueError("quantity must be a positive number")
    if quantity > MAX_QUANTITY or quantity != quantity.quantize(Decimal("0.001")):
        raise ValueError("quantity has too many digits (at most 11 before and 3 after the point)")
    return quantity
