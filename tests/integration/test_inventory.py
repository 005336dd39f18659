"""Inventory on the real database and NATS: stock never goes negative under concurrent use (the
row locks and the CHECK on the lots), concurrent consumptions alert once, and a resulted lab
order delivered through NATS uses its reagents exactly once (short stock back-ordered, the
consumer never failing).

The use cases themselves (first-expiring lots first, the alert once per crossing, back-orders,
billing and the care rule, units, roles and bad input) are tested over the in-memory ports in
``tests/unit/test_inventory_use_cases.py``, and the store against the fakes in
``tests/integration/test_inventory_contract.py``. The patient directory is the package's
in-memory fake here; the real gRPC adapter runs under `his up`. The service's clock stands half
an hour after local midnight of a hard date (``tests.support.calendar``), when the date in UTC is
still the day before; lots expire by the local date.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from nats.aio.client import Client as NATS

from his.clients.patients import FakePatients
from his.events.laboratory import OLDER_RESULTED, LabCharge, LabOrderResulted, LabOrderResultedV2, ResultFlag, opening
from his.inventory import handlers
from his.inventory.app import http as inventory_http
from his.kernel import migrations, streams
from his.kernel.clock import FakeClock
from his.kernel.consumer import ConsumerLoop, Subscription
from his.kernel.crypto import new_key_text
from his.kernel.db import Database
from his.kernel.events import Envelope
from his.kernel.sealing import Seal
from tests.support.api import bearer, serve
from tests.support.calendar import HARD_DATES, HardDate
from tests.support.sealing import SEAL, sealed_result
from tests.support.waiting import wait_for

TABLES = "consumption_lot, consumption, receipt, backorder, low_stock_alert, stock_lot, item_location, outbox, inbox"


def admin() -> dict[str, str]:
    return bearer(uuid.uuid4(), "ADMIN")


def nurse() -> dict[str, str]:
    return bearer(uuid.uuid4(), "NURSE")


@dataclass
class World:
    client: httpx.AsyncClient
    db: Database
    patients: FakePatients
    hard: HardDate
    clock: FakeClock

    @property
    def today(self) -> date:
        """The hospital's date by its clock."""
        return self.clock().astimezone(self.hard.tz).date()

    async def item(
        self, *, chargeable: bool = False, thresholds: dict[str, int] | None = None, unit: str = "piece"
    ) -> str:
        code = f"T-{uuid.uuid4().hex[:10].upper()}"
        body = {
            "code": code,
            "description": "Test item",
            "unit": unit,
            "chargeable": chargeable,
            "thresholds": thresholds or {},
        }
        r = await self.client.post("/inventory/items", json=body, headers=admin())
        assert r.status_code == 201, r.text
        return code

    async def receive(
        self, code: str, quantity: int | str, *, lot: str = "L1", location: str = "WARD-GEN", days: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"item_code": code, "location": location, "lot": lot, "quantity": str(quantity)}
        if days is not None:
            body["expires_on"] = (self.today + timedelta(days=days)).isoformat()
        r = await self.client.post("/inventory/receipts", json=body, headers=nurse())
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out

    async def consume(
        self,
        code: str,
        quantity: int | str,
        *,
        location: str = "WARD-GEN",
        who: dict[str, str] | None = None,
        **kw: Any,
    ) -> httpx.Response:
        body = {"item_code": code, "location": location, "quantity": str(quantity), "reason": "other", **kw}
        return await self.client.post("/inventory/consumptions", json=body, headers=who or nurse())

    async def stock(self, code: str, location: str = "WARD-GEN") -> dict[str, Any]:
        r = await self.client.get("/inventory/stock", params={"item_code": code, "location": location}, headers=nurse())
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items[0]

    async def events(self, subject: str, **match: str) -> list[dict[str, Any]]:
        rows = await self.db.pool.fetch("SELECT payload FROM outbox WHERE subject = $1 ORDER BY id", subject)
        data = [orjson.loads(bytes(r["payload"]))["data"] for r in rows]
        return [d for d in data if all(d.get(k) == v for k, v in match.items())]


@pytest.fixture
def hard() -> HardDate:
    return HARD_DATES[0]


@pytest.fixture
async def world(admin_dsn: str, hard: HardDate) -> AsyncIterator[World]:
    dsn = await migrations.provision(admin_dsn, "inventory", "pw-inventory-test")
    await migrations.upgrade(admin_dsn, "inventory")
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f"TRUNCATE {', '.join(f'inventory.{t.strip()}' for t in TABLES.split(','))}")
    await conn.close()
    clock = hard.clock(0, 30)
    db = Database(dsn, schema="inventory", max_size=24, clock=clock)
    await db.open()
    patients = FakePatients()
    service = inventory_http(db, patients, hard.zone)
    async with serve(service, base_url="http://inventory") as client:
        yield World(client, db, patients, hard, clock)
    await db.close()


async def test_fifty_concurrent_consumptions_of_twenty_units_exactly_twenty_win(world: World) -> None:
    code = await world.item()
    await world.receive(code, 12, lot="A", days=30)
    await world.receive(code, 8, lot="B", days=60)
    results = await asyncio.gather(*(world.consume(code, 1) for _ in range(50)))
    codes = [r.status_code for r in results]
    assert codes.count(201) == 20 and codes.count(409) == 30, codes
    refused = next(r for r in results if r.status_code == 409)
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["available"] == "0" and refused.json()["requested"] == "1"
    stock = await world.stock(code)
    assert stock["on_hand"] == "0" and stock["lots"] == []
    assert await world.db.pool.fetchval("SELECT min(quantity) FROM stock_lot WHERE item_code = $1", code) == 0
    assert await world.db.pool.fetchval("SELECT sum(quantity) FROM consumption WHERE item_code = $1", code) == 20
    assert len(await world.events("his.inventory.stock.consumed.v1", item_code=code)) == 20


async def test_the_database_refuses_negative_stock_even_if_asked_directly(world: World) -> None:
    code = await world.item()
    await world.receive(code, 1)
    with pytest.raises(asyncpg.CheckViolationError):
        await world.db.pool.execute("UPDATE stock_lot SET quantity = quantity - 2 WHERE item_code = $1", code)


async def test_concurrent_consumptions_alert_exactly_once(world: World) -> None:
    code = await world.item(thresholds={"WARD-GEN": 10})
    await world.receive(code, 30)
    results = await asyncio.gather(*(world.consume(code, 1) for _ in range(25)))
    assert all(r.status_code == 201 for r in results)
    assert len(await world.events("his.inventory.stock.low.v1", item_code=code)) == 1


def resulted(order_id: uuid.UUID, *codes: str) -> LabOrderResulted:
    return sealed_result(
        order_id=order_id,
        patient_id=uuid.uuid4(),
        ordered_by=uuid.uuid4(),
        priority="routine",
        resulted_at=HARD_DATES[0].at(0, 20),
        results=[ResultFlag(code=c, flag="N") for c in codes],
        charges=[LabCharge(code=c, amount=Decimal("60.00"), currency="TRY") for c in codes],
        abnormal=False,
        critical=False,
    )


@pytest.fixture
async def lab_feed(world: World, nc: NATS) -> AsyncIterator[tuple[Any, ConsumerLoop]]:
    """The reagent consumer running against NATS, and a way to publish lab events to it."""
    js = nc.jetstream(timeout=5.0)
    await streams.declare(js, ["laboratory", "inventory"])
    sub = Subscription.of(
        "inventory_lab_reagents_test",
        LabOrderResulted,
        opening(SEAL, handlers.make_on_lab_order_resulted(world.hard.tz)),
        older=OLDER_RESULTED,
    )
    consumer = ConsumerLoop(world.db, nc, js, sub)
    task = asyncio.create_task(consumer.run())

    async def publish(env: Envelope) -> None:  # no Nats-Msg-Id: a second publish is a second delivery
        await js.publish(env.type, env.to_json())

    yield publish, consumer
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_resulted_order_uses_its_reagents_once_even_if_delivered_twice(
    world: World, lab_feed: tuple[Any, ConsumerLoop]
) -> None:
    publish, consumer = lab_feed
    await world.receive("RGT-GLU", 10, location="LAB", lot="G2", days=200)
    await world.receive("RGT-GLU", 10, location="LAB", lot="G1", days=100)
    await world.receive("RGT-ISE", 10, location="LAB", days=100)
    order = uuid.uuid4()
    env = Envelope.wrap(resulted(order, "GLU", "K", "NA"), aggregate_id=order)
    await publish(env)
    await publish(env)

    async def both_seen() -> bool:
        return consumer.stats.applied + consumer.stats.duplicates >= 2

    await wait_for(both_seen, timeout=20, what="two deliveries of the resulted order")
    assert consumer.stats.applied == 1 and consumer.stats.duplicates == 1
    assert (await world.stock("RGT-GLU", "LAB"))["on_hand"] == "19"
    assert (await world.stock("RGT-ISE", "LAB"))["on_hand"] == "8"  # K and NA use one each
    used = await world.db.pool.fetch(
        "SELECT item_code, quantity, reason, chargeable FROM consumption WHERE source_id = $1 ORDER BY item_code",
        order,
    )
    assert [tuple(r) for r in used] == [("RGT-GLU", 1, "lab_order", False), ("RGT-ISE", 2, "lab_order", False)]
    taken = await world.db.pool.fetch(
        "SELECT s.lot FROM consumption_lot c JOIN stock_lot s ON s.id = c.lot_id WHERE s.item_code = 'RGT-GLU'"
    )
    assert [r["lot"] for r in taken] == ["G1"]  # first-expiring first
    consumed = await world.events("his.inventory.stock.consumed.v1", reason="lab_order")
    assert len(consumed) == 2 and not any(e["chargeable"] for e in consumed)
    assert all(e["source_id"] is None for e in consumed)  # the order is not named on the bus: its reagents
    assert str(order) not in str(consumed)  # would tell which tests it held

    # The same order under another event id (a republished result): the per-(order, item) key holds.
    await publish(Envelope.wrap(resulted(order, "GLU", "K", "NA"), aggregate_id=order))
    await wait_for(lambda: _true(consumer.stats.applied == 2), timeout=20, what="the republished result")
    assert await world.db.pool.fetchval("SELECT count(*) FROM consumption WHERE source_id = $1", order) == 2
    assert (await world.stock("RGT-GLU", "LAB"))["on_hand"] == "19"


async def _true(value: bool) -> bool:
    return value


async def test_a_v2_leftover_is_used_and_a_box_that_does_not_open_is_a_dead_letter(
    world: World, lab_feed: tuple[Any, ConsumerLoop]
) -> None:
    """A v2 event left in the stream (codes in clear) uses its reagents as a v3 one does; a v3
    event whose box was sealed under a key inventory does not hold is terminated at once (a
    dead letter with the reason), never applied and never silently acknowledged."""
    publish, consumer = lab_feed
    await world.receive("RGT-GLU", 10, location="LAB", days=100)
    order, stranger = uuid.uuid4(), uuid.uuid4()
    leftover = LabOrderResultedV2(**resulted(order, "GLU").opened(SEAL).model_dump())
    await publish(Envelope.wrap(leftover, aggregate_id=order))
    await wait_for(lambda: _true(consumer.stats.applied == 1), timeout=20, what="the v2 leftover")
    assert (await world.stock("RGT-GLU", "LAB"))["on_hand"] == "9"
    foreign = sealed_result(**resulted(stranger, "GLU").opened(SEAL).model_dump(), seal=Seal("X", new_key_text()))
    await publish(Envelope.wrap(foreign, aggregate_id=stranger))
    await wait_for(lambda: _true(consumer.stats.terminated == 1), timeout=20, what="the box that does not open")
    assert consumer.stats.applied == 1
    assert (await world.stock("RGT-GLU", "LAB"))["on_hand"] == "9"
    assert await world.db.pool.fetchval("SELECT count(*) FROM consumption WHERE source_id = $1", stranger) == 0


async def test_a_reagent_shortfall_is_back_ordered_and_never_fails_the_consumer(
    world: World, lab_feed: tuple[Any, ConsumerLoop]
) -> None:
    publish, consumer = lab_feed
    await world.receive("RGT-GLU", 5, location="LAB", days=100)
    await world.receive("RGT-TROPI", 1, location="LAB", days=100)
    await world.db.pool.execute(  # the one troponin reagent has expired on the shelf
        "UPDATE stock_lot SET expires_on = $1 WHERE item_code = 'RGT-TROPI'", world.today - timedelta(days=1)
    )
    order = uuid.uuid4()
    await publish(Envelope.wrap(resulted(order, "GLU", "TROPI", "NOTATEST"), aggregate_id=order))
    await wait_for(lambda: _true(consumer.stats.applied == 1), timeout=20, what="the resulted order")
    assert consumer.stats.failed == 0 and consumer.stats.terminated == 0
    assert (await world.stock("RGT-GLU", "LAB"))["on_hand"] == "4"  # the rest of the order still used its reagents
    tropi = await world.stock("RGT-TROPI", "LAB")
    assert tropi["on_hand"] == "0" and tropi["expired"] == "1"
    backordered = await world.events("his.inventory.stock.backordered.v1")
    assert [(b["item_code"], b["requested"], b["available"], b["source_id"]) for b in backordered] == [
        ("RGT-TROPI", "1", "0", None)
    ]
    listed = (
        await world.client.get("/inventory/backorders", params={"item_code": "rgt-tropi"}, headers=nurse())
    ).json()
    assert [(b["source_id"], b["reason"]) for b in listed["items"]] == [(str(order), "lab_order")]
    # Redelivered, the back-order is not recorded twice.
    await publish(Envelope.wrap(resulted(order, "GLU", "TROPI"), aggregate_id=order))
    await wait_for(lambda: _true(consumer.stats.applied == 2), timeout=20, what="the republished result")
    assert await world.db.pool.fetchval("SELECT count(*) FROM backorder WHERE source_id = $1", order) == 1
    assert (await world.stock("RGT-GLU", "LAB"))["on_hand"] == "4"
