"""One contract for the inventory's ports, run against PostgreSQL (``his.inventory.store``) and the
in-memory fakes (``his.testing.inventory``) alike: what the use cases' unit tests assume of the
fake holds of the database.

Both sides start as a test's database does: the migration's reagent items and their use per lab
test, no stock. The units run at half an hour past midnight of a new year's day in Berlin (the
UTC date is still the old year's); "today" is the hospital's date, given to the repositories.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from his.events.inventory import StockReceived
from his.inventory.domain import DuplicateItemError, Item, Lot, Place, ReagentUse, Reason, Take
from his.inventory.ports import InventoryUnits
from his.inventory.store import InventoryStore
from his.kernel import migrations
from his.kernel.clock import FakeClock
from his.kernel.db import Database
from his.testing.inventory import FakeInventory, seeded_items
from tests.support.calendar import HARD_DATES

HARD = HARD_DATES[0]
#: The moment every unit of work here says it is, and the hospital's date then.
NOW = HARD.at(0, 30)
TODAY = HARD.day
TABLES = "consumption_lot, consumption, receipt, backorder, low_stock_alert, stock_lot, item_location, outbox, inbox"


@dataclass
class Side:
    units: InventoryUnits
    #: The types of the events committed so far, in commit order.
    published: Callable[[], Awaitable[list[str]]]
    #: What a CHECK and a unique key refuse with.
    check: type[Exception]
    unique: type[Exception]


@pytest.fixture(params=["memory", "postgres"])
async def side(request: pytest.FixtureRequest, admin_dsn: str) -> AsyncIterator[Side]:
    clock = FakeClock(NOW)
    if request.param == "memory":
        fake = FakeInventory(clock)

        async def in_memory() -> list[str]:
            return [e.type for e in fake.published]

        yield Side(fake, in_memory, ValueError, ValueError)
        return
    dsn = await migrations.provision(admin_dsn, "inventory", "pw-inventory-contract")
    await migrations.upgrade(admin_dsn, "inventory")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"TRUNCATE {', '.join(f'inventory.{t.strip()}' for t in TABLES.split(','))}")
        await conn.execute("DELETE FROM inventory.item WHERE code <> ALL($1::text[])", list(seeded_items()))
    finally:
        await conn.close()
    db = Database(dsn, schema="inventory", max_size=4, clock=clock)
    await db.open()

    async def in_outbox() -> list[str]:
        return [r[0] for r in await db.pool.fetch("SELECT subject FROM outbox ORDER BY id")]

    try:
        yield Side(InventoryStore(db), in_outbox, asyncpg.CheckViolationError, asyncpg.UniqueViolationError)
    finally:
        await db.close()


def _code() -> str:
    return f"T-{uuid.uuid4().hex[:10].upper()}"


async def _item(side: Side, *, unit: str = "piece", **thresholds: int) -> str:
    code = _code()
    async with side.units.uow() as u:
        await u.items.add(Item(code, "Test item", unit, True, {k: Decimal(v) for k, v in thresholds.items()}))
    return code


async def _receive(
    side: Side,
    code: str,
    quantity: str | int,
    *,
    lot: str = "L1",
    location: str = "WARD",
    days: int | None = None,
    at: datetime = NOW,
) -> Lot:
    """Receive into a lot expiring ``days`` after today (never without ``days``)."""
    async with side.units.uow() as u:
        await u.stock.lock(code, location, create=True)
        return await u.stock.receive(
            receipt_id=uuid.uuid4(),
            item_code=code,
            location=location,
            lot=lot,
            expires_on=None if days is None else TODAY + timedelta(days=days),
            quantity=Decimal(quantity),
            received_by=uuid.uuid4(),
            at=at,
        )


async def _consume(
    side: Side, code: str, *takes: tuple[Lot, str], location: str = "WARD", source: uuid.UUID | None = None
) -> None:
    async with side.units.uow() as u:
        await u.consumptions.add(
            consumption_id=uuid.uuid4(),
            item_code=code,
            location=location,
            quantity=sum((Decimal(q) for _, q in takes), Decimal(0)),
            reason=Reason.OTHER if source is None else Reason.LAB_ORDER,
            patient_id=None,
            source_id=source,
            chargeable=False,
            consumed_by=uuid.uuid4(),
            at=NOW,
            takes=[Take(lot, Decimal(q)) for lot, q in takes],
        )


async def _backorder(
    side: Side, code: str, *, location: str = "WARD", source: uuid.UUID | None = None, at: datetime = NOW
) -> uuid.UUID:
    bid = uuid.uuid4()
    async with side.units.uow() as u:
        await u.backorders.add(
            backorder_id=bid,
            item_code=code,
            location=location,
            requested=Decimal(5),
            available=Decimal("1.5"),
            reason=Reason.OTHER if source is None else Reason.LAB_ORDER,
            patient_id=None,
            source_id=source,
            created_by=None,
            at=at,
        )
    return bid


async def test_the_items_are_the_migrations_reagents(side: Side) -> None:
    seeded = seeded_items()
    async with side.units.read() as u:
        assert await u.items.all() == [seeded[code] for code in sorted(seeded)]
        assert await u.items.get("RGT-GLU") == seeded["RGT-GLU"]
        assert await u.items.get("NO-SUCH-ITEM") is None


async def test_an_item_is_kept_with_its_thresholds_and_its_code_is_unique(side: Side) -> None:
    code = await _item(side, unit="ml", WARD=5, PHARMACY=0)
    async with side.units.read() as u:
        got = await u.items.get(code)
        listed = await u.items.all()
    assert got == Item(code, "Test item", "ml", True, {"WARD": Decimal(5), "PHARMACY": Decimal(0)})
    assert got in listed and [i.code for i in listed] == sorted(i.code for i in listed)
    with pytest.raises(DuplicateItemError):
        async with side.units.uow() as u:
            await u.items.add(Item(code, "again", "box", False, {"ICU": Decimal(1)}))
    async with side.units.uow() as u:
        assert await u.items.get(code) == got
        assert await u.stock.lock(code, "WARD", create=False) == Place(code, "WARD", Decimal(5), False, 0)
        assert await u.stock.lock(code, "ICU", create=False) is None  # the duplicate's threshold was not kept


async def test_a_place_is_kept_once_and_its_version_never_goes_back(side: Side) -> None:
    code = await _item(side)
    async with side.units.uow() as u:
        assert await u.stock.lock(code, "WARD", create=False) is None
        assert await u.stock.lock(code, "WARD", create=True) == Place(code, "WARD", None, False, 0)
        assert await u.stock.lock(code, "WARD", create=True) == Place(code, "WARD", None, False, 0)
        await u.stock.save(code, "WARD", low=True, version=3)
    async with side.units.uow() as u:
        assert await u.stock.lock(code, "WARD", create=False) == Place(code, "WARD", None, True, 3)
        await u.stock.save(code, "WARD", low=False, version=2)
        await u.stock.save(code, "ICU", low=True, version=9)  # not kept: changes nothing
        assert await u.stock.lock(code, "WARD", create=True) == Place(code, "WARD", None, False, 3)
        assert await u.stock.lock(code, "ICU", create=False) is None
    async with side.units.read() as u:
        [item] = [i for i in await u.items.all() if i.code == code]
    assert item.thresholds == {}  # a place without a threshold is not one


async def test_receipts_add_to_their_lot_one_per_lot_and_expiry(side: Side) -> None:
    code = await _item(side, unit="ml")
    first = await _receive(side, code, 4, lot="X1", days=20)
    later = NOW + timedelta(hours=1)
    again = await _receive(side, code, "2.5", lot="X1", days=20, at=later)
    other_expiry = await _receive(side, code, 1, lot="X1", days=30, at=later)
    undated = await _receive(side, code, 1, lot="X2", at=later)
    undated_again = await _receive(side, code, 2, lot="X2", at=later)  # no expiry is one expiry
    assert (first.lot, first.expires_on, first.quantity) == ("X1", TODAY + timedelta(days=20), Decimal(4))
    assert (again.id, again.quantity, again.received_seq) == (first.id, Decimal("6.5"), first.received_seq)
    assert other_expiry.id != first.id and other_expiry.received_seq > first.received_seq
    assert (undated_again.id, undated_again.quantity, undated_again.expires_on) == (undated.id, Decimal(3), None)
    async with side.units.read() as u:
        [level] = await u.stock.levels(code, None, 100, TODAY)
    assert [(x.lot, x.quantity, x.received_at) for x in level.lots] == [
        ("X1", Decimal("6.5"), NOW),  # a lot is as old as its first receipt
        ("X1", Decimal(1), later),
        ("X2", Decimal(3), later),
    ]


async def test_usable_lots_go_first_expiring_first_and_skip_expired_and_empty_ones(side: Side) -> None:
    code = await _item(side)
    undated = await _receive(side, code, 5, lot="NOEXP")
    late = await _receive(side, code, 5, lot="LATE", days=90)
    twin_b = await _receive(side, code, 2, lot="TWIN-B", days=10)  # received before TWIN-A, same day
    twin_a = await _receive(side, code, 2, lot="TWIN-A", days=10)
    today = await _receive(side, code, 1, lot="TODAY", days=0)  # usable through its date
    gone = await _receive(side, code, 50, lot="GONE", days=-1)  # expired yesterday
    empty = await _receive(side, code, 3, lot="EMPTY", days=1)
    await _consume(side, code, (empty, "3"))
    async with side.units.uow() as u:
        usable = await u.stock.usable(code, "WARD", TODAY)
        assert [x.lot for x in usable] == ["TODAY", "TWIN-B", "TWIN-A", "LATE", "NOEXP"]
        assert [x.id for x in usable] == [today.id, twin_b.id, twin_a.id, late.id, undated.id]
        assert await u.stock.on_hand(code, "WARD", TODAY) == 15  # GONE's 50 do not count
        assert await u.stock.on_hand(code, "WARD", TODAY - timedelta(days=1)) == 65
        assert await u.stock.on_hand(code, "ICU", TODAY) == 0
        assert await u.stock.usable(code, "ICU", TODAY) == []
        tomorrow = await u.stock.usable(code, "WARD", TODAY + timedelta(days=1))
        assert [x.lot for x in tomorrow] == ["TWIN-B", "TWIN-A", "LATE", "NOEXP"]
    assert gone.id not in {x.id for x in usable}


async def test_the_stock_levels_list_each_place_with_its_lots_in_the_order_they_are_used(side: Side) -> None:
    code, other = await _item(side, WARD=10), await _item(side)
    await _receive(side, code, 4, lot="LATE", days=40)
    await _receive(side, code, 3, lot="SOON", days=4)
    await _receive(side, code, 7, lot="OLD", days=-2)
    await _receive(side, code, 6, lot="NOEXP")
    await _receive(side, code, 1, lot="ELSEWHERE", location="ICU", days=4)
    await _receive(side, other, 2, lot="O", days=4)
    empty = await _receive(side, other, 1, lot="EMPTY", location="ICU", days=4)
    await _consume(side, other, (empty, "1"), location="ICU")
    async with side.units.uow() as u:
        await u.stock.save(code, "WARD", low=True, version=1)
    async with side.units.read() as u:
        mine = await u.stock.levels(code, None, 100, TODAY)
        everything = await u.stock.levels(None, None, 100, TODAY)
        at_icu = await u.stock.levels(None, "ICU", 100, TODAY)
        few = await u.stock.levels(code, None, 3, TODAY)
        none = await u.stock.levels(_code(), None, 100, TODAY)
    assert [(s.item_code, s.location) for s in mine] == [(code, "ICU"), (code, "WARD")]
    ward = mine[1]
    assert (ward.unit, ward.on_hand, ward.expired, ward.threshold, ward.low) == (
        "piece",
        Decimal(13),
        Decimal(7),
        Decimal(10),
        True,
    )
    assert [(x.lot, x.quantity, x.expired) for x in ward.lots] == [
        ("OLD", Decimal(7), True),
        ("SOON", Decimal(3), False),
        ("LATE", Decimal(4), False),
        ("NOEXP", Decimal(6), False),
    ]
    assert (mine[0].threshold, mine[0].low, mine[0].on_hand) == (None, False, Decimal(1))
    keys = [(s.item_code, s.location) for s in everything]
    assert keys == sorted(keys) and {(code, "WARD"), (other, "WARD"), (other, "ICU")} <= set(keys)
    emptied = next(s for s in everything if (s.item_code, s.location) == (other, "ICU"))
    assert (emptied.lots, emptied.on_hand, emptied.expired) == (
        (),
        Decimal(0),
        Decimal(0),
    )  # listed, without its empty lot
    assert {(s.item_code, s.location) for s in at_icu} >= {(code, "ICU"), (other, "ICU")}
    assert all(s.location == "ICU" for s in at_icu)
    # The limit counts lots: ICU's one, then the first two of WARD.
    assert [(s.location, [x.lot for x in s.lots]) for s in few] == [("ICU", ["ELSEWHERE"]), ("WARD", ["OLD", "SOON"])]
    assert none == []


async def test_the_expiring_lots_come_soonest_first(side: Side) -> None:
    a, b = sorted([await _item(side), await _item(side)])
    await _receive(side, b, 1, lot="B-D5", days=5)
    await _receive(side, a, 1, lot="A-D5-Z", days=5)
    await _receive(side, a, 1, lot="A-D5-Y", days=5)
    await _receive(side, a, 1, lot="A-D5-ICU", location="ICU", days=5)
    await _receive(side, a, 2, lot="A-GONE", days=-3)
    await _receive(side, a, 3, lot="A-D40", days=40)
    await _receive(side, a, 4, lot="A-NOEXP")
    empty = await _receive(side, b, 1, lot="B-EMPTY", days=1)
    await _consume(side, b, (empty, "1"))
    mine = {a, b}
    async with side.units.read() as u:
        soon = [x for x in await u.stock.expiring(TODAY + timedelta(days=30), None, 100) if x.item_code in mine]
        ward = await u.stock.expiring(TODAY + timedelta(days=5), "WARD", 100)
        first = await u.stock.expiring(TODAY + timedelta(days=5), "WARD", 2)
        past = await u.stock.expiring(TODAY, None, 100)
    assert [(x.lot, x.item_code, x.location, x.expires_on, x.quantity, x.unit) for x in soon] == [
        ("A-GONE", a, "WARD", TODAY - timedelta(days=3), Decimal(2), "piece"),
        ("A-D5-ICU", a, "ICU", TODAY + timedelta(days=5), Decimal(1), "piece"),  # same day: by item, location, lot
        ("A-D5-Y", a, "WARD", TODAY + timedelta(days=5), Decimal(1), "piece"),
        ("A-D5-Z", a, "WARD", TODAY + timedelta(days=5), Decimal(1), "piece"),
        ("B-D5", b, "WARD", TODAY + timedelta(days=5), Decimal(1), "piece"),
    ]
    assert [x.lot for x in ward] == ["A-GONE", "A-D5-Y", "A-D5-Z", "B-D5"]
    assert [x.lot for x in first] == ["A-GONE", "A-D5-Y"]
    assert [x.lot for x in past] == ["A-GONE"]


async def test_a_consumption_takes_from_its_lots_and_a_source_uses_an_item_once(side: Side) -> None:
    code, other = await _item(side), await _item(side)
    soon = await _receive(side, code, 3, lot="SOON", days=5)
    late = await _receive(side, code, 10, lot="LATE", days=50)
    spare = await _receive(side, other, 4, days=50)
    order = uuid.uuid4()
    await _consume(side, code, (soon, "3"), (late, "1.5"), source=order)
    async with side.units.uow() as u:
        assert [(x.lot, x.quantity) for x in await u.stock.usable(code, "WARD", TODAY)] == [("LATE", Decimal("8.5"))]
        assert await u.consumptions.handled(order) == {code}
        assert await u.consumptions.handled(uuid.uuid4()) == set()
    with pytest.raises(side.unique):
        await _consume(side, code, (late, "1"), source=order)
    await _consume(side, other, (spare, "1"), source=order)  # another item of the same order
    await _consume(side, code, (late, "1"))  # without a source: no such limit
    await _consume(side, code, (late, "1"))
    async with side.units.uow() as u:
        assert await u.consumptions.handled(order) == {code, other}
        assert await u.stock.on_hand(code, "WARD", TODAY) == Decimal("6.5")


async def test_a_lot_never_goes_below_zero(side: Side) -> None:
    code = await _item(side)
    lot = await _receive(side, code, 2, days=5)
    other = await _receive(side, code, 5, lot="L2", days=6)
    with pytest.raises(side.check):
        await _consume(side, code, (other, "1"), (lot, "3"))
    async with side.units.read() as u:
        [level] = await u.stock.levels(code, None, 10, TODAY)
    assert [x.quantity for x in level.lots] == [2, 5]  # the whole consumption was refused
    await _consume(side, code, (lot, "2"))
    async with side.units.uow() as u:
        assert [x.lot for x in await u.stock.usable(code, "WARD", TODAY)] == ["L2"]


async def test_back_orders_are_listed_latest_first_and_once_per_source_and_item(side: Side) -> None:
    code, other = await _item(side), await _item(side)
    order = uuid.uuid4()
    old = await _backorder(side, code, at=NOW - timedelta(days=1), source=order)
    twins = sorted([await _backorder(side, code), await _backorder(side, code, location="ICU")])
    elsewhere = await _backorder(side, other)
    with pytest.raises(side.unique):
        await _backorder(side, code, source=order)
    async with side.units.read() as u:
        mine = await u.backorders.find(code, None, 10)
        assert [b.id for b in mine] == [*twins, old]
        assert [b.id for b in await u.backorders.find(code, None, 1)] == [twins[0]]
        assert [b.location for b in await u.backorders.find(code, "ICU", 10)] == ["ICU"]
        assert elsewhere in {b.id for b in await u.backorders.find(None, None, 10)}
        assert {b.item_code for b in await u.backorders.find(None, "WARD", 10)} == {code, other}
        assert await u.consumptions.handled(order) == {code}
    oldest = mine[-1]
    assert (oldest.item_code, oldest.location, oldest.requested, oldest.available) == (
        code,
        "WARD",
        Decimal(5),
        Decimal("1.5"),
    )
    assert (oldest.reason, oldest.source_id, oldest.created_at) == ("lab_order", order, NOW - timedelta(days=1))
    assert (mine[0].reason, mine[0].source_id) == ("other", None)


async def test_alerts_are_listed_latest_first(side: Side) -> None:
    code, other = await _item(side, WARD=5, ICU=1), await _item(side, WARD=2)

    async def alert(item: str, location: str, on_hand: str, at: datetime) -> uuid.UUID:
        aid = uuid.uuid4()
        async with side.units.uow() as u:
            await u.alerts.add(
                alert_id=aid, item_code=item, location=location, on_hand=Decimal(on_hand), threshold=Decimal(5), at=at
            )
        return aid

    old = await alert(code, "WARD", "4.5", NOW - timedelta(hours=2))
    ward, icu = await alert(code, "WARD", "3", NOW), await alert(code, "ICU", "1", NOW)
    elsewhere = await alert(other, "WARD", "0", NOW - timedelta(hours=1))
    twins = sorted([ward, icu])
    async with side.units.read() as u:
        mine = await u.alerts.find(code, None, 10)
        assert [a.id for a in mine] == [*twins, old]
        assert [a.id for a in await u.alerts.find(code, None, 2)] == twins
        assert [a.id for a in await u.alerts.find(code, "ICU", 10)] == [icu]
        assert [a.id for a in await u.alerts.find(None, "WARD", 10)] == [ward, elsewhere, old]
    assert (mine[-1].item_code, mine[-1].location, mine[-1].on_hand, mine[-1].threshold, mine[-1].alerted_at) == (
        code,
        "WARD",
        Decimal("4.5"),
        Decimal(5),
        NOW - timedelta(hours=2),
    )


async def test_a_lab_tests_reagents_are_summed_per_item(side: Side) -> None:
    async with side.units.read() as u:
        used = await u.reagents.for_tests(["NA", "GLU", "K", "NOTATEST"])
        assert await u.reagents.for_tests(["NOTATEST"]) == []
    assert used == [ReagentUse("RGT-GLU", "LAB", Decimal(1)), ReagentUse("RGT-ISE", "LAB", Decimal(2))]


async def test_a_unit_that_fails_leaves_nothing_and_publishes_nothing(side: Side) -> None:
    code = await _item(side, WARD=5)
    lot = await _receive(side, code, 10, days=5)
    new, order = _code(), uuid.uuid4()
    with pytest.raises(RuntimeError):
        async with side.units.uow() as u:
            await u.items.add(Item(new, "Never kept", "box", False, {"ICU": Decimal(2)}))
            await u.stock.lock(code, "ICU", create=True)
            await u.stock.save(code, "WARD", low=True, version=7)
            await u.stock.receive(
                receipt_id=uuid.uuid4(),
                item_code=code,
                location="ICU",
                lot="NEW",
                expires_on=None,
                quantity=Decimal(3),
                received_by=uuid.uuid4(),
                at=NOW,
            )
            await u.consumptions.add(
                consumption_id=uuid.uuid4(),
                item_code=code,
                location="WARD",
                quantity=Decimal(4),
                reason=Reason.LAB_ORDER,
                patient_id=None,
                source_id=order,
                chargeable=False,
                consumed_by=None,
                at=NOW,
                takes=[Take(lot, Decimal(4))],
            )
            await u.backorders.add(
                backorder_id=uuid.uuid4(),
                item_code=code,
                location="WARD",
                requested=Decimal(2),
                available=Decimal(0),
                reason=Reason.OTHER,
                patient_id=None,
                source_id=None,
                created_by=None,
                at=NOW,
            )
            await u.alerts.add(
                alert_id=uuid.uuid4(), item_code=code, location="WARD", on_hand=Decimal(1), threshold=Decimal(5), at=NOW
            )
            u.add(StockReceived(item_code=code, location="ICU", lot="NEW", quantity=Decimal(3)), aggregate_id=code)
            raise RuntimeError("the use case fails after writing")
    async with side.units.read() as u:
        assert await u.items.get(new) is None
        [level] = await u.stock.levels(code, None, 10, TODAY)
        assert (level.location, level.low, [x.quantity for x in level.lots]) == ("WARD", False, [Decimal(10)])
        assert await u.consumptions.handled(order) == set()
        assert await u.backorders.find(code, None, 10) == []
        assert await u.alerts.find(code, None, 10) == []
    async with side.units.uow() as u:
        assert await u.stock.lock(code, "WARD", create=False) == Place(code, "WARD", Decimal(5), False, 0)
    assert await side.published() == []
    async with side.units.uow() as u:
        u.add(StockReceived(item_code=code, location="WARD", lot="L1", quantity=Decimal(1)), aggregate_id=code)
        assert u.clock() == NOW
    assert await side.published() == [StockReceived.type]


def test_the_hospitals_date_is_not_the_utc_date() -> None:
    assert NOW.date() == date(2027, 12, 31) and date(2028, 1, 1) == TODAY
