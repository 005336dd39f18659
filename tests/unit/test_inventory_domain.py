"""Inventory rules without IO: FEFO allocation, shortfalls, and the low-stock hysteresis."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal

import pytest

from his.inventory.domain import (
    COUNTED_UNITS,
    MEASURED_UNITS,
    AlertDecision,
    Lot,
    ShortfallError,
    UnknownUnitError,
    UnsplittableQuantityError,
    allocate,
    available,
    check_quantity,
    check_split,
    fefo_order,
    known_unit,
    low_stock,
)

TODAY = date(2026, 11, 27)


def lot(name: str, qty: int | str, expires_in: int | None, seq: int = 0) -> Lot:
    expires = TODAY + timedelta(days=expires_in) if expires_in is not None else None
    return Lot(uuid.uuid5(uuid.NAMESPACE_OID, name), name, expires, Decimal(qty), seq)


def taken(lots: list[Lot], quantity: int | str) -> list[tuple[str, Decimal]]:
    return [(t.lot.lot, t.quantity) for t in allocate(lots, Decimal(quantity), TODAY)]


def test_first_expiring_lots_are_used_first_whatever_order_they_come_in() -> None:
    lots = [lot("late", 10, 90), lot("none", 10, None), lot("soon", 3, 5), lot("mid", 4, 30)]
    assert taken(lots, 2) == [("soon", Decimal(2))]
    assert taken(lots, 9) == [("soon", Decimal(3)), ("mid", Decimal(4)), ("late", Decimal(2))]
    # Lots without an expiry date go last.
    assert taken(lots, 27) == [("soon", Decimal(3)), ("mid", Decimal(4)), ("late", Decimal(10)), ("none", Decimal(10))]


def test_same_expiry_goes_in_order_of_receipt() -> None:
    lots = [lot("b", 5, 10, seq=2), lot("a", 5, 10, seq=1)]
    assert [x.lot for x in fefo_order(lots)] == ["a", "b"]
    assert taken(lots, 6) == [("a", Decimal(5)), ("b", Decimal(1))]


def test_expired_and_empty_lots_are_never_used() -> None:
    lots = [lot("expired", 100, -1), lot("empty", 0, 1), lot("today", 2, 0), lot("ok", 5, 20)]
    # A lot is usable through its expiry date.
    assert taken(lots, 3) == [("today", Decimal(2)), ("ok", Decimal(1))]
    assert available(lots, TODAY) == Decimal(7)


def test_a_shortfall_takes_nothing_and_says_what_is_available() -> None:
    lots = [lot("expired", 50, -3), lot("a", 2, 3), lot("b", "1.5", 9)]
    with pytest.raises(ShortfallError) as err:
        allocate(lots, Decimal(4), TODAY)
    assert err.value.requested == Decimal(4) and err.value.available == Decimal("3.5")
    with pytest.raises(ShortfallError) as err:
        allocate([], Decimal(1), TODAY)
    assert err.value.available == 0


def test_exactly_the_available_quantity_can_be_taken() -> None:
    lots = [lot("a", "2.25", 3), lot("b", "1.75", 9)]
    assert taken(lots, 4) == [("a", Decimal("2.25")), ("b", Decimal("1.75"))]
    assert sum(t.quantity for t in allocate(lots, Decimal("3.3"), TODAY)) == Decimal("3.3")


def test_allocation_needs_a_positive_quantity() -> None:
    with pytest.raises(ValueError):
        allocate([lot("a", 1, 1)], Decimal(0), TODAY)


@pytest.mark.parametrize("bad", ["0", "-1", "NaN", "Infinity", "0.0001", "100000000000"])
def test_quantities_are_positive_finite_and_within_precision(bad: str) -> None:
    with pytest.raises(ValueError):
        check_quantity(Decimal(bad))
    assert check_quantity(Decimal("0.001")) == Decimal("0.001")


def test_low_stock_alerts_once_per_crossing() -> None:
    threshold = Decimal(5)
    low = False
    alerts = 0
    # Stock falls 8 → 2 (one alert at 5), rises to 10 (reset), falls to 5 again (a second alert).
    for level in [8, 7, 6, 5, 4, 3, 2, 10, 9, 6, 5, 1]:
        decision = low_stock(Decimal(level), threshold, low)
        alerts += decision.alert
        low = decision.low
    assert alerts == 2


def test_low_stock_hysteresis_states() -> None:
    t = Decimal(5)
    assert low_stock(Decimal(6), t, False) == AlertDecision(alert=False, low=False)
    assert low_stock(Decimal(5), t, False) == AlertDecision(alert=True, low=True)  # "to or below"
    assert low_stock(Decimal(3), t, True) == AlertDecision(alert=False, low=True)  # still low: no repeat
    assert low_stock(Decimal(5), t, True) == AlertDecision(alert=False, low=True)  # back to it, not above
    assert low_stock(Decimal("5.001"), t, True) == AlertDecision(alert=False, low=False)  # above: cleared
    assert low_stock(Decimal(0), None, False) == AlertDecision(alert=False, low=False)  # no threshold
    assert low_stock(Decimal(0), Decimal(0), False) == AlertDecision(alert=True, low=True)


def test_units_are_known_ones_and_counted_units_take_whole_numbers_only() -> None:
    assert known_unit(" Piece ") == "piece" and known_unit("ml") == "ml"
    with pytest.raises(UnknownUnitError, match="unknown unit 'widget': valid values are ampoule, bag, "):
        known_unit("widget")
    assert check_split(Decimal("3.000"), "pack") == Decimal("3.000")
    assert check_split(Decimal("2.5"), "ml") == Decimal("2.5")
    for unit in ("piece", "vial", "Stück"):  # a unit recorded before units were checked counts as whole things
        with pytest.raises(UnsplittableQuantityError, match="cannot be split"):
            check_split(Decimal("0.5"), unit)
    assert not set(COUNTED_UNITS) & set(MEASURED_UNITS)
