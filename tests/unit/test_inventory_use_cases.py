"""The inventory's use cases through its routes, over the in-memory ports (no database, no
network): lots go first-expiring first and expired lots are skipped, the low-stock alert fires
once per crossing, a shortfall takes nothing (409, or a back-order), who may define, receive,
use and see stock, stock used for a patient is billed and audited, bad input is a 4xx problem.

The routes are the service's own, mounted in-process over ``his.testing.inventory``, whose
contract with the PostgreSQL store is ``tests/integration/test_inventory_contract.py``; what
needs the database or NATS (concurrent consumptions and their row locks, the CHECK on the lots,
the reagents of resulted orders delivered through NATS) stays in
``tests/integration/test_inventory.py``. The service's clock stands half an hour after local
midnight of a hard date (``tests.support.calendar``), when the date in UTC is still the day
before; lots expire by the local date, and the expiry tests run on every hard date.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from his.clients.patients import CareBasis, FakePatients
from his.events.inventory import StockBackordered, StockConsumed
from his.events.laboratory import LabCharge, LabOrderResulted, LabOrderResultedV2, ResultFlag
from his.inventory import handlers
from his.inventory.app import http_over
from his.kernel.clock import FakeClock
from his.kernel.events import Envelope
from his.testing.inventory import FakeInventory
from tests.support.api import bearer, serve
from tests.support.calendar import HARD_DATES, HardDate
from tests.support.sealing import SEAL, sealed_result


def admin() -> dict[str, str]:
    return bearer(uuid.uuid4(), "ADMIN")


def nurse() -> dict[str, str]:
    return bearer(uuid.uuid4(), "NURSE")


@dataclass
class World:
    client: httpx.AsyncClient
    fake: FakeInventory
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
        """The data of the published events of one type (as the outbox holds them), in order."""
        data = [e.data for e in self.fake.published if e.type == subject]
        return [d for d in data if all(d.get(k) == v for k, v in match.items())]

    def expire(self, code: str, lot: str, on: date) -> None:
        """Time passes for a lot on the shelf: it expires ``on``."""
        for key, kept in self.fake.state.lots.items():
            if (kept.item_code, kept.lot) == (code, lot):
                self.fake.state.lots[key] = replace(kept, expires_on=on)


@pytest.fixture(params=[HARD_DATES[0], HARD_DATES[4]], ids=str)
def hard(request: pytest.FixtureRequest) -> HardDate:
    """Half an hour after midnight on a new year's day, or on the day the clocks go back (the
    expiry tests run on every hard date)."""
    date: HardDate = request.param
    return date


@pytest.fixture
async def world(hard: HardDate) -> AsyncIterator[World]:
    clock = hard.clock(0, 30)
    fake, patients = FakeInventory(clock), FakePatients()
    async with serve(http_over(fake, patients, hard.zone, clock=clock), base_url="http://inventory") as client:
        yield World(client, fake, patients, hard, clock)


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_first_expiring_lots_go_first_and_expired_lots_are_skipped(world: World) -> None:
    code = await world.item()
    await world.receive(code, 5, lot="NOEXP")
    await world.receive(code, 5, lot="LATE", days=90)
    await world.receive(code, 3, lot="SOON", days=10)
    await world.receive(code, 50, lot="OLD", days=1)
    # Time passes for OLD: it expired yesterday, and is still on the shelf.
    world.expire(code, "OLD", world.today - timedelta(days=1))
    r = await world.consume(code, 4)
    assert r.status_code == 201, r.text
    assert [(x["lot"], x["quantity"]) for x in r.json()["lots"]] == [("SOON", "3"), ("LATE", "1")]
    r = await world.consume(code, 6)
    assert [(x["lot"], x["quantity"]) for x in r.json()["lots"]] == [("LATE", "4"), ("NOEXP", "2")]
    # 3 usable units left; the 50 expired ones are not offered.
    short = await world.consume(code, 4)
    assert short.status_code == 409 and short.json()["available"] == "3"
    stock = await world.stock(code)
    assert stock["on_hand"] == "3" and stock["expired"] == "50"
    assert [(x["lot"], x["expired"]) for x in stock["lots"]] == [("OLD", True), ("NOEXP", False)]


async def test_receiving_into_an_existing_lot_adds_to_it(world: World) -> None:
    code = await world.item(unit="ml")
    first = await world.receive(code, 4, lot="X1", days=20)
    second = await world.receive(code, "2.50", lot="X1", days=20)
    assert first["lot_quantity"] == "4" and second["lot_quantity"] == "6.5" and second["on_hand"] == "6.5"
    assert len((await world.stock(code))["lots"]) == 1
    received = await world.events("his.inventory.stock.received.v1", item_code=code)
    assert [e["quantity"] for e in received] == ["4", "2.5"]


async def test_the_low_stock_alert_fires_once_per_crossing(world: World) -> None:
    code = await world.item(thresholds={"WARD-GEN": 5, "PHARMACY": 100})
    await world.receive(code, 10, days=100)

    async def alerts() -> list[dict[str, Any]]:
        return await world.events("his.inventory.stock.low.v1", item_code=code)

    assert (await world.consume(code, 4)).status_code == 201  # 6: above
    assert await alerts() == []
    assert (await world.consume(code, 1)).status_code == 201  # 5: to the threshold
    assert [(a["on_hand"], a["threshold"], a["location"]) for a in await alerts()] == [("5", "5", "WARD-GEN")]
    assert (await world.stock(code))["low"] is True
    for _ in range(3):  # further down: no repeat
        assert (await world.consume(code, 1)).status_code == 201
    assert len(await alerts()) == 1
    await world.receive(code, 2, days=100)  # 4: still at or below, still no repeat
    assert len(await alerts()) == 1 and (await world.stock(code))["low"] is True
    await world.receive(code, 10, days=100)  # 14: above, so the state resets
    assert len(await alerts()) == 1 and (await world.stock(code))["low"] is False
    world.clock.advance(timedelta(minutes=5))  # alerts are listed by when they were raised
    assert (await world.consume(code, 10)).status_code == 201  # 4: a second crossing
    assert [a["on_hand"] for a in await alerts()] == ["5", "4"]
    listed = await world.client.get("/inventory/alerts", params={"item_code": code}, headers=nurse())
    assert [a["on_hand"] for a in listed.json()["items"]] == ["4", "5"]


async def test_a_shortfall_can_be_back_ordered_instead(world: World) -> None:
    code = await world.item()
    await world.receive(code, 2)
    r = await world.consume(code, 5, backorder=True)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "backordered" and body["requested"] == "5" and body["available"] == "2"
    assert (await world.stock(code))["on_hand"] == "2"  # nothing taken
    listed = (await world.client.get("/inventory/backorders", params={"item_code": code}, headers=nurse())).json()
    assert [(b["id"], b["requested"], b["available"]) for b in listed["items"]] == [(body["backorder_id"], "5", "2")]
    assert len(await world.events("his.inventory.stock.backordered.v1", item_code=code)) == 1
    # Where there is no stock at all, the back-order says so too.
    r = await world.consume(code, 1, location="ICU", backorder=True)
    assert r.status_code == 202 and r.json()["available"] == "0"


async def test_chargeable_items_used_for_a_patient_are_billed_to_them(world: World) -> None:
    billable, free = await world.item(chargeable=True), await world.item(chargeable=False)
    for code in (billable, free):
        await world.receive(code, 10)
    patient = world.patients.add()
    carer = uuid.uuid4()
    world.patients.care[(patient, carer)] = CareBasis(in_care=True, emergency=False)
    in_care = bearer(carer, "NURSE")
    r = await world.consume(billable, 2, reason="patient", patient_id=str(patient), who=in_care)
    assert r.status_code == 201 and r.json()["chargeable"] is True
    r = await world.consume(free, 1, reason="patient", patient_id=str(patient), who=in_care)
    assert r.json()["chargeable"] is False
    assert (await world.consume(billable, 1)).json()["chargeable"] is False  # reason other: nobody to bill
    consumed = await world.events("his.inventory.stock.consumed.v1")
    charged = [(e["item_code"], e["quantity"], e["patient_id"]) for e in consumed if e["chargeable"]]
    assert charged == [(billable, "2", str(patient))]
    audited = await world.events("his.inventory.record.accessed.v1", patient_id=str(patient))
    assert len(audited) == 2 and {a["action"] for a in audited} == {"create"}
    unknown = await world.consume(billable, 1, reason="patient", patient_id=str(uuid.uuid4()), who=in_care)
    assert unknown.status_code == 422 and "patient" in unknown.json()["detail"]


async def test_a_unit_counted_in_whole_things_is_never_split_and_unknown_units_are_refused(world: World) -> None:
    """Half a piece is neither received nor used (so never billed); measured units take fractions."""
    r = await world.client.post(
        "/inventory/items",
        json={"code": "N-WIDGET", "description": "d", "unit": "widget", "chargeable": True},
        headers=admin(),
    )
    assert r.status_code == 422 and r.json()["field"] == "unit", r.text
    assert {"piece", "pack", "ml"} <= set(r.json()["valid_values"]) and "widget" not in r.json()["valid_values"]
    units = (await world.client.get("/inventory/units", headers=nurse())).json()["items"]
    assert {(u["unit"], u["whole_numbers_only"]) for u in units} >= {("piece", True), ("ml", False)}

    pid = world.patients.add()
    pieces = await world.item(chargeable=True, unit="Piece")
    listed = (await world.client.get("/inventory/items", headers=nurse())).json()["items"]
    assert [x["unit"] for x in listed if x["code"] == pieces] == ["piece"]
    half = {"item_code": pieces, "location": "WARD-GEN", "lot": "H1", "quantity": "2.5"}
    r = await world.client.post("/inventory/receipts", json=half, headers=nurse())
    assert r.status_code == 422 and "cannot be split" in r.json()["detail"], r.text
    await world.receive(pieces, 3)
    carer = uuid.uuid4()  # a nurse caring for the patient: the unit, not the care rule, refuses
    world.patients.care[(pid, carer)] = CareBasis(in_care=True, emergency=False)
    r = await world.consume(pieces, "0.5", reason="patient", patient_id=str(pid), who=bearer(carer, "NURSE"))
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    assert "0.5 piece" in r.json()["detail"]
    assert (await world.stock(pieces))["on_hand"] == "3"
    assert await world.events("his.inventory.stock.consumed.v1", item_code=pieces) == []  # nothing to bill
    r = await world.consume(pieces, "1.000", reason="patient", patient_id=str(pid), who=bearer(carer, "NURSE"))
    assert r.status_code == 201, r.text

    millilitres = await world.item(unit="ml")
    await world.receive(millilitres, "10.5")
    assert (await world.consume(millilitres, "2.25")).status_code == 201
    assert (await world.stock(millilitres))["on_hand"] == "8.25"


async def test_a_clinician_charges_stock_to_a_patient_only_in_their_care(world: World) -> None:
    """Stock used for a patient is billed to them: a DOCTOR or NURSE needs a care relationship or
    an emergency grant (else 403 offering emergency access, nothing taken, the refusal audited);
    the lab's technicians and ADMIN by role; never a patient."""
    code = await world.item(chargeable=True)
    await world.receive(code, 10)
    patient = world.patients.add()
    glass = uuid.uuid4()
    world.patients.care[(patient, glass)] = CareBasis(in_care=False, emergency=True)
    for who in (nurse(), bearer(uuid.uuid4(), "DOCTOR")):
        r = await world.consume(code, 1, reason="patient", patient_id=str(patient), who=who)
        assert r.status_code == 403 and r.json()["emergency_access"]["href"].endswith(f"{patient}/emergency-access")
    for role in ("PATIENT", "RECEPTIONIST", "BILLING"):
        r = await world.consume(code, 1, reason="patient", patient_id=str(patient), who=bearer(uuid.uuid4(), role))
        assert r.status_code == 403 and "emergency_access" not in r.json(), role
    assert (await world.stock(code))["on_hand"] == "10"  # nothing was taken
    for who in (bearer(glass, "NURSE"), bearer(uuid.uuid4(), "LAB_TECH"), bearer(uuid.uuid4(), "ADMIN")):
        r = await world.consume(code, 1, reason="patient", patient_id=str(patient), who=who)
        assert r.status_code == 201, r.text
    audited = await world.events("his.inventory.record.accessed.v1", patient_id=str(patient))
    assert [(a["outcome"], a["purpose"]) for a in audited] == [("denied", "care")] * 5 + [
        ("allowed", "emergency"),
        ("allowed", "care"),
        ("allowed", "care"),
    ]


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_the_expiry_report_lists_soonest_first_with_expired_ones(world: World) -> None:
    code = await world.item()
    await world.receive(code, 1, lot="D40", days=40)
    await world.receive(code, 2, lot="D20", days=20)
    await world.receive(code, 3, lot="D5", days=5)
    await world.receive(code, 4, lot="D0", days=0)
    await world.receive(code, 5, lot="GONE", days=3)
    await world.receive(code, 6, lot="FOREVER")
    world.expire(code, "GONE", world.today - timedelta(days=2))
    r = await world.client.get("/inventory/expiring", params={"days": 30}, headers=bearer(uuid.uuid4(), "BILLING"))
    assert r.status_code == 200, r.text
    rows = [(x["lot"], x["quantity"], x["expired"], x["days_left"]) for x in r.json()["items"]]
    assert rows == [("GONE", "5", True, -2), ("D0", "4", False, 0), ("D5", "3", False, 5), ("D20", "2", False, 20)]
    soon = (await world.client.get("/inventory/expiring", params={"days": 0}, headers=nurse())).json()
    assert [x["lot"] for x in soon["items"]] == ["GONE", "D0"]
    # An emptied lot is not reported.
    assert (await world.consume(code, 4)).status_code == 201
    after = (await world.client.get("/inventory/expiring", params={"days": 30}, headers=nurse())).json()
    assert [x["lot"] for x in after["items"]] == ["GONE", "D5", "D20"]


async def test_roles(world: World) -> None:
    code = await world.item()
    body = {"item_code": code, "location": "LAB", "lot": "A", "quantity": "1"}
    assert (await world.client.get("/inventory/stock", headers=bearer(uuid.uuid4(), "PATIENT"))).status_code == 403
    assert (await world.client.get("/inventory/items")).status_code == 401
    r = await world.client.post("/inventory/receipts", json=body, headers=bearer(uuid.uuid4(), "RECEPTIONIST"))
    assert r.status_code == 403
    r = await world.client.post("/inventory/receipts", json=body, headers=bearer(uuid.uuid4(), "LAB_TECH"))
    assert r.status_code == 201
    use = {"item_code": code, "location": "LAB", "quantity": "1", "reason": "other"}
    r = await world.client.post("/inventory/consumptions", json=use, headers=bearer(uuid.uuid4(), "BILLING"))
    assert r.status_code == 403
    r = await world.client.post("/inventory/consumptions", json=use, headers=bearer(uuid.uuid4(), "DOCTOR"))
    assert r.status_code == 201
    item = {"code": "NEW-1", "description": "x", "unit": "box", "chargeable": False}
    assert (await world.client.post("/inventory/items", json=item, headers=nurse())).status_code == 403
    items = (await world.client.get("/inventory/items", headers=bearer(uuid.uuid4(), "AUDITOR"))).json()["items"]
    assert any(i["code"] == "RGT-CBC" and i["chargeable"] is False for i in items)


async def test_items_are_unique_and_keep_their_thresholds(world: World) -> None:
    code = await world.item(thresholds={"ward-gen": 5, "PHARMACY": 0})
    dup = {"code": code.lower(), "description": "again", "unit": "box", "chargeable": True}
    assert (await world.client.post("/inventory/items", json=dup, headers=admin())).status_code == 409
    items = (await world.client.get("/inventory/items", headers=nurse())).json()["items"]
    mine = next(i for i in items if i["code"] == code)
    assert mine["thresholds"] == {"WARD-GEN": "5", "PHARMACY": "0"} and mine["unit"] == "piece"


HUGE = "X" * 100_000


@pytest.mark.parametrize(
    ("path", "patch"),
    [
        ("/inventory/receipts", {"quantity": "0"}),
        ("/inventory/receipts", {"quantity": "-3"}),
        ("/inventory/receipts", {"quantity": "NaN"}),
        ("/inventory/receipts", {"quantity": "Infinity"}),
        ("/inventory/receipts", {"quantity": "1.0001"}),
        ("/inventory/receipts", {"quantity": "1e20"}),
        ("/inventory/receipts", {"quantity": True}),
        ("/inventory/receipts", {"item_code": "NO-SUCH-ITEM"}),
        ("/inventory/receipts", {"item_code": HUGE}),
        ("/inventory/receipts", {"lot": HUGE}),
        ("/inventory/receipts", {"lot": "bad\u0000lot"}),
        ("/inventory/receipts", {"location": "no place!"}),
        ("/inventory/receipts", {"expires_on": "2026-13-01"}),
        ("/inventory/receipts", {"expires_on": "next tuesday"}),
        ("/inventory/receipts", {"expires_on": 1_800_000_000}),
        ("/inventory/receipts", {"expires_on": "2020-01-01"}),  # already expired
        ("/inventory/receipts", {"status": "received"}),
        ("/inventory/receipts", {"id": str(uuid.uuid4())}),
        ("/inventory/consumptions", {"quantity": "0"}),
        ("/inventory/consumptions", {"quantity": -1}),
        ("/inventory/consumptions", {"item_code": "NO-SUCH-ITEM"}),
        ("/inventory/consumptions", {"reason": "patient"}),  # without a patient
        ("/inventory/consumptions", {"patient_id": str(uuid.uuid4())}),  # with reason other
        ("/inventory/consumptions", {"patient_id": "not-a-uuid", "reason": "patient"}),
        ("/inventory/consumptions", {"reason": "lab_order"}),  # only the lab path uses it
        ("/inventory/consumptions", {"backorder": "yes"}),
        ("/inventory/consumptions", {"location": HUGE}),
        ("/inventory/items", {"code": "lower case"}),
        ("/inventory/items", {"unit": "widget"}),
        ("/inventory/consumptions", {"quantity": "0.5"}),
        ("/inventory/receipts", {"quantity": "1.5"}),
        ("/inventory/items", {"description": HUGE}),
        ("/inventory/items", {"chargeable": "maybe"}),
        ("/inventory/items", {"thresholds": {"WARD-GEN": -1}}),
        ("/inventory/items", {"thresholds": {"bad place!": 1}}),
        ("/inventory/items", {"thresholds": {f"W{i}": 1 for i in range(51)}}),
    ],
)
async def test_bad_input_is_a_4xx_problem(world: World, path: str, patch: dict[str, Any]) -> None:
    code = await world.item()
    await world.receive(code, 5)
    base: dict[str, dict[str, Any]] = {
        "/inventory/receipts": {"item_code": code, "location": "WARD-GEN", "lot": "A", "quantity": "1"},
        "/inventory/consumptions": {"item_code": code, "location": "WARD-GEN", "quantity": "1", "reason": "other"},
        "/inventory/items": {
            "code": f"N-{uuid.uuid4().hex[:8]}",
            "description": "d",
            "unit": "box",
            "chargeable": False,
        },
    }
    r = await world.client.post(path, json={**base[path], **patch}, headers=admin())
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.headers["content-type"] == "application/problem+json"
    assert (await world.stock(code))["on_hand"] == "5"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/inventory/expiring", {"days": "-1"}),
        ("/inventory/expiring", {"days": "lots"}),
        ("/inventory/expiring", {"days": "100000"}),
        ("/inventory/expiring", {"location": "no place!"}),
        ("/inventory/stock", {"item_code": HUGE[:1000]}),
        ("/inventory/stock", {"item_code": "NO-SUCH-ITEM"}),
        ("/inventory/stock", {"location": "bad place"}),
        ("/inventory/alerts", {"limit": "0"}),
        ("/inventory/backorders", {"item_code": "a b"}),
    ],
)
async def test_bad_queries_are_a_4xx_problem(world: World, path: str, params: dict[str, str]) -> None:
    r = await world.client.get(path, params=params, headers=nurse())
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.headers["content-type"] == "application/problem+json"


async def test_a_filter_by_an_unknown_item_is_a_422_not_an_empty_list(world: World) -> None:
    for path in ("/inventory/stock", "/inventory/alerts", "/inventory/backorders"):
        r = await world.client.get(path, params={"item_code": "NO-SUCH-ITEM"}, headers=nurse())
        assert r.status_code == 422 and "unknown item_code NO-SUCH-ITEM" in r.text, (path, r.text)
    assert (await world.client.get("/inventory/alerts", params={"limit": 201}, headers=nurse())).status_code == 422


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


async def test_a_resulted_order_uses_its_reagents_once_and_back_orders_what_is_short(world: World) -> None:
    """The reagent consumer's use case (its delivery through NATS and the inbox are the
    integration suite's): first-expiring lots first, not charged; a short item back-ordered,
    the others still used; an order replayed under another event id uses nothing twice."""
    await world.receive("RGT-GLU", 10, location="LAB", lot="G2", days=200)
    await world.receive("RGT-GLU", 10, location="LAB", lot="G1", days=100)
    await world.receive("RGT-ISE", 10, location="LAB", days=100)
    await world.receive("RGT-TROPI", 1, location="LAB", days=100)
    world.expire("RGT-TROPI", "L1", world.today - timedelta(days=1))
    order = uuid.uuid4()

    async def deliver(*codes: str) -> None:
        ev = resulted(order, *codes)  # the codes travel sealed: opened with the key
        async with world.fake.uow() as u:
            await handlers.use_reagents(u, Envelope.wrap(ev, aggregate_id=order), ev.opened(SEAL), world.today)

    await deliver("GLU", "K", "NA", "TROPI", "NOTATEST")
    glucose = await world.stock("RGT-GLU", "LAB")
    assert glucose["on_hand"] == "19"
    assert [(x["lot"], x["quantity"]) for x in glucose["lots"]] == [("G1", "9"), ("G2", "10")]  # G1 went first
    assert (await world.stock("RGT-ISE", "LAB"))["on_hand"] == "8"  # K and NA use one each
    tropi = await world.stock("RGT-TROPI", "LAB")
    assert tropi["on_hand"] == "0" and tropi["expired"] == "1"
    consumed = await world.events(StockConsumed.type, reason="lab_order")
    assert all(e["source_id"] is None for e in consumed)  # which order's reagents would tell its tests
    assert [(e["item_code"], e["quantity"], e["reason"], e["chargeable"]) for e in consumed] == [
        ("RGT-GLU", "1", "lab_order", False),
        ("RGT-ISE", "2", "lab_order", False),
    ]
    backordered = await world.events(StockBackordered.type)
    assert [(b["item_code"], b["requested"], b["available"], b["source_id"]) for b in backordered] == [
        ("RGT-TROPI", "1", "0", None)
    ]

    await deliver("GLU", "K", "NA", "TROPI")  # the same order again, under another event id
    assert len(await world.events(StockConsumed.type)) == 2 and len(await world.events(StockBackordered.type)) == 1
    assert (await world.stock("RGT-GLU", "LAB"))["on_hand"] == "19"

    other = uuid.uuid4()  # a v2 event left in the stream: its codes in clear, read as v3
    leftover = LabOrderResultedV2(**resulted(other, "GLU").opened(SEAL).model_dump()).upcast()
    async with world.fake.uow() as u:
        await handlers.use_reagents(u, Envelope.wrap(leftover, aggregate_id=other), leftover.opened(SEAL), world.today)
    assert (await world.stock("RGT-GLU", "LAB"))["on_hand"] == "18"
