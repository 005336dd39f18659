"""Billing on the real database, where only the database can settle it: twenty identical
payments racing under one Idempotency-Key make one payment, and ten invoices of one patient
issued concurrently meet the deductible once; and one journey travels over a real JetStream
through the service's own subscriptions.

Every other use case (pricing under each plan, redeliveries, cancellations and reissues,
corrections, who sees and pays what, the price list, the filters) is a unit test over the
in-memory ports: ``tests/unit/test_billing_use_cases.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NATS

from his.billing import handlers
from his.billing.app import build
from his.billing.app import http as billing_http
from his.billing.testmode import TestModeProvider
from his.clients import replica
from his.events.admissions import BedChargePosted, PatientAdmitted, PatientDischarged
from his.events.laboratory import SEAL_SETTING, LabCharge, LabOrderResulted, ResultFlag
from his.events.patients import CoverageChanged, PatientRegistered
from his.events.scheduling import AppointmentCompleted
from his.kernel import migrations, streams
from his.kernel.clock import FakeClock
from his.kernel.consumer import ConsumerLoop
from his.kernel.db import Database, UnitOfWork
from his.kernel.events import Envelope, Event
from tests.support.api import bearer, serve
from tests.support.calendar import HARD_DATES
from tests.support.sealing import KEY, sealed_result
from tests.support.waiting import wait_for

D = Decimal
TABLES = (
    "idempotency_key, provider_event, provider_delivery, test_provider_session, payment, payment_intent, claim, "
    "invoice_line, accumulator, voided_source, charge, invoice, encounter, coverage, known_patient, ward_tariff, "
    "outbox, inbox"
)
SEED_VERSION = "00000000-0000-4000-8000-00000000b111"
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
    #: The embedded TEST payment provider, delivering its confirmations to the webhook route.
    provider: TestModeProvider | None = None

    async def feed(self, ev: Ev, handler: Callable[[UnitOfWork, Envelope, Ev], Awaitable[None]]) -> None:
        env = Envelope.wrap(ev, aggregate_id=uuid.uuid4())
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
    return sealed_result(
        order_id=order or uuid.uuid4(),
        patient_id=pid,
        ordered_by=uuid.uuid4(),
        priority="routine",
        resulted_at=when,
        results=[ResultFlag(code=c, flag="N") for c, _ in tests],
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


async def test_a_journey_over_jetstream_through_the_service_subscriptions(
    world: World, nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SEAL_SETTING, KEY)  # the lab charges travel sealed
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
