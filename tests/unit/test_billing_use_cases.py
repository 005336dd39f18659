"""Billing's use cases over the in-memory ports (``his.testing.billing``): the service's own routes
mounted in-process, real signed tokens, the fake payment provider's signed confirmations, events
handed to the handlers in a unit of work as the consumer does, on new year's day and the day the
clocks go back (ADR 0022). What needs the real servers (concurrent payments under one key and
concurrent confirmations, the deductible of concurrent invoices, events through NATS, the TEST
provider's checkout on its tables) stays in ``tests/integration/test_billing.py`` and
``tests/integration/test_online_payments.py``; the fakes pass the same contract as the database
(``tests/integration/test_billing_contract.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast

import httpx
import pytest

from his.billing import handlers
from his.billing.app import http_over
from his.billing.domain import SourceKind
from his.billing.payments import SIGNATURE_HEADER, confirmation_body, sign
from his.billing.ports import BillingWork
from his.billing.testmode import FakePaymentProvider
from his.events.admissions import BedChargePosted, PatientAdmitted, PatientDischarged, WardUpdated
from his.events.audit import BillingRecordAccessed
from his.events.billing import PaymentReceived
from his.events.inventory import StockConsumed
from his.events.laboratory import (
    LabCharge,
    LabOrderCancelled,
    LabOrderResulted,
    LabOrderResultedV2,
    ResultFlag,
    opening,
)
from his.events.patients import CoverageChanged
from his.events.scheduling import AppointmentCancelled, AppointmentCompleted
from his.kernel.clock import FakeClock
from his.kernel.consumer import PermanentError
from his.kernel.events import Envelope, Event
from his.kernel.sealing import UnsealableError
from his.testing.billing import FakeBilling
from tests.support.api import bearer, serve
from tests.support.calendar import HARD_DATES, HardDate
from tests.support.sealing import SEAL, sealed_result

D = Decimal
Ev = TypeVar("Ev", bound=Event)
Handler = Callable[[BillingWork, Envelope, Event], Awaitable[None]]
DAYS = [HARD_DATES[0], HARD_DATES[4]]


@dataclass
class World:
    client: httpx.AsyncClient
    fake: FakeBilling
    clock: FakeClock
    hard: HardDate
    provider: FakePaymentProvider
    billing: dict[str, str] = field(default_factory=lambda: bearer(uuid.uuid4(), "BILLING"))
    sent: list[tuple[Envelope, Event, Handler]] = field(default_factory=list)

    def at(self, days: int, hour: int = 9) -> datetime:
        """A moment ``days`` before the hard date (services billed this year, or the last)."""
        return self.hard.at(hour, days=-days)

    def night(self, days: int) -> date:
        """The date ``days`` before the hard date."""
        return self.hard.day - timedelta(days=days)

    def now(self) -> float:
        """The service clock's moment as the provider signs and billing checks its signatures."""
        return self.clock().timestamp()

    async def feed(self, ev: Ev, handler: Callable[[BillingWork, Envelope, Ev], Awaitable[None]]) -> None:
        env = Envelope.wrap(ev, aggregate_id=uuid.uuid4())
        async with self.fake.uow() as u:
            await handler(u, env, ev)
        self.sent.append((env, ev, cast(Handler, handler)))  # called again with this same event

    async def redeliver_all(self) -> None:
        """Every event again, as a consumer whose ack was lost would apply it (the inbox aside)."""
        for env, ev, handler in list(self.sent):
            async with self.fake.uow() as u:
                await handler(u, env, ev)

    async def registered(self, account: uuid.UUID | None = None) -> uuid.UUID:
        """A patient the replica knows (patients' registration), with no coverage yet."""
        pid = uuid.uuid4()
        async with self.fake.uow() as u:
            await u.patients.remember(pid, account)
        return pid

    async def patient(self, payer: str | None, account: uuid.UUID | None = None) -> uuid.UUID:
        pid = await self.registered(account)
        ev = CoverageChanged(patient_id=pid, payer=payer, effective_from=date(2020, 1, 1))
        await self.feed(ev, handlers.coverage_changed)
        return pid

    async def invoices(self, pid: uuid.UUID, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
        r = await self.client.get("/invoices", params={"patient_id": str(pid)}, headers=headers or self.billing)
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    async def claims(self) -> list[dict[str, Any]]:
        r = await self.client.get("/claims", headers=self.billing)
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    def state(self) -> list[tuple[Any, ...]]:
        """The invoices' states and shares, and how many charges and claims there are."""
        s = self.fake.state
        return [
            (i.id, i.status, i.total, i.insurer_share, i.patient_share, len(s.charges), len(s.claims))
            for i in sorted(s.invoices.values(), key=lambda i: i.id)
        ]

    def payments(self) -> list[tuple[str, Decimal, str]]:
        """Every payment and refund recorded, in the order the clock made them."""
        found = sorted(self.fake.state.payments.values(), key=lambda p: (p.created_at, p.id))
        return [(p.kind.value, p.amount, p.method.value) for p in found]


@pytest.fixture(params=DAYS, ids=str)
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    hard: HardDate = request.param
    clock = hard.clock(12, 0)
    fake = FakeBilling(clock)
    provider = FakePaymentProvider()

    def now() -> float:
        return clock().timestamp()

    routes = http_over(fake, provider, clock=now, timezone=hard.zone)
    async with serve(routes, base_url="http://billing") as client:
        yield World(client, fake, clock, hard, provider)


def completed(
    pid: uuid.UUID, when: datetime, appt: uuid.UUID | None = None, service: str = "consultation"
) -> AppointmentCompleted:
    return AppointmentCompleted(
        appointment_id=appt or uuid.uuid4(),
        patient_id=pid,
        practitioner_id=uuid.uuid4(),
        service=service,
        start=when,
        end=when + timedelta(minutes=20),
    )


#: Billing's consumer of results: their charges opened from the sealed box.
LAB_ORDER_RESULTED = opening(SEAL, handlers.lab_order_resulted)


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


def admitted(world: World, pid: uuid.UUID, adm: uuid.UUID, ward: uuid.UUID) -> PatientAdmitted:
    return PatientAdmitted(
        admission_id=adm,
        patient_id=pid,
        practitioner_id=uuid.uuid4(),
        ward_id=ward,
        bed_id=uuid.uuid4(),
        admitted_at=world.at(10, 10),
    )


def night(world: World, pid: uuid.UUID, adm: uuid.UUID, ward: uuid.UUID, days: int, **kw: Any) -> BedChargePosted:
    return BedChargePosted(
        charge_id=uuid.uuid4(),
        admission_id=adm,
        patient_id=pid,
        ward_id=ward,
        ward_type=kw.get("ward_type", "general"),
        night=world.night(days),
        amount=D(kw.get("amount", "1500.00")),
        currency=kw.get("currency", "TRY"),
    )


def discharged(world: World, pid: uuid.UUID, adm: uuid.UUID, ward: uuid.UUID, days: int) -> PatientDischarged:
    """Discharged ``days`` before the hard date, after the nights from the admission (10 days before)."""
    return PatientDischarged(
        admission_id=adm,
        patient_id=pid,
        ward_id=ward,
        bed_id=uuid.uuid4(),
        admitted_at=world.at(10, 10),
        discharged_at=world.at(days, 10),
        nights=10 - days,
    )


async def stay(world: World, pid: uuid.UUID, *, admission: uuid.UUID | None = None) -> uuid.UUID:
    """Admitted ten days before the hard date, three nights at 1,500.00, a lab order of two tests
    and three syringes on the second day, discharged on the fourth."""
    adm = admission or uuid.uuid4()
    ward = uuid.uuid4()
    await world.feed(admitted(world, pid, adm, ward), handlers.admitted)
    for n in (10, 9, 8):
        await world.feed(night(world, pid, adm, ward, n), handlers.bed_charge_posted)
    await world.feed(lab(pid, world.at(9, 9), ("CBC", "250.00"), ("CRP", "180.50")), LAB_ORDER_RESULTED)
    await world.feed(
        StockConsumed(
            consumption_id=uuid.uuid4(),
            item_code="SYRINGE-5ML",
            location="WARD-A",
            quantity=D(3),
            reason="patient",
            patient_id=pid,
            chargeable=True,
            consumed_at=world.at(9, 10),
        ),
        handlers.stock_consumed,
    )
    await world.feed(discharged(world, pid, adm, ward, 7), handlers.discharged)
    return adm


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


#: Three nights, two tests and 3 × 12.75 of syringes: 4,968.75 in all (see test_billing_domain.py).
JOURNEYS = [
    ("SGK", "SGK", "3975.00", "993.75"),
    ("ALLIANZ", "ALLIANZ", "4968.75", "0.00"),
    (None, "SELF", "0.00", "4968.75"),
    ("NOVA", "NOVA", "3447.45", "1521.30"),
]


@pytest.mark.parametrize(("payer", "plan", "insurer", "patient"), JOURNEYS)
async def test_one_admission_one_invoice_priced_under_the_plan(
    world: World, payer: str | None, plan: str, insurer: str, patient: str
) -> None:
    pid = await world.patient(payer)
    adm = await stay(world, pid)
    [inv] = await world.invoices(pid)
    assert (inv["kind"], inv["payer"], inv["currency"], inv["service_date"]) == (
        "admission",
        plan,
        "TRY",
        world.night(10).isoformat(),
    )
    assert inv["encounter"]["kind"] == "admission" and inv["encounter"]["source_id"] == str(adm)
    assert (inv["total"], inv["insurer_share"], inv["patient_share"]) == ("4968.75", insurer, patient)
    assert inv["status"] == ("paid" if patient == "0.00" else "open")
    assert sorted((x["code"], x["total"]) for x in inv["lines"]) == sorted(
        [("bed.general", "1500.00")] * 3 + [("lab.CBC", "250.00"), ("lab.CRP", "180.50"), ("item.SYRINGE-5ML", "38.25")]
    )
    for x in inv["lines"]:
        assert D(x["insurer_share"]) + D(x["patient_share"]) == D(x["total"])
    claims = await world.claims()
    assert [(c["invoice_id"], c["amount"], c["status"]) for c in claims] == (
        [(inv["id"], insurer, "draft")] if insurer != "0.00" else []
    )
    before = world.state()
    await world.redeliver_all()  # redelivered events change nothing
    assert world.state() == before


async def test_nova_second_stay_of_the_year_has_the_deductible_met(world: World) -> None:
    pid = await world.patient("NOVA")
    await stay(world, pid)
    await world.feed(completed(pid, world.at(2)), handlers.appointment_completed)  # after the stay, the same year
    visit = next(i for i in await world.invoices(pid) if i["kind"] == "visit")
    # 750.00: no deductible left, 100.00 co-pay, 10 % of 650.00.
    assert (visit["total"], visit["insurer_share"], visit["patient_share"]) == ("750.00", "585.00", "165.00")


async def test_a_charge_after_the_invoice_was_issued_goes_on_a_supplementary_invoice(world: World) -> None:
    pid = await world.patient("SGK")
    adm = await stay(world, pid)
    await world.feed(lab(pid, world.at(8, 8), ("K", "90.00")), LAB_ORDER_RESULTED)  # late, within the stay
    invoices = await world.invoices(pid)
    assert sorted(i["kind"] for i in invoices) == ["admission", "supplementary"]
    sup = next(i for i in invoices if i["kind"] == "supplementary")
    assert sup["encounter"]["source_id"] == str(adm)
    assert (sup["total"], sup["insurer_share"], sup["patient_share"], sup["status"]) == (
        "90.00",
        "72.00",
        "18.00",
        "open",
    )


async def test_a_discharge_applied_before_its_last_bed_night_waits_for_it(world: World) -> None:
    pid = await world.patient("SGK")
    adm, ward = uuid.uuid4(), uuid.uuid4()
    await world.feed(admitted(world, pid, adm, ward), handlers.admitted)
    last = night(world, pid, adm, ward, 10, ward_type="icu", amount="4000.00")
    await world.feed(discharged(world, pid, adm, ward, 9), handlers.discharged)  # one night
    assert [i["status"] for i in await world.invoices(pid)] == []
    await world.feed(last, handlers.bed_charge_posted)
    [inv] = await world.invoices(pid)
    assert (inv["kind"], inv["status"], inv["total"], inv["insurer_share"]) == (
        "admission",
        "open",
        "4000.00",
        "3200.00",
    )


async def test_a_cancelled_appointments_charge_is_void(world: World) -> None:
    pid = await world.patient("SGK")
    appt = uuid.uuid4()
    await world.feed(completed(pid, world.at(5), appt), handlers.appointment_completed)
    [inv] = await world.invoices(pid)
    assert (inv["kind"], inv["total"], inv["insurer_share"], inv["patient_share"]) == (
        "visit",
        "750.00",
        "600.00",
        "150.00",
    )
    cancelled = AppointmentCancelled(**completed(pid, world.at(5), appt).model_dump())
    await world.feed(cancelled, handlers.appointment_cancelled)
    [inv] = await world.invoices(pid)
    assert inv["status"] == "void"
    charges = (await world.client.get("/charges", params={"patient_id": str(pid)}, headers=world.billing)).json()
    assert [c["status"] for c in charges["items"]] == ["void"]
    [claim] = await world.claims()
    assert claim["status"] == "void"
    # A cancellation seen first voids the charge that arrives after it.
    other = uuid.uuid4()
    await world.feed(
        AppointmentCancelled(**completed(pid, world.at(4), other).model_dump()), handlers.appointment_cancelled
    )
    await world.feed(completed(pid, world.at(4), other), handlers.appointment_completed)
    charges = (await world.client.get("/charges", params={"patient_id": str(pid)}, headers=world.billing)).json()
    assert [c["status"] for c in charges["items"]] == ["void", "void"]
    assert len(await world.invoices(pid)) == 1


async def test_a_cancelled_lab_order_on_an_issued_invoice_is_reissued_without_it(world: World) -> None:
    pid = await world.patient("NOVA")
    adm = uuid.uuid4()
    await stay(world, pid, admission=adm)
    order = uuid.uuid4()
    await world.feed(lab(pid, world.at(8, 8), ("K", "90.00"), order=order), LAB_ORDER_RESULTED)
    first = next(i for i in await world.invoices(pid) if i["kind"] == "supplementary")
    await world.feed(
        LabOrderCancelled(order_id=order, patient_id=pid, cancelled_at=world.at(7)), handlers.lab_order_cancelled
    )
    invoices = {i["id"]: i for i in await world.invoices(pid)}
    assert invoices[first["id"]]["status"] == "void"
    # No charge remained on it, so nothing was reissued; the stay's invoice is untouched.
    assert sorted(i["status"] for i in invoices.values()) == ["open", "void"]
    # Cancelling an order inside a stay's issued invoice voids it and reissues the rest.
    stay_invoice = next(i for i in invoices.values() if i["kind"] == "admission")
    lab_order = next(
        c.source_id
        for c in world.fake.state.charges.values()
        if c.source_kind is SourceKind.LAB_ORDER and c.invoice_id == uuid.UUID(stay_invoice["id"])
    )
    await world.feed(
        LabOrderCancelled(order_id=lab_order, patient_id=pid, cancelled_at=world.at(7)), handlers.lab_order_cancelled
    )
    after = {i["id"]: i for i in await world.invoices(pid)}
    assert after[stay_invoice["id"]]["status"] == "void"
    [new] = [i for i in after.values() if i["replaces"] == stay_invoice["id"]]
    assert new["kind"] == "admission" and new["status"] == "open"
    assert sorted(x["code"] for x in new["lines"]) == ["bed.general"] * 3 + ["item.SYRINGE-5ML"]
    # NOVA again from an empty year: 4,538.25 = 4,500 + 38.25 excluded; 1,000 deductible, 100 co-pay.
    assert (new["total"], new["insurer_share"], new["patient_share"]) == ("4538.25", "3060.00", "1478.25")


async def test_a_charge_applied_before_its_admission_was_known_moves_onto_it(world: World) -> None:
    pid = await world.patient("SGK")
    early = lab(pid, world.at(9, 9), ("CBC", "250.00"))
    await world.feed(early, LAB_ORDER_RESULTED)  # its stream ran ahead of admissions'
    [visit] = await world.invoices(pid)
    assert (visit["kind"], visit["status"]) == ("visit", "open")
    await stay(world, pid)
    invoices = {i["kind"]: i for i in await world.invoices(pid)}
    assert invoices["visit"]["status"] == "void"
    stay_invoice = invoices["admission"]
    assert sorted(x["code"] for x in stay_invoice["lines"]).count("lab.CBC") == 2  # this order's and the stay's
    assert (stay_invoice["total"], stay_invoice["insurer_share"]) == ("5218.75", "4175.00")
    claims = {c["invoice_id"]: c["status"] for c in await world.claims()}
    assert claims == {visit["id"]: "void", stay_invoice["id"]: "draft"}
    before = world.state()
    await world.redeliver_all()
    assert world.state() == before


async def test_an_unknown_payer_is_never_billed_as_self_pay_and_the_corrected_one_is(world: World) -> None:
    """A payer billing has no plan for (registered before patients checked payers) is recorded, and
    the charge that needs it dead-letters instead of billing the patient as self-pay; once the
    coverage is corrected the replayed charge is priced under the corrected plan, and coverage
    follows the service date."""
    pid = await world.patient("ACME")
    appointment = completed(pid, world.at(10))
    with pytest.raises(PermanentError, match=r"payer 'ACME' has no plan in billing .*PATCH /api/patients/"):
        await world.feed(appointment, handlers.appointment_completed)
    assert await world.invoices(pid) == []
    assert len(world.fake.state.charges) == 0
    await world.feed(
        CoverageChanged(patient_id=pid, payer="SGK", effective_from=date(2020, 1, 1)), handlers.coverage_changed
    )  # the correction
    await world.feed(appointment, handlers.appointment_completed)  # the dead letter, replayed
    await world.feed(
        CoverageChanged(patient_id=pid, payer="ALLIANZ", effective_from=world.night(5)), handlers.coverage_changed
    )
    await world.feed(completed(pid, world.at(2)), handlers.appointment_completed)
    got = sorted((i["service_date"], i["payer"], i["patient_share"]) for i in await world.invoices(pid))
    assert got == [(world.night(10).isoformat(), "SGK", "150.00"), (world.night(2).isoformat(), "ALLIANZ", "0.00")]


async def test_a_stale_coverage_change_replayed_after_its_correction_changes_nothing(world: World) -> None:
    """A change to a payer billing has no plan for, arriving after an invoice it would reprice,
    dead-letters; staff correct the coverage; replaying the stale change then records it as the
    older of the two changes that day, so the correction stays in force and nothing is repriced."""
    pid = await world.patient("SGK")
    await world.feed(completed(pid, world.at(10)), handlers.appointment_completed)
    stale = CoverageChanged(patient_id=pid, payer="ACME", effective_from=world.night(20))
    stale_env = Envelope.wrap(stale, aggregate_id=pid)
    with pytest.raises(PermanentError, match="'ACME' has no plan"):
        async with world.fake.uow() as u:
            await handlers.coverage_changed(u, stale_env, stale)
    await world.feed(
        CoverageChanged(patient_id=pid, payer="ALLIANZ", effective_from=world.night(20)), handlers.coverage_changed
    )  # the correction, made after the stale change
    [inv] = [i for i in await world.invoices(pid) if i["status"] != "void"]
    assert (inv["payer"], inv["patient_share"]) == ("ALLIANZ", "0.00")
    before = world.state()
    async with world.fake.uow() as u:  # the dead letter, replayed
        await handlers.coverage_changed(u, stale_env, stale)
    assert world.state() == before


async def test_coverage_learnt_after_an_invoice_reissues_it_under_the_plan(world: World) -> None:
    """Coverage travels on patients' stream, charges on others: when billing learns a patient's
    plan only after their invoice was issued (as self-pay), that invoice is voided and reissued
    under the plan, with what was already paid carried over; a later redelivery changes nothing."""
    pid = await world.registered()
    await world.feed(completed(pid, world.at(10)), handlers.appointment_completed)
    [first] = await world.invoices(pid)
    assert (first["payer"], first["insurer_share"], first["patient_share"]) == ("SELF", "0.00", "750.00")
    r = await world.client.post(
        f"/invoices/{first['id']}/payments",
        json={"amount": "100.00", "currency": "TRY", "method": "cash"},
        headers=key_headers(world.billing, "cov-1"),
    )
    assert r.status_code == 201, r.text
    await world.feed(
        CoverageChanged(patient_id=pid, payer="SGK", effective_from=world.night(20)), handlers.coverage_changed
    )
    got = {i["id"]: i for i in await world.invoices(pid)}
    assert got[first["id"]]["status"] == "void"
    [new] = [i for i in got.values() if i["status"] != "void"]
    assert (new["payer"], new["insurer_share"], new["patient_share"], new["status"], new["replaces"]) == (
        "SGK",
        "600.00",
        "150.00",
        "partially_paid",
        first["id"],
    )
    before = world.state()
    await world.redeliver_all()
    assert world.state() == before


async def test_bed_nights_in_an_unknown_currency_wait_for_the_wards_correction(world: World) -> None:
    """Billing never invoices what it cannot bill, and bills it once the data is corrected: bed
    nights of a ward entered in a currency billing does not invoice in dead-letter (rather than
    open or join an invoice in that currency) and, once admissions has corrected the ward, their
    replay bills them at the corrected tariff and the admission's invoice is issued."""
    pid = await world.patient("SGK")
    adm, ward = uuid.uuid4(), uuid.uuid4()
    await world.feed(admitted(world, pid, adm, ward), handlers.admitted)
    await world.feed(lab(pid, world.at(9, 9), ("CBC", "250.00")), LAB_ORDER_RESULTED)
    nights = [night(world, pid, adm, ward, n, currency="TRL") for n in (10, 9)]
    posted = [Envelope.wrap(n, aggregate_id=adm) for n in nights]
    for env, ev in zip(posted, nights, strict=True):
        with pytest.raises(PermanentError, match=r"in TRL, which billing does not invoice in \(currencies: TRY\)"):
            async with world.fake.uow() as u:
                await handlers.bed_charge_posted(u, env, ev)
    await world.feed(discharged(world, pid, adm, ward, 8), handlers.discharged)  # two nights
    [draft] = await world.invoices(pid)
    assert (draft["status"], [x["code"] for x in draft["lines"]]) == ("draft", ["lab.CBC"])  # waits for its nights

    # Admissions corrects the ward (its tariff now in TRY); the dead letters are replayed.
    await world.feed(
        WardUpdated(
            ward_id=ward,
            fields=["currency", "daily_rate"],
            ward_type="general",
            daily_rate=D("1600.00"),
            currency="TRY",
        ),
        handlers.ward_updated,
    )
    for env, ev in zip(posted, nights, strict=True):
        async with world.fake.uow() as u:
            await handlers.bed_charge_posted(u, env, ev)
    [inv] = await world.invoices(pid)
    assert (inv["status"], inv["currency"], inv["payer"]) == ("open", "TRY", "SGK")
    assert sorted((x["code"], x["total"]) for x in inv["lines"]) == [
        ("bed.general", "1600.00"),
        ("bed.general", "1600.00"),
        ("lab.CBC", "250.00"),
    ]
    assert (inv["total"], inv["insurer_share"], inv["patient_share"]) == ("3450.00", "2760.00", "690.00")
    before = world.state()
    for env, ev in zip(posted, nights, strict=True):  # replayed once more: nothing changes
        async with world.fake.uow() as u:
            await handlers.bed_charge_posted(u, env, ev)
    assert world.state() == before


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
    assert len(world.fake.events(BillingRecordAccessed)) >= 4
    assert world.payments() == []


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
    accessed = [e for e in world.fake.events(BillingRecordAccessed) if isinstance(e, BillingRecordAccessed)]
    denied = [x for x in accessed if x.outcome == "denied"]
    assert {(str(x.actor_id), str(x.patient_id)) for x in denied} == {(str(doctor), pid), (str(stranger), pid)}
    assert len(denied) == 8


@pytest.mark.parametrize("world", HARD_DATES, indirect=True, ids=str)
async def test_price_list_versions_and_payers(world: World) -> None:
    """A new price list from 30 days after a hard date, sent half an hour after the hospital's
    midnight (the UTC date is still the day before): today is the hospital's day, not UTC's."""
    hard = world.hard
    world.clock.now = hard.at(0, 30)
    anyone = bearer(uuid.uuid4(), "NURSE")
    r = await world.client.get("/price-list", params={"date": world.night(10).isoformat()}, headers=anyone)
    lines = {x["code"]: x for x in r.json()["lines"]}
    assert lines["consultation.consultation"] == {
        "code": "consultation.consultation",
        "category": "consultation",
        "amount": "750.00",
        "currency": "TRY",
    }
    assert {"item.SYRINGE-5ML", "item.IV-SET", "item.GAUZE"} <= set(lines)
    assert (await world.client.get("/price-list", headers=anyone)).json()["date"] == hard.day.isoformat()
    start = hard.day + timedelta(days=30)
    new_lines = [
        {**x, "amount": "800.00" if x["code"] == "consultation.consultation" else x["amount"]} for x in lines.values()
    ]
    new = {"effective_from": start.isoformat(), "lines": new_lines}
    admin = bearer(uuid.uuid4(), "ADMIN")
    assert (await world.client.post("/price-list", json=new, headers=anyone)).status_code == 403
    assert (await world.client.post("/price-list", json=new, headers=admin)).status_code == 201
    assert (await world.client.post("/price-list", json=new, headers=admin)).status_code == 409
    past = {**new, "effective_from": (hard.day - timedelta(days=1)).isoformat()}  # UTC's today, the hospital's past
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
    await world.feed(completed(pid, hard.at(9, days=30)), handlers.appointment_completed)
    assert (await world.invoices(pid))[0]["total"] == "800.00"
    payers = {p["code"]: p for p in (await world.client.get("/payers", headers=anyone)).json()["items"]}
    assert set(payers) == {"SGK", "ALLIANZ", "SELF", "NOVA"}
    assert payers["NOVA"]["deductible"] == "1000.00" and payers["NOVA"]["excluded_categories"] == ["supplies"]
    assert payers["SGK"]["coverage"]["bed"] == "80.00"
    assert (await world.client.get("/payers")).status_code == 401


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
    assert world.payments() == []
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


# --- online payments: only the provider's signed confirmation records the money ------------------


async def my_invoice(world: World, payer: str | None = "SGK") -> tuple[str, dict[str, str]]:
    """An issued invoice of a patient whose account is ``me`` (SGK: 150.00 is theirs to pay)."""
    me = uuid.uuid4()
    inv = await paid_invoice_setup(world, payer, me)
    return inv, bearer(me, "PATIENT")


async def invoice(world: World, inv: str) -> dict[str, Any]:
    r = await world.client.get(f"/invoices/{inv}", headers=world.billing)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def open_online(world: World, inv: str, me: dict[str, str], amount: str = "150.00") -> dict[str, Any]:
    r = await world.client.post(
        f"/invoices/{inv}/online-payments",
        json={"amount": amount, "currency": "TRY"},
        headers=key_headers(me, uuid.uuid4().hex),
    )
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    return doc


def reference(intent: dict[str, Any]) -> str:
    return str(intent["checkout_url"]).rsplit("/", 1)[1]


def signed(
    world: World,
    ref: str,
    amount: str = "150.00",
    *,
    secret: bytes | None = None,
    ago: float = 0,
    event: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A confirmation as the provider signs it, ``ago`` seconds before the service clock's now."""
    body = confirmation_body(event or f"evt_{uuid.uuid4().hex}", ref, D(amount), "TRY", test_mode=True)
    return body, {SIGNATURE_HEADER: sign(secret or world.provider.secret, body, int(world.now() - ago))}


async def webhook(world: World, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await world.client.post(f"/payments/webhooks/{world.provider.name}", content=body, headers=headers)


async def test_a_patient_cannot_mark_their_own_invoice_paid(world: World) -> None:
    inv, me = await my_invoice(world)
    for method in ("cash", "card", "bank_transfer", "online"):
        body = {"amount": "150.00", "currency": "TRY", "method": method}
        r = await world.client.post(f"/invoices/{inv}/payments", json=body, headers=key_headers(me, method))
        assert r.status_code == 403, r.text
        assert r.headers["content-type"] == "application/problem+json"
    opened = await open_online(world, inv, me)  # opening a payment records no money either
    assert opened["status"] == "pending" and opened["test_mode"] is True
    assert (await invoice(world, inv))["status"] == "open"
    assert world.payments() == []


async def test_billing_records_desk_payments_and_online_money_only_comes_from_the_provider(world: World) -> None:
    inv, _ = await my_invoice(world)
    body = {"amount": "50.00", "currency": "TRY", "method": "online"}
    r = await world.client.post(f"/invoices/{inv}/payments", json=body, headers=key_headers(world.billing, "o"))
    assert r.status_code == 422 and "provider" in r.json()["detail"]
    for method in ("cash", "card", "bank_transfer"):
        world.clock.advance(timedelta(seconds=1))  # payments are listed in the order the clock made them
        r = await world.client.post(
            f"/invoices/{inv}/payments", json={**body, "method": method}, headers=key_headers(world.billing, method)
        )
        assert r.status_code == 201, r.text
    assert (await invoice(world, inv))["status"] == "paid"
    assert [m for _, _, m in world.payments()] == ["cash", "card", "bank_transfer"]
    doctor = bearer(uuid.uuid4(), "DOCTOR")
    r = await world.client.post(f"/invoices/{inv}/payments", json=body, headers=key_headers(doctor, "d"))
    assert r.status_code == 403  # a role that never records payments: 403 whatever the id (ADR 0021)


async def test_a_patient_pays_online_and_the_providers_confirmation_marks_it_paid(world: World) -> None:
    """Opening is idempotent under the key; nothing is paid until the provider confirms; its
    confirmation records the payment once and publishes it. (The TEST provider's own checkout,
    its test cards and declines, runs on its tables: tests/integration/test_online_payments.py.)"""
    inv, me = await my_invoice(world)
    key = key_headers(me, "online-1")
    r = await world.client.post(
        f"/invoices/{inv}/online-payments", json={"amount": "150.00", "currency": "TRY"}, headers=key
    )
    assert r.status_code == 201, r.text
    intent = r.json()
    assert (intent["status"], intent["provider"], intent["test_mode"]) == ("pending", world.provider.name, True)
    again = await world.client.post(
        f"/invoices/{inv}/online-payments", json={"amount": "150.00", "currency": "TRY"}, headers=key
    )
    assert again.content == r.content and again.headers["idempotent-replayed"] == "true"
    other = await world.client.post(
        f"/invoices/{inv}/online-payments", json={"amount": "10.00", "currency": "TRY"}, headers=key
    )
    assert other.status_code == 409
    assert (
        await world.client.post(
            f"/invoices/{inv}/online-payments",
            json={"amount": "150.01", "currency": "TRY"},
            headers=key_headers(me, "too-much"),
        )
    ).status_code == 422
    assert (
        await world.client.post(
            f"/invoices/{inv}/online-payments",
            json={"amount": "1.00", "currency": "TRY"},
            headers=key_headers(world.billing, "clerk"),
        )
    ).status_code == 403
    assert (await invoice(world, inv))["status"] == "open" and world.payments() == []

    body, headers = world.provider.confirmation(reference(intent), at=world.now())  # the patient paid
    paid = await webhook(world, body, headers)
    assert paid.status_code == 200 and paid.json()["status"] == "applied", paid.text
    after = await invoice(world, inv)
    assert (after["status"], after["paid"], after["outstanding"]) == ("paid", "150.00", "0.00")
    assert world.payments() == [("payment", D("150.00"), "online")]
    assert (await webhook(world, body, headers)).status_code == 409  # the same delivery again
    listed = (await world.client.get(f"/invoices/{inv}/online-payments", headers=me)).json()["items"]
    assert [(x["id"], x["status"]) for x in listed] == [(intent["id"], "succeeded")]
    received = [e for e in world.fake.events(PaymentReceived) if isinstance(e, PaymentReceived)]
    assert [(str(x.amount), x.method, x.invoice_status) for x in received] == [("150.00", "online", "paid")]


async def test_forged_stale_altered_and_replayed_confirmations_are_refused(world: World) -> None:
    inv, me = await my_invoice(world)
    ref = reference(await open_online(world, inv, me))
    forged = signed(world, ref, secret=b"a guess at the secret")
    stale = signed(world, ref, ago=600)
    body, headers = signed(world, ref, event="evt_once")
    altered = body.replace(b'"150.00"', b'"1.00"')
    cases = [
        (forged, 401),
        (stale, 401),
        ((altered, headers), 401),
        ((body, {}), 401),
        ((body, me), 401),
        (signed(world, ref, "100.00"), 422),  # signed, but not what the payment was opened for
        (signed(world, "fake_nobody"), 404),
    ]
    for (b, h), status in cases:
        r = await webhook(world, b, h)
        assert r.status_code == status, (status, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    assert world.payments() == [] and (await invoice(world, inv))["status"] == "open"

    ok = await webhook(world, body, headers)
    assert ok.status_code == 200 and ok.json()["status"] == "applied"
    replay = await webhook(world, body, headers)  # the very same signed delivery
    assert replay.status_code == 409, replay.text
    retry = await webhook(world, *signed(world, ref, event="evt_once", ago=30))  # a retry, signed afresh
    assert retry.status_code == 200 and retry.json()["status"] == "already_applied"
    other_event = await webhook(world, *signed(world, ref))  # another event for the same payment
    assert other_event.status_code == 200 and other_event.json()["status"] == "already_applied"
    assert world.payments() == [("payment", D("150.00"), "online")]
    assert (await invoice(world, inv))["paid"] == "150.00"


async def test_a_results_charges_are_billed_from_its_sealed_box_and_from_a_v2_leftover(world: World) -> None:
    """The charges travel sealed (v3): billing opens the box and bills each test; a v2 event
    left in the stream, its charges in clear, is billed the same; a box copied from another
    order's event does not open and nothing is billed for it."""
    pid = await world.patient("SGK")
    await world.feed(lab(pid, world.at(9, 9), ("CBC", "250.00")), LAB_ORDER_RESULTED)
    leftover = LabOrderResultedV2(**lab(pid, world.at(9, 8), ("K", "90.00")).opened(SEAL).model_dump())
    await world.feed(leftover.upcast(), LAB_ORDER_RESULTED)
    assert await lab_lines(world, pid) == ["lab.CBC", "lab.K"]
    other = lab(pid, world.at(9, 7), ("HIV", "300.00"))
    copied = lab(pid, world.at(9, 7), ("K", "90.00")).model_copy(update={"sealed": other.sealed})
    with pytest.raises(UnsealableError, match="does not open"):
        await world.feed(copied, LAB_ORDER_RESULTED)
    assert await lab_lines(world, pid) == ["lab.CBC", "lab.K"]


async def lab_lines(world: World, pid: uuid.UUID) -> list[str]:
    return sorted(x["code"] for i in await world.invoices(pid) for x in i["lines"])
