"""Billing on the real database: charges from events, one invoice per admission or visit priced
under the patient's plan to the cent, redeliveries that change nothing, cancellations that void,
claims with their states, and payments that happen once per idempotency key.

Most events are handed to the handlers in a unit of work, as the consumer does; one journey
travels over a real JetStream through the service's own subscriptions.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast

import asyncpg
import httpx
import orjson
import pytest
from nats.aio.client import Client as NATS

from his.billing import handlers
from his.billing.app import build
from his.billing.app import http as billing_http
from his.billing.testmode import TestModeProvider
from his.clients import replica
from his.events.admissions import BedChargePosted, PatientAdmitted, PatientDischarged
from his.events.laboratory import LabCharge, LabOrderResulted, ResultItem
from his.events.patients import CoverageChanged, PatientRegistered
from his.events.scheduling import AppointmentCompleted
from his.kernel import migrations, streams
from his.kernel.clock import FakeClock
from his.kernel.consumer import ConsumerLoop
from his.kernel.db import Database, UnitOfWork
from his.kernel.events import Envelope, Event
from tests.support.api import bearer, serve
from tests.support.calendar import HARD_DATES, HardDate
from tests.support.waiting import wait_for

D = Decimal
TABLES = (
    "idempotency_key, provider_event, provider_delivery, test_provider_session, payment, payment_intent, claim, "
    "invoice_line, accumulator, voided_source, charge, invoice, encounter, coverage, known_patient, ward_tariff, "
    "outbox, inbox"
)
SEED_VERSION = "00000000-0000-4000-8000-00000000b111"
Handler = Callable[[UnitOfWork, Envelope, Event], Awaitable[None]]
Ev = TypeVar("Ev", bound=Event)


def at(day: int, hour: float = 9) -> datetime:
    return datetime(2026, 3, day, tzinfo=UTC) + timedelta(hours=hour)


#: The webhook secret of the TEST payment provider in these tests.
SECRET = b"billing-test-webhook-secret"


@dataclass
class World:
    client: httpx.AsyncClient
    db: Database
    clock: FakeClock
    billing: dict[str, str] = field(default_factory=lambda: bearer(uuid.uuid4(), "BILLING"))
    sent: list[tuple[Envelope, Event, Handler]] = field(default_factory=list)
    #: The embedded TEST payment provider, delivering its confirmations to the webhook route.
    provider: TestModeProvider | None = None

    async def feed(self, ev: Ev, handler: Callable[[UnitOfWork, Envelope, Ev], Awaitable[None]]) -> None:
        env = Envelope.wrap(ev, aggregate_id=uuid.uuid4())
        async with self.db.uow() as uow:
            await handler(uow, env, ev)
        self.sent.append((env, ev, cast(Handler, handler)))  # called again with this same event

    async def redeliver_all(self) -> None:
        """Every event again, as a consumer whose ack was lost would apply it (the inbox aside)."""
        for env, ev, handler in list(self.sent):
            async with self.db.uow() as uow:
                await handler(uow, env, ev)

    async def patient(self, payer: str | None, account: uuid.UUID | None = None) -> uuid.UUID:
        pid = uuid.uuid4()
        await self.feed(PatientRegistered(patient_id=pid, account_id=account), replica.on_patient_registered)
        await self.feed(
            CoverageChanged(patient_id=pid, payer=payer, effective_from=date(2026, 1, 1)), handlers.on_coverage_changed
        )
        return pid

    async def invoices(self, pid: uuid.UUID, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
        r = await self.client.get("/invoices", params={"patient_id": str(pid)}, headers=headers or self.billing)
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def state(self) -> list[tuple[Any, ...]]:
        rows = await self.db.pool.fetch(
            "SELECT i.id, i.status, i.total, i.insurer_share, i.patient_share, "
            "(SELECT count(*) FROM charge) AS charges, (SELECT count(*) FROM claim) AS claims "
            "FROM invoice i ORDER BY i.id"
        )
        return [tuple(r) for r in rows]


@pytest.fixture
async def world(admin_dsn: str) -> AsyncIterator[World]:
    dsn = await migrations.provision(admin_dsn, "billing", "pw-billing-test")
    await migrations.upgrade(admin_dsn, "billing")
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(f"SET search_path TO billing; TRUNCATE {TABLES}")
    await conn.execute(f"DELETE FROM billing.price_line WHERE version_id <> '{SEED_VERSION}'")
    await conn.execute(f"DELETE FROM billing.price_list_version WHERE id <> '{SEED_VERSION}'")
    await conn.close()
    clock = HARD_DATES[0].clock(12, 0)
    db = Database(dsn, schema="billing", max_size=24, clock=clock)
    await db.open()
    clients: list[httpx.AsyncClient] = []

    async def deliver(body: bytes, headers: dict[str, str]) -> int:  # as the provider posts its webhook
        return (await clients[0].post("/payments/webhooks/test", content=body, headers=headers)).status_code

    provider = TestModeProvider(db, SECRET, deliver)
    async with serve(billing_http(db, provider), base_url="http://billing") as client:
        clients.append(client)
        yield World(client, db, clock, provider=provider)
    await db.close()


def lab(pid: uuid.UUID, when: datetime, *tests: tuple[str, str], order: uuid.UUID | None = None) -> LabOrderResulted:
    return LabOrderResulted(
        order_id=order or uuid.uuid4(),
        patient_id=pid,
        ordered_by=uuid.uuid4(),
        priority="routine",
        resulted_at=when,
        results=[ResultItem(code=c, value="1", flag="N") for c, _ in tests],
        charges=[LabCharge(code=c, amount=D(a), currency="TRY") for c, a in tests],
        abnormal=False,
        critical=False,
    )


def completed(pid: uuid.UUID, appt: uuid.UUID, when: datetime, service: str = "consultation") -> AppointmentCompleted:
    return AppointmentCompleted(
        appointment_id=appt,
        patient_id=pid,
        practitioner_id=uuid.uuid4(),
        service=service,
        start=when,
        end=when + timedelta(minutes=20),
    )


async def paid_invoice_setup(world: World, payer: str | None = None, account: uuid.UUID | None = None) -> str:
    pid = await world.patient(payer, account)
    await world.feed(completed(pid, uuid.uuid4(), at(5)), handlers.on_appointment_completed)
    [inv] = await world.invoices(pid)
    return str(inv["id"])


def key_headers(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


async def test_twenty_identical_payments_with_one_key_make_one_payment(world: World) -> None:
    inv = await paid_invoice_setup(world)  # self-pay: 750.00 due
    body = {"amount": "750.00", "currency": "TRY", "method": "card"}
    headers = key_headers(world.billing, "pay-" + uuid.uuid4().hex)
    answers = await asyncio.gather(
        *(world.client.post(f"/invoices/{inv}/payments", json=body, headers=headers) for _ in range(20))
    )
    assert {r.status_code for r in answers} == {201}, [r.text for r in answers]
    assert len({r.content for r in answers}) == 1  # twenty identical answers
    assert await world.db.pool.fetchval("SELECT count(*) FROM payment") == 1
    assert answers[0].json()["invoice_status"] == "paid"
    other = await world.client.post(f"/invoices/{inv}/payments", json={**body, "amount": "10.00"}, headers=headers)
    assert other.status_code == 409 and other.headers["content-type"] == "application/problem+json"
    missing = await world.client.post(f"/invoices/{inv}/payments", json=body, headers=world.billing)
    assert missing.status_code == 400


async def test_patients_see_and_pay_only_their_own_invoices(world: World) -> None:
    me, other = uuid.uuid4(), uuid.uuid4()
    mine = await paid_invoice_setup(world, None, me)
    theirs = await paid_invoice_setup(world, None, other)
    as_me = bearer(me, "PATIENT")
    assert (await world.client.get(f"/invoices/{mine}", headers=as_me)).status_code == 200
    assert (await world.client.get(f"/invoices/{theirs}", headers=as_me)).status_code == 404
    assert (await world.client.get(f"/invoices/{theirs}/payments", headers=as_me)).status_code == 404
    body = {"amount": "10.00", "currency": "TRY", "method": "online"}
    r = await world.client.post(f"/invoices/{theirs}/payments", json=body, headers=key_headers(as_me, "k1"))
    assert r.status_code == 403  # a patient never records a payment, whoever's the invoice (ADR 0021)
    online = {"amount": "10.00", "currency": "TRY"}
    r = await world.client.post(f"/invoices/{theirs}/online-payments", json=online, headers=key_headers(as_me, "k3"))
    assert r.status_code == 404  # another patient's invoice is answered as one that does not exist
    r = await world.client.post(f"/invoices/{mine}/payments", json=body, headers=key_headers(as_me, "k1"))
    assert r.status_code == 403 and "online-payments" in r.json()["detail"]  # patients pay through the provider
    r = await world.client.post(f"/invoices/{mine}/refunds", json=body, headers=key_headers(as_me, "k2"))
    assert r.status_code == 403
    listed = (await world.client.get("/invoices", headers=as_me)).json()["items"]
    assert [i["id"] for i in listed] == [mine]
    theirs_pid = (await world.client.get(f"/invoices/{theirs}", headers=world.billing)).json()["patient_id"]
    r = await world.client.get("/invoices", params={"patient_id": theirs_pid}, headers=as_me)
    assert r.status_code == 404
    assert (await world.client.get(f"/invoices/{uuid.uuid4()}", headers=world.billing)).status_code == 404
    assert (await world.client.get("/charges", params={"patient_id": theirs_pid}, headers=as_me)).status_code == 403
    # Staff outside billing are refused (403: they may know an invoice exists); a patient is not told.
    assert (await world.client.get(f"/invoices/{mine}", headers=bearer(uuid.uuid4(), "DOCTOR"))).status_code == 403
    audited = await world.db.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE subject = 'his.billing.record.accessed.v1'"
    )
    assert audited >= 4


async def test_a_refused_read_of_a_patients_money_is_audited(world: World) -> None:
    """Staff outside billing get 403 (they may know an invoice exists), another patient 404, as
    for an id that does not exist; each refusal is recorded, outcome denied, against the patient."""
    me = uuid.uuid4()
    inv = await paid_invoice_setup(world, None, me)
    pid = (await world.client.get(f"/invoices/{inv}", headers=world.billing)).json()["patient_id"]
    doctor, stranger = uuid.uuid4(), uuid.uuid4()
    reads = [
        (f"/invoices/{inv}", None),
        (f"/invoices/{inv}/payments", None),
        ("/invoices", {"patient_id": pid}),
        ("/charges", {"patient_id": pid}),
    ]
    for path, params in reads:
        assert (await world.client.get(path, params=params, headers=bearer(doctor, "DOCTOR"))).status_code == 403
        r = await world.client.get(path, params=params, headers=bearer(stranger, "PATIENT"))
        assert r.status_code == (403 if path == "/charges" else 404), (path, r.text)
    assert (await world.client.get(f"/invoices/{uuid.uuid4()}", headers=bearer(stranger, "PATIENT"))).status_code == 404
    rows = await world.db.pool.fetch("SELECT payload FROM outbox WHERE subject = 'his.billing.record.accessed.v1'")
    denied = [e["data"] for e in (orjson.loads(r["payload"]) for r in rows) if e["data"]["outcome"] == "denied"]
    assert {(x["actor_id"], x["patient_id"]) for x in denied} == {(str(doctor), pid), (str(stranger), pid)}
    assert len(denied) == 8


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_price_list_versions_and_payers(world: World, hard: HardDate) -> None:
    """A new price list from 30 days after a hard date (at noon, by the service's clock)."""
    world.clock.now = hard.at(12, 0)
    anyone = bearer(uuid.uuid4(), "NURSE")
    r = await world.client.get("/price-list", params={"date": "2026-03-10"}, headers=anyone)
    lines = {x["code"]: x for x in r.json()["lines"]}
    assert lines["consultation.consultation"] == {
        "code": "consultation.consultation",
        "category": "consultation",
        "amount": "750.00",
        "currency": "TRY",
    }
    assert {"item.SYRINGE-5ML", "item.IV-SET", "item.GAUZE"} <= set(lines)
    start = hard.day + timedelta(days=30)
    new_lines = [
        {**x, "amount": "800.00" if x["code"] == "consultation.consultation" else x["amount"]} for x in lines.values()
    ]
    new = {"effective_from": start.isoformat(), "lines": new_lines}
    admin = bearer(uuid.uuid4(), "ADMIN")
    assert (await world.client.post("/price-list", json=new, headers=anyone)).status_code == 403
    assert (await world.client.post("/price-list", json=new, headers=admin)).status_code == 201
    assert (await world.client.post("/price-list", json=new, headers=admin)).status_code == 409
    past = {**new, "effective_from": (hard.day - timedelta(days=1)).isoformat()}
    assert (await world.client.post("/price-list", json=past, headers=admin)).status_code == 422
    today = {"effective_from": hard.day.isoformat(), "lines": list(lines.values())}  # today is not the past
    assert (await world.client.post("/price-list", json=today, headers=admin)).status_code == 201
    first = new_lines[0]
    for bad in (
        {**new, "lines": [{**first, "category": "magic"}]},
        {**new, "lines": [{**first, "amount": "-1"}]},
        {**new, "lines": [first, first]},
        {**new, "lines": [{**first, "code": "x" * 5000}]},
    ):
        r = await world.client.post("/price-list", json=bad, headers=admin)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    later = await world.client.get("/price-list", params={"date": start.isoformat()}, headers=anyone)
    assert {x["code"]: x["amount"] for x in later.json()["lines"]}["consultation.consultation"] == "800.00"
    before = await world.client.get(
        "/price-list", params={"date": (start - timedelta(days=1)).isoformat()}, headers=anyone
    )
    assert {x["code"]: x["amount"] for x in before.json()["lines"]}["consultation.consultation"] == "750.00"
    # A completed appointment is priced on its own date.
    pid = await world.patient(None)
    when = datetime.combine(start, datetime.min.time(), tzinfo=UTC) + timedelta(hours=9)
    await world.feed(completed(pid, uuid.uuid4(), when), handlers.on_appointment_completed)
    assert (await world.invoices(pid))[0]["total"] == "800.00"
    payers = {p["code"]: p for p in (await world.client.get("/payers", headers=anyone)).json()["items"]}
    assert set(payers) == {"SGK", "ALLIANZ", "SELF", "NOVA"}
    assert payers["NOVA"]["deductible"] == "1000.00" and payers["NOVA"]["excluded_categories"] == ["supplies"]
    assert payers["SGK"]["coverage"]["bed"] == "80.00"
    assert (await world.client.get("/payers")).status_code == 401


async def test_a_journey_over_jetstream_through_the_service_subscriptions(world: World, nc: NATS) -> None:
    js = nc.jetstream(timeout=5.0)
    await streams.declare(js, ["patients", "admissions", "laboratory", "inventory", "scheduling"])
    tag = uuid.uuid4().hex[:6]
    subs = [type(s)(f"{s.name}_{tag}", s.event_type, s.handler) for s in build().subscriptions]
    tasks = [asyncio.create_task(ConsumerLoop(world.db, nc, js, s).run()) for s in subs]
    try:
        pid = uuid.uuid4()
        adm, ward = uuid.uuid4(), uuid.uuid4()
        admitted: list[Event] = [
            PatientRegistered(patient_id=pid, account_id=None),
            CoverageChanged(patient_id=pid, payer="SGK", effective_from=date(2026, 1, 1)),
            PatientAdmitted(
                admission_id=adm,
                patient_id=pid,
                practitioner_id=uuid.uuid4(),
                ward_id=ward,
                bed_id=uuid.uuid4(),
                admitted_at=at(10, 10),
            ),
            *[
                BedChargePosted(
                    charge_id=uuid.uuid4(),
                    admission_id=adm,
                    patient_id=pid,
                    ward_id=ward,
                    ward_type="general",
                    night=date(2026, 3, n),
                    amount=D("1500.00"),
                    currency="TRY",
                )
                for n in (10, 11)
            ],
        ]
        discharged = PatientDischarged(
            admission_id=adm,
            patient_id=pid,
            ward_id=ward,
            bed_id=uuid.uuid4(),
            admitted_at=at(10, 10),
            discharged_at=at(12, 10),
            nights=2,
        )

        async def publish(*events: Event) -> None:
            for ev in events:
                env = Envelope.wrap(ev, aggregate_id=pid)
                await js.publish(env.type, env.to_json(), headers={"Nats-Msg-Id": str(env.id)})

        async def count(sql: str) -> int:
            n: int = await world.db.pool.fetchval(sql, pid)
            return n

        # Streams are not ordered with each other: the lab result comes after the admission is
        # known and before the discharge, as it does in the hospital (see ADR 0010).
        await publish(*admitted)
        await wait_for(
            lambda: _at_least(count("SELECT count(*) FROM charge WHERE patient_id = $1"), 2), what="the bed nights"
        )
        await wait_for(
            lambda: _at_least(count("SELECT count(*) FROM coverage WHERE patient_id = $1"), 1), what="the coverage"
        )
        await wait_for(
            lambda: _at_least(
                count("SELECT count(*) FROM encounter WHERE patient_id = $1 AND started_at = '2026-03-10T10:00Z'"), 1
            ),
            what="the admission",
        )
        await publish(lab(pid, at(11, 9), ("CBC", "250.00")))
        await wait_for(
            lambda: _at_least(count("SELECT count(*) FROM charge WHERE patient_id = $1"), 3), what="the lab charge"
        )
        await publish(discharged)
        # The same discharge published again (a new event id): nothing changes.
        await publish(discharged)

        async def issued() -> bool:
            n = await world.db.pool.fetchval(
                "SELECT count(*) FROM invoice WHERE patient_id = $1 AND status <> 'draft'", pid
            )
            return bool(n)

        await wait_for(issued, what="the admission's invoice")
        [inv] = await world.invoices(pid)
        assert (inv["total"], inv["insurer_share"], inv["patient_share"]) == ("3250.00", "2600.00", "650.00")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _at_least(n: Awaitable[int], least: int) -> bool:
    return await n >= least


async def test_concurrent_invoices_of_one_patient_meet_the_deductible_once(world: World) -> None:
    pid = await world.patient("NOVA")
    await asyncio.gather(
        *(world.feed(completed(pid, uuid.uuid4(), at(3, 8 + i)), handlers.on_appointment_completed) for i in range(10))
    )
    shares = sorted(D(i["patient_share"]) for i in await world.invoices(pid))
    # 750.00 each: the first pays 750.00 of the deductible, the next 250.00 + 100.00 co-pay + 10 % of
    # 400.00, every other 100.00 co-pay + 10 % of 650.00, whichever order they were issued in.
    assert shares == [D("165.00")] * 8 + [D("390.00"), D("750.00")]
    year = await world.db.pool.fetchrow(
        "SELECT deductible_used, out_of_pocket FROM accumulator WHERE patient_id = $1", pid
    )
    assert year is not None
    assert (year["deductible_used"], year["out_of_pocket"]) == (D("1000.00"), D("2460.00"))


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ({"amount": "10.00", "currency": "TRY"}, "k"),  # no method
        ({"amount": "10.00", "currency": "TRY", "method": "barter"}, "k"),
        ({"amount": "10.00", "currency": "try", "method": "cash"}, "k"),
        ({"amount": "1e400", "currency": "TRY", "method": "cash"}, "k"),
        ({"amount": "NaN", "currency": "TRY", "method": "cash"}, "k"),
        ({"amount": "10.00", "currency": "TRY", "method": "cash", "status": "paid"}, "k"),  # never client-set
        ({"amount": "x" * 5000, "currency": "TRY", "method": "cash"}, "k"),
        ({"amount": "10.00", "currency": "TRY", "method": "cash"}, "k" * 300),
        ({"amount": "10.00", "currency": "TRY", "method": "cash"}, " "),
    ],
)
async def test_bad_payment_input_is_a_4xx_problem(world: World, body: dict[str, str], key: str) -> None:
    inv = await paid_invoice_setup(world)
    r = await world.client.post(f"/invoices/{inv}/payments", json=body, headers=key_headers(world.billing, key))
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert await world.db.pool.fetchval("SELECT count(*) FROM payment") == 0
    r = await world.client.post("/invoices/not-a-uuid/payments", json=body, headers=key_headers(world.billing, "k"))
    assert r.status_code == 422


async def test_list_filters_take_only_known_values_and_dates_within_the_calendar(world: World) -> None:
    """An unknown status or payer listed nothing (200 []); now it is a 422 naming what is valid."""
    for path, params, valid in (
        ("/invoices", {"status": "unpaid"}, "partially_paid"),
        ("/claims", {"status": "approved"}, "submitted"),
        ("/claims", {"payer": "ACME"}, "SGK"),
    ):
        r = await world.client.get(path, params=params, headers=world.billing)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", (path, r.text)
        assert valid in r.text, (path, r.text)
    assert (await world.client.get("/claims", params={"payer": "SGK"}, headers=world.billing)).status_code == 200
    assert (await world.client.get("/invoices", params={"status": "open"}, headers=world.billing)).status_code == 200
    for day in ("9999-12-31", "0001-01-01"):
        r = await world.client.get("/price-list", params={"date": day}, headers=world.billing)
        assert r.status_code == 422 and "dates from 1800-01-01 to 2999-12-31" in r.text, r.text
    r = await world.client.get(
        "/charges", params={"patient_id": str(uuid.uuid4()), "limit": 500}, headers=world.billing
    )
    assert r.status_code == 422 and "from 1 to 200" in r.text  # one maximum page for every list
