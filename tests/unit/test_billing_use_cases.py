"""Billing's use cases over the in-memory ports (``his.testing.billing``): the service's own routes
mounted in-process, real signed tokens, events handed to the handlers in a unit of work as the
consumer does, on new year's day and the day the clocks go back (ADR 0022). What needs the real
servers (concurrent payments under one key, events through NATS) stays in
``tests/integration/test_billing.py``; the fakes pass the same contract as the database
(``tests/integration/test_billing_contract.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest

from his.billing import handlers
from his.billing.app import http_over
from his.billing.ports import BillingWork
from his.events.audit import BillingRecordAccessed
from his.events.patients import CoverageChanged
from his.events.scheduling import AppointmentCompleted
from his.kernel.clock import FakeClock
from his.kernel.events import Envelope, Event
from his.testing.billing import FakeBilling
from tests.support.api import bearer, serve
from tests.support.calendar import HARD_DATES, HardDate

Ev = TypeVar("Ev", bound=Event)
DAYS = [HARD_DATES[0], HARD_DATES[4]]


@dataclass
class World:
    client: httpx.AsyncClient
    fake: FakeBilling
    clock: FakeClock
    hard: HardDate
    billing: dict[str, str] = field(default_factory=lambda: bearer(uuid.uuid4(), "BILLING"))

    def at(self, days: int, hour: int = 9) -> datetime:
        """A moment ``days`` before the hard date (services billed this year, or the last)."""
        return self.hard.at(hour, days=-days)

    async def feed(self, ev: Ev, handler: Callable[[BillingWork, Envelope, Ev], Awaitable[None]]) -> None:
        env = Envelope.wrap(ev, aggregate_id=uuid.uuid4())
        async with self.fake.uow() as u:
            await handler(u, env, ev)

    async def patient(self, payer: str | None, account: uuid.UUID | None = None) -> uuid.UUID:
        pid = uuid.uuid4()
        async with self.fake.uow() as u:
            await u.patients.remember(pid, account)
        ev = CoverageChanged(patient_id=pid, payer=payer, effective_from=date(2020, 1, 1))
        await self.feed(ev, handlers.coverage_changed)
        return pid

    async def invoices(self, pid: uuid.UUID, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
        r = await self.client.get("/invoices", params={"patient_id": str(pid)}, headers=headers or self.billing)
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items


@pytest.fixture(params=DAYS, ids=str)
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    hard: HardDate = request.param
    clock = hard.clock(12, 0)
    fake = FakeBilling(clock)
    async with serve(http_over(fake), base_url="http://billing") as client:
        yield World(client, fake, clock, hard)


def completed(pid: uuid.UUID, when: datetime) -> AppointmentCompleted:
    return AppointmentCompleted(
        appointment_id=uuid.uuid4(),
        patient_id=pid,
        practitioner_id=uuid.uuid4(),
        service="consultation",
        start=when,
        end=when + timedelta(minutes=20),
    )


async def paid_invoice_setup(world: World, payer: str | None = None, account: uuid.UUID | None = None) -> str:
    pid = await world.patient(payer, account)
    await world.feed(completed(pid, world.at(5)), handlers.appointment_completed)
    [inv] = await world.invoices(pid)
    return str(inv["id"])


def key_headers(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


async def test_partial_then_full_payment_then_refund(world: World) -> None:
    inv = await paid_invoice_setup(world, "SGK")  # 150.00 due from the patient

    async def pay(amount: str, path: str = "payments", **kw: str) -> httpx.Response:
        body = {"amount": amount, "currency": kw.get("currency", "TRY"), "method": "cash"}
        world.clock.advance(timedelta(seconds=1))  # payments are listed in the order the clock made them
        return await world.client.post(
            f"/invoices/{inv}/{path}", json=body, headers=key_headers(world.billing, uuid.uuid4().hex)
        )

    assert (await pay("200.00")).status_code == 422  # more than is owed
    assert (await pay("0")).status_code == 422
    assert (await pay("-5")).status_code == 422
    assert (await pay("10.00", currency="EUR")).status_code == 422
    assert (await pay("1.005")).status_code == 422
    assert (await pay("abc")).status_code == 422
    r = await pay("100.00")
    assert (
        r.status_code == 201 and r.json()["invoice_status"] == "partially_paid" and r.json()["outstanding"] == "50.00"
    )
    assert (await world.client.get(f"/invoices/{inv}", headers=world.billing)).json()["status"] == "partially_paid"
    r = await pay("50.00")
    assert r.json()["invoice_status"] == "paid"
    assert (await pay("0.01")).status_code == 422
    assert (await pay("150.01", "refunds")).status_code == 422  # more than was paid
    r = await pay("30.00", "refunds")
    assert r.status_code == 201 and r.json()["invoice_status"] == "partially_paid" and r.json()["kind"] == "refund"
    listed = (await world.client.get(f"/invoices/{inv}/payments", headers=world.billing)).json()["items"]
    assert [(p["kind"], p["amount"]) for p in listed] == [
        ("payment", "100.00"),
        ("payment", "50.00"),
        ("refund", "30.00"),
    ]
    final = (await world.client.get(f"/invoices/{inv}", headers=world.billing)).json()
    assert (final["paid"], final["outstanding"], final["status"]) == ("120.00", "30.00", "partially_paid")


async def test_claim_states_and_invalid_transitions(world: World) -> None:
    await paid_invoice_setup(world, "ALLIANZ")
    [claim] = (await world.client.get("/claims", headers=world.billing)).json()["items"]
    cid = claim["id"]
    assert (claim["amount"], claim["status"], claim["payer"]) == ("750.00", "draft", "ALLIANZ")
    assert (await world.client.post(f"/claims/{cid}/accept", headers=world.billing)).status_code == 409
    for action, status in (("submit", "submitted"), ("accept", "accepted"), ("pay", "paid")):
        r = await world.client.post(f"/claims/{cid}/{action}", headers=world.billing)
        assert r.status_code == 200 and r.json()["status"] == status
    r = await world.client.post(f"/claims/{cid}/reject", headers=world.billing)
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    assert (await world.client.post(f"/claims/{cid}/approve", headers=world.billing)).status_code == 422
    assert (await world.client.post(f"/claims/{uuid.uuid4()}/submit", headers=world.billing)).status_code == 404
    assert (await world.client.get(f"/claims/{cid}", headers=bearer(uuid.uuid4(), "PATIENT"))).status_code == 403
    types = [e.type for e in world.fake.published]
    assert [t for t in types if ".claim." in t] == [
        "his.billing.claim.created.v1",
        "his.billing.claim.submitted.v1",
        "his.billing.claim.accepted.v1",
        "his.billing.claim.paid.v1",
    ]


async def test_listing_claims_audits_a_read_of_each_patient_listed(world: World) -> None:
    """A claim names its patient: listed or read one by one, each patient's record shows the read."""
    await paid_invoice_setup(world, "ALLIANZ")
    [claim] = (await world.client.get("/claims", headers=world.billing)).json()["items"]
    accessed = [e for e in world.fake.events(BillingRecordAccessed) if isinstance(e, BillingRecordAccessed)]
    reads = [x for x in accessed if x.resource == "claim"]
    assert [(str(x.patient_id), x.action) for x in reads] == [(claim["patient_id"], "read")], reads
