"""One contract for billing's ports, run against PostgreSQL (``his.billing.store``) and the
in-memory fakes (``his.testing.billing``) alike: what the use cases' unit tests assume of the
fake holds of the database.

Both sides start with what the migrations seed (the payers and the first price list) and nothing
else, and the database is left so. Every unit of work runs half an hour after midnight of a new
year's day in Berlin (the UTC date is still the old year's).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

import asyncpg
import pytest

from his.billing.domain import (
    Accumulator,
    Charge,
    ChargeStatus,
    ClaimStatus,
    DuplicateVersionError,
    EncounterKind,
    EncounterStatus,
    IntentStatus,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
    PaymentKind,
    PaymentMethod,
    PriceEntry,
    SourceKind,
    StoredResponse,
    WardTariff,
    price,
)
from his.billing.domain import Line as PriceLine
from his.billing.ports import BillingUnits, BillingWork
from his.billing.store import BillingStore
from his.events.billing import InvoiceIssued
from his.kernel import migrations
from his.kernel.clock import FakeClock
from his.kernel.db import Database
from his.testing.billing import FakeBilling, seeded_payers, seeded_prices
from tests.support.calendar import HARD_DATES

HARD = HARD_DATES[0]
NOW = HARD.at(0, 30)
D = Decimal
TABLES = (
    "idempotency_key, provider_event, provider_delivery, test_provider_session, payment, payment_intent, claim, "
    "invoice_line, accumulator, voided_source, charge, invoice, encounter, coverage, known_patient, ward_tariff, "
    "outbox, inbox"
)
SEED_VERSION = "00000000-0000-4000-8000-00000000b111"
STAFF = uuid.uuid4()


@dataclass
class Side:
    units: BillingUnits
    published: Callable[[], Awaitable[list[str]]]
    name: str


async def _empty(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"SET search_path TO billing; TRUNCATE {TABLES}")
        await conn.execute(f"DELETE FROM billing.price_line WHERE version_id <> '{SEED_VERSION}'")
        await conn.execute(f"DELETE FROM billing.price_list_version WHERE id <> '{SEED_VERSION}'")
    finally:
        await conn.close()


@pytest.fixture(params=["memory", "postgres"])
async def side(request: pytest.FixtureRequest, admin_dsn: str) -> AsyncIterator[Side]:
    clock = FakeClock(NOW)
    if request.param == "memory":
        fake = FakeBilling(clock)

        async def in_memory() -> list[str]:
            return [e.type for e in fake.published]

        yield Side(fake, in_memory, "memory")
        return
    dsn = await migrations.provision(admin_dsn, "billing", "pw-billing-contract")
    await migrations.upgrade(admin_dsn, "billing")
    await _empty(admin_dsn)
    db = Database(dsn, schema="billing", max_size=4, clock=clock)
    await db.open()

    async def in_outbox() -> list[str]:
        return [r[0] for r in await db.pool.fetch("SELECT subject FROM outbox ORDER BY id")]

    try:
        yield Side(BillingStore(db), in_outbox, "postgres")
    finally:
        await db.close()
        await _empty(admin_dsn)  # the next file's tests find the schema as a fresh one


def _charge(
    patient: uuid.UUID,
    encounter: uuid.UUID,
    *,
    source: uuid.UUID | None = None,
    kind: SourceKind = SourceKind.LAB_ORDER,
    key: str = "0",
    code: str = "lab.CBC",
    amount: str = "250.00",
    hours: float = 0,
) -> Charge:
    at = NOW + timedelta(hours=hours)
    return Charge(
        id=uuid.uuid4(),
        patient_id=patient,
        source_kind=kind,
        source_id=source or uuid.uuid4(),
        line_key=key,
        code=code,
        category="bed" if kind is SourceKind.BED_CHARGE else "laboratory",
        quantity=D(1),
        unit_price=D(amount),
        amount=D(amount),
        currency="TRY",
        service_at=at,
        service_date=at.date(),
        status=ChargeStatus.ACTIVE,
        encounter_id=encounter,
        invoice_id=None,
    )


async def _draft(u: BillingWork, patient: uuid.UUID, encounter: uuid.UUID, **kw: object) -> uuid.UUID:
    invoice = await u.invoices.create(
        invoice_id=uuid.uuid4(),
        patient_id=patient,
        encounter_id=encounter,
        kind=InvoiceKind.VISIT,
        currency="TRY",
        service_date=HARD.day,
        at=u.clock(),
        **kw,  # type: ignore[arg-type]
    )
    return invoice.id


async def test_the_seeded_payers_and_price_list_and_a_new_version(side: Side) -> None:
    version, lines = seeded_prices()
    async with side.units.read() as u:
        assert {p.code: p for p in await u.prices.payers()} == seeded_payers()
        assert list(await u.prices.plans()) == ["ALLIANZ", "NOVA", "SELF", "SGK"]
        found = await u.prices.version_on(HARD.day)
        assert found is not None and (found.id, found.effective_from) == (version.id, version.effective_from)
        assert await u.prices.version_on(date(2019, 12, 31)) is None
        assert await u.prices.lines(version.id) == [lines[c] for c in sorted(lines)]
        assert await u.prices.price_on("item.GAUZE", HARD.day) == PriceEntry("item.GAUZE", "supplies", D("8.40"), "TRY")
        assert await u.prices.price_on("item.GAUZE", date(2019, 1, 1)) is None
        assert await u.prices.price_on("nothing", HARD.day) is None
    later, vid = HARD.day + timedelta(days=30), uuid.uuid4()
    async with side.units.uow() as u:
        await u.prices.add_version(vid, later, [PriceEntry("item.GAUZE", "supplies", D("9.999"), "TRY")], STAFF, NOW)
    async with side.units.read() as u:
        v = await u.prices.version_on(later)
        assert v is not None and (v.id, v.created_by, v.created_at) == (vid, STAFF, NOW)
        assert await u.prices.lines(vid) == [PriceEntry("item.GAUZE", "supplies", D("10.00"), "TRY")]
        assert (await u.prices.price_on("item.GAUZE", later)) == PriceEntry("item.GAUZE", "supplies", D("10.00"), "TRY")
        assert await u.prices.price_on("item.IV-SET", later) is None  # a version is the whole list
        assert (await u.prices.version_on(later - timedelta(days=1))) == found
    with pytest.raises(DuplicateVersionError):
        async with side.units.uow() as u:
            await u.prices.add_version(uuid.uuid4(), later, [], STAFF, NOW)
    for bad in (PriceEntry("x", "magic", D(1), "TRY"), PriceEntry("x", "supplies", D(-1), "TRY")):
        with pytest.raises(asyncpg.CheckViolationError):
            async with side.units.uow() as u:
                await u.prices.add_version(uuid.uuid4(), later + timedelta(days=1), [bad], STAFF, NOW)
    async with side.units.read() as u:
        assert await u.prices.version_on(later + timedelta(days=5)) == v  # the refused ones left nothing


async def test_coverage_once_per_event_ordered_by_when_it_was_made_and_ward_tariffs(side: Side) -> None:
    pid, first, ward = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with side.units.uow() as u:
        await u.coverage.add(pid, "SGK", date(2027, 1, 1), first, NOW)
        await u.coverage.add(pid, "NOVA", date(2027, 1, 1), first, NOW)  # the same event again: nothing
        await u.coverage.add(pid, "ACME", date(2027, 6, 1), uuid.uuid4(), NOW + timedelta(hours=1))
        await u.coverage.add(pid, "ALLIANZ", date(2027, 6, 1), uuid.uuid4(), NOW)  # made earlier, same day
        await u.coverage.add(pid, None, date(2028, 1, 1), uuid.uuid4(), NOW)
    async with side.units.read() as u:
        assert await u.coverage.payer_on(pid, date(2026, 12, 31)) is None
        assert await u.coverage.payer_on(pid, date(2027, 3, 1)) == "SGK"
        assert await u.coverage.payer_on(pid, date(2027, 6, 1)) == "ACME"
        assert await u.coverage.payer_on(pid, HARD.day) is None
        assert await u.coverage.payer_on(uuid.uuid4(), HARD.day) is None
    old = WardTariff(ward, "general", D("1500.00"), "TRY", NOW - timedelta(days=2))
    new = WardTariff(ward, "icu", D("4000.005"), "TRY", NOW)
    event = uuid.uuid4()
    async with side.units.uow() as u:
        await u.coverage.add_ward_tariff(uuid.uuid4(), old)
        await u.coverage.add_ward_tariff(event, new)
        await u.coverage.add_ward_tariff(event, WardTariff(ward, "x", D(1), "TRY", NOW + timedelta(days=1)))
        await u.coverage.add_ward_tariff(uuid.uuid4(), WardTariff(ward, "eur", D(1), "EUR", NOW + timedelta(days=9)))
    async with side.units.read() as u:
        got = await u.coverage.ward_tariff_after(ward, NOW - timedelta(days=3), ["TRY"])
        assert got == WardTariff(ward, "icu", D("4000.01"), "TRY", NOW)
        assert await u.coverage.ward_tariff_after(ward, NOW, ["TRY"]) is None
        assert await u.coverage.ward_tariff_after(uuid.uuid4(), NOW - timedelta(days=9), ["TRY"]) is None


async def test_encounters_open_once_and_an_admission_closes_when_its_nights_arrived(side: Side) -> None:
    pid, adm = uuid.uuid4(), uuid.uuid4()
    async with side.units.uow() as u:
        enc = await u.encounters.open(EncounterKind.ADMISSION, adm, pid, NOW)
        assert await u.encounters.open(EncounterKind.ADMISSION, adm, pid, NOW + timedelta(hours=1)) == enc
        visit = await u.encounters.open(EncounterKind.APPOINTMENT, adm, pid, NOW)  # another kind, another one
        assert visit.id != enc.id and enc.status is EncounterStatus.OPEN and enc.started_at == NOW
        await u.encounters.admitted(enc.id, NOW - timedelta(hours=1))
        assert await u.encounters.close_if_complete(enc.id) is False  # not discharged
        await u.encounters.discharged(enc.id, NOW + timedelta(days=2), 2)
        assert await u.encounters.close_if_complete(enc.id) is False
        await u.charges.add(_charge(pid, enc.id, kind=SourceKind.BED_CHARGE, key="night", code="bed.general"))
        assert await u.encounters.close_if_complete(enc.id) is False  # one night of two
        await u.charges.add(_charge(pid, enc.id, kind=SourceKind.BED_CHARGE, key="night", code="bed.general"))
        assert await u.encounters.close_if_complete(enc.id) is True
        assert await u.encounters.close_if_complete(enc.id) is False  # closed already
    async with side.units.read() as u:
        got = await u.encounters.get(enc.id)
        assert got is not None
        assert (got.started_at, got.ended_at, got.expected_nights, got.status) == (
            NOW - timedelta(hours=1),
            NOW + timedelta(days=2),
            2,
            EncounterStatus.CLOSED,
        )
        assert await u.encounters.get(uuid.uuid4()) is None
        assert await u.encounters.admission_at(pid, NOW) == adm
        assert await u.encounters.admission_at(pid, NOW + timedelta(days=2)) == adm  # the end is within
        assert await u.encounters.admission_at(pid, NOW + timedelta(days=3)) is None
        assert await u.encounters.admission_at(pid, NOW - timedelta(hours=2)) is None
        assert await u.encounters.admission_at(uuid.uuid4(), NOW) is None


async def test_charges_once_per_source_line_found_voided_and_moved(side: Side) -> None:
    pid, order = uuid.uuid4(), uuid.uuid4()
    async with side.units.uow() as u:
        visit = await u.encounters.open(EncounterKind.LAB_ORDER, order, pid, NOW)
        adm = await u.encounters.open(EncounterKind.ADMISSION, uuid.uuid4(), pid, NOW)
        b = _charge(pid, visit.id, source=order, key="1", code="lab.CRP", hours=1)
        a = _charge(pid, visit.id, source=order, key="0", code="lab.K", hours=1)
        c = _charge(pid, visit.id, source=order, key="2", code="lab.A", hours=2)
        stay = _charge(pid, adm.id, hours=1)
        for x in (b, a, c, stay):
            assert await u.charges.add(x) is True
        assert await u.charges.add(_charge(pid, visit.id, source=order, key="0")) is False  # a redelivery
        invoice = await _draft(u, pid, visit.id)
        await u.charges.attach([a.id, b.id, c.id], invoice)
    async with side.units.uow() as u:
        assert [x.id for x in await u.charges.active_on(invoice)] == [b.id, a.id, c.id]  # time, code, line
        ahead = sorted([a.id, b.id])
        assert [x.id for x in await u.charges.visits_within(pid, NOW + timedelta(hours=1), None)] == [*ahead, c.id]
        assert [x.id for x in await u.charges.visits_within(pid, NOW, NOW + timedelta(hours=1))] == sorted([a.id, b.id])
        assert [x.id for x in await u.charges.of_patient(pid, 2)] == [c.id, min(a.id, b.id, stay.id)]
        assert await u.charges.source_voided(SourceKind.LAB_ORDER, order) is False
    async with side.units.uow() as u:
        await u.charges.mark_source_voided(SourceKind.LAB_ORDER, order)
        await u.charges.mark_source_voided(SourceKind.LAB_ORDER, order)
        assert await u.charges.void(SourceKind.LAB_ORDER, order, NOW) == [invoice]
        assert await u.charges.void(SourceKind.LAB_ORDER, order, NOW) == []
        assert await u.charges.void(SourceKind.STOCK, uuid.uuid4(), NOW) == []
    async with side.units.uow() as u:
        assert await u.charges.source_voided(SourceKind.LAB_ORDER, order) is True
        assert await u.charges.source_voided(SourceKind.APPOINTMENT, order) is False
        assert await u.charges.active_on(invoice) == []
        assert {x.status for x in await u.charges.of_patient(pid, 10)} == {ChargeStatus.VOID, ChargeStatus.ACTIVE}
    late = _charge(pid, visit.id, hours=3)
    async with side.units.uow() as u:
        await u.charges.add(late)
        await u.charges.attach([late.id], invoice)
        await u.charges.move_to_encounter([late.id], adm.id)
    async with side.units.uow() as u:
        [moved] = [x for x in await u.charges.of_patient(pid, 10) if x.id == late.id]
        assert (moved.encounter_id, moved.invoice_id) == (adm.id, None)
        assert await u.charges.visits_within(pid, NOW, None) == []  # on the admission now
    for bad in (_charge(pid, visit.id, amount="-1"), _charge(pid, uuid.uuid4())):
        with pytest.raises((asyncpg.CheckViolationError, asyncpg.ForeignKeyViolationError)):
            async with side.units.uow() as u:
                await u.charges.add(bad)


async def _issued(u: BillingWork, pid: uuid.UUID, payer: str = "SGK", amount: str = "750.00") -> uuid.UUID:
    """A visit invoice of one charge, issued under ``payer``."""
    enc = await u.encounters.open(EncounterKind.APPOINTMENT, uuid.uuid4(), pid, NOW)
    charge = _charge(pid, enc.id, amount=amount)
    await u.charges.add(charge)
    invoice = await _draft(u, pid, enc.id)
    await u.charges.attach([charge.id], invoice)
    plan = (await u.prices.plans())[payer]
    priced = price(plan, [PriceLine(charge.code, charge.category, charge.quantity, charge.unit_price)], Accumulator())
    await u.invoices.write_lines(
        [
            InvoiceLine(
                invoice, 0, charge.id, charge.code, charge.category, charge.quantity, charge.unit_price,
                p.total, p.insurer_share, p.patient_share, p.excluded, p.deductible, p.copay,
            )
            for p in priced.lines
        ]
    )  # fmt: skip
    await u.invoices.mark_issued(invoice, status=InvoiceStatus.OPEN, payer=payer, plan_year=2028, priced=priced, at=NOW)
    return invoice


async def test_invoices_from_draft_to_issued_paid_void_and_replaced(side: Side) -> None:
    pid = uuid.uuid4()
    async with side.units.uow() as u:
        enc = await u.encounters.open(EncounterKind.ADMISSION, uuid.uuid4(), pid, NOW)
        draft = await _draft(u, pid, enc.id)
        assert (await u.invoices.draft_of(enc.id)) == await u.invoices.get(draft)
        assert await u.invoices.has_issued(enc.id) is False
        await u.invoices.set_service_date(draft, HARD.day - timedelta(days=1))
        detail = await u.invoices.detailed(await u.invoices.get(draft, lock=True))  # type: ignore[arg-type]
        assert (detail.invoice.service_date, detail.encounter, detail.charges, detail.lines) == (
            HARD.day - timedelta(days=1),
            enc,
            (),
            (),
        )
        issued = await _issued(u, pid)
    async with side.units.uow() as u:  # issued_since locks
        inv = await u.invoices.get(issued)
        assert inv is not None
        assert (inv.status, inv.payer, inv.plan_year, inv.total, inv.insurer_share, inv.patient_share) == (
            InvoiceStatus.OPEN,
            "SGK",
            2028,
            D("750.00"),
            D("600.00"),
            D("150.00"),
        )
        assert (inv.issued_at, inv.created_at, inv.updated_at, inv.paid) == (NOW, NOW, NOW, D("0.00"))
        [line] = await u.invoices.lines_of(issued)
        assert (line.position, line.total, line.insurer_share, line.patient_share) == (0, D(750), D(600), D(150))
        detail = await u.invoices.detailed(inv)
        assert detail.lines == (line,) and detail.charges == ()
        assert await u.invoices.issued_since(pid, HARD.day) == [inv]
        assert await u.invoices.issued_since(pid, HARD.day + timedelta(days=1)) == []
        assert await u.invoices.find([pid], InvoiceStatus.OPEN, 10) == [inv]
        assert [i.id for i in await u.invoices.find(None, None, 10)] == sorted([draft, issued])  # one moment
        assert await u.invoices.find([uuid.uuid4()], None, 10) == []
    later = NOW + timedelta(minutes=5)
    async with side.units.uow() as u:
        await u.invoices.set_paid(issued, D("100.00"), InvoiceStatus.PARTIALLY_PAID, later)
        await u.payments.add(
            payment_id=uuid.uuid4(),
            invoice_id=issued,
            patient_id=pid,
            kind=PaymentKind.PAYMENT,
            amount=D(100),
            currency="TRY",
            method=PaymentMethod.CASH,
            created_by=STAFF,
            at=later,
        )
        await u.invoices.mark_void(issued, keep_paid=True, at=later)
        old = await u.invoices.get(issued)
        assert old is not None
        replacement = await _draft(u, pid, old.encounter_id, replaces=issued, paid=old.paid)
        await u.invoices.move_open_items(issued, replacement)
    async with side.units.uow() as u:
        old = await u.invoices.get(issued)
        new = await u.invoices.get(replacement)
        assert old is not None and new is not None
        assert (old.status, old.voided_at, old.updated_at, old.paid) == (InvoiceStatus.VOID, later, later, D(100))
        assert (new.replaces, new.paid, new.status) == (issued, D(100), InvoiceStatus.DRAFT)
        assert [c.invoice_id for c in await u.charges.active_on(replacement)] == [replacement]
        assert [p.invoice_id for p in await u.payments.of_invoice(replacement)] == [replacement]
        assert await u.invoices.issued_since(pid, HARD.day) == []
        assert [i.id for i in await u.invoices.find([pid], None, 10)] == sorted([replacement, draft, issued])
    async with side.units.uow() as u:
        await u.invoices.mark_void(replacement, keep_paid=False, at=later)
    async with side.units.read() as u:
        gone = await u.invoices.get(replacement)
        assert gone is not None and (gone.status, gone.paid) == (InvoiceStatus.VOID, D("0.00"))


async def test_one_draft_per_encounter_and_an_invoices_keys(side: Side) -> None:
    pid = uuid.uuid4()
    async with side.units.uow() as u:
        enc = await u.encounters.open(EncounterKind.APPOINTMENT, uuid.uuid4(), pid, NOW)
        await _draft(u, pid, enc.id)
    with pytest.raises(asyncpg.UniqueViolationError):
        async with side.units.uow() as u:
            await _draft(u, pid, enc.id)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with side.units.uow() as u:
            await _draft(u, pid, uuid.uuid4())
    with pytest.raises(asyncpg.InFailedSQLTransactionError):  # a refused write aborts the unit
        async with side.units.uow() as u:
            with pytest.raises(asyncpg.UniqueViolationError):
                await _draft(u, pid, enc.id)
            await u.invoices.get(uuid.uuid4())
    async with side.units.read() as u:
        assert len(await u.invoices.find([pid], None, 10)) == 1


async def test_accumulators_start_at_zero_and_keep_what_was_saved(side: Side) -> None:
    pid = uuid.uuid4()
    async with side.units.uow() as u:
        assert await u.invoices.accumulator(pid, "NOVA", 2028) == Accumulator(D(0), D(0))
        await u.invoices.save_accumulator(pid, "NOVA", 2028, Accumulator(D("1000.00"), D("1100.005")))
        await u.invoices.save_accumulator(pid, "NOVA", 2029, Accumulator(D(5), D(5)))  # no such year: nothing
    async with side.units.uow() as u:
        assert await u.invoices.accumulator(pid, "NOVA", 2028) == Accumulator(D("1000.00"), D("1100.01"))
        assert await u.invoices.accumulator(pid, "NOVA", 2029) == Accumulator(D(0), D(0))
        assert await u.invoices.accumulator(pid, "SGK", 2028) == Accumulator(D(0), D(0))
    with pytest.raises(asyncpg.CheckViolationError):
        async with side.units.uow() as u:
            await u.invoices.save_accumulator(pid, "NOVA", 2028, Accumulator(D(-1), D(0)))


async def test_claims_one_per_invoice_with_their_states(side: Side) -> None:
    pid = uuid.uuid4()
    async with side.units.uow() as u:
        first, second = await _issued(u, pid), await _issued(u, pid)
        a = await u.claims.add(
            claim_id=uuid.uuid4(), invoice_id=first, patient_id=pid, payer="SGK", amount=D(600), currency="TRY", at=NOW
        )
    async with side.units.uow() as u:
        b = await u.claims.add(
            claim_id=uuid.uuid4(),
            invoice_id=second,
            patient_id=pid,
            payer="ALLIANZ",
            amount=D(1),
            currency="TRY",
            at=NOW + timedelta(minutes=1),
        )
        assert (a.status, a.created_at, a.updated_at, a.amount) == (ClaimStatus.DRAFT, NOW, NOW, D("600.00"))
        assert await u.claims.get(a.id, lock=True) == a
        assert await u.claims.of_invoice(second) == b
        moved = await u.claims.set_status(a.id, ClaimStatus.SUBMITTED, NOW + timedelta(minutes=2))
        assert (moved.status, moved.updated_at, moved.created_at) == (
            ClaimStatus.SUBMITTED,
            NOW + timedelta(minutes=2),
            NOW,
        )
    async with side.units.uow() as u:  # of_invoice locks
        assert await u.claims.get(uuid.uuid4()) is None
        assert await u.claims.of_invoice(uuid.uuid4()) is None
        assert [c.id for c in await u.claims.find(None, None, 10)] == [b.id, a.id]
        assert [c.id for c in await u.claims.find(ClaimStatus.SUBMITTED, None, 10)] == [a.id]
        assert [c.id for c in await u.claims.find(None, "ALLIANZ", 10)] == [b.id]
        assert await u.claims.find(None, None, 1) == [b]
    for invoice, amount, error in (
        (first, D(1), asyncpg.UniqueViolationError),
        (uuid.uuid4(), D(1), asyncpg.ForeignKeyViolationError),
        (second, D(0), asyncpg.CheckViolationError),
    ):
        with pytest.raises(error):
            async with side.units.uow() as u:
                await u.claims.add(
                    claim_id=uuid.uuid4(),
                    invoice_id=invoice,
                    patient_id=pid,
                    payer="SGK",
                    amount=amount,
                    currency="TRY",
                    at=NOW,
                )


async def test_payments_in_order_and_an_idempotency_key_taken_once(side: Side) -> None:
    pid, actor = uuid.uuid4(), uuid.uuid4()
    async with side.units.uow() as u:
        invoice = await _issued(u, pid)
        assert await u.payments.claim_key(actor, "k", "hash-1") is True
        assert await u.payments.stored_response(actor, "k") == StoredResponse("hash-1", 0, "")
        await u.payments.store_response(actor, "k", 201, '{"id": 1}')
        ids = []
        for minutes, amount in ((2, "50.00"), (1, "100.00")):
            p = await u.payments.add(
                payment_id=uuid.uuid4(),
                invoice_id=invoice,
                patient_id=pid,
                kind=PaymentKind.PAYMENT,
                amount=D(amount),
                currency="TRY",
                method=PaymentMethod.CARD,
                created_by=actor,
                at=NOW + timedelta(minutes=minutes),
            )
            ids.append(p.id)
        assert (p.created_at, p.amount, p.provider, p.intent_id) == (NOW + timedelta(minutes=1), D(100), None, None)
    async with side.units.uow() as u:
        assert await u.payments.claim_key(actor, "k", "hash-2") is False  # taken, whatever the request
        assert await u.payments.stored_response(actor, "k") == StoredResponse("hash-1", 201, '{"id": 1}')
        assert await u.payments.claim_key(uuid.uuid4(), "k", "hash-2") is True  # keys are per caller
        assert await u.payments.stored_response(actor, "other") is None
        assert [p.id for p in await u.payments.of_invoice(invoice)] == [ids[1], ids[0]]
        assert await u.payments.of_invoice(uuid.uuid4()) == []
    for method, sum_, error in (
        (PaymentMethod.ONLINE, D(1), asyncpg.CheckViolationError),  # online only with its intent
        (PaymentMethod.CASH, D(0), asyncpg.CheckViolationError),
    ):
        with pytest.raises(error):
            async with side.units.uow() as u:
                await u.payments.add(
                    payment_id=uuid.uuid4(),
                    invoice_id=invoice,
                    patient_id=pid,
                    kind=PaymentKind.PAYMENT,
                    amount=sum_,
                    currency="TRY",
                    method=method,
                    created_by=actor,
                    at=NOW,
                )


async def test_intents_deliveries_and_provider_events(side: Side) -> None:
    pid, actor = uuid.uuid4(), uuid.uuid4()
    async with side.units.uow() as u:
        invoice = await _issued(u, pid)
        intent = await u.intents.add(
            intent_id=uuid.uuid4(),
            invoice_id=invoice,
            patient_id=pid,
            amount=D("150.00"),
            currency="TRY",
            provider="test",
            provider_ref="cs_1",
            checkout_url="http://x/cs_1",
            created_by=actor,
            at=NOW,
        )
        assert (intent.status, intent.created_at, intent.confirmed_at) == (IntentStatus.PENDING, NOW, None)
        assert await u.intents.by_reference("test", "cs_1") == intent
        assert await u.intents.by_reference("other", "cs_1") is None
        assert await u.intents.record_delivery("test", "d1", NOW) is True
        assert await u.intents.record_delivery("test", "d1", NOW + timedelta(minutes=59)) is False  # a replay
        assert await u.intents.record_event("test", "evt_1", intent.id) is True
        assert await u.intents.record_event("test", "evt_1", intent.id) is False
        await u.payments.add(
            payment_id=uuid.uuid4(),
            invoice_id=invoice,
            patient_id=pid,
            kind=PaymentKind.PAYMENT,
            amount=D(150),
            currency="TRY",
            method=PaymentMethod.ONLINE,
            created_by=actor,
            at=NOW,
            provider="test",
            intent_id=intent.id,
        )
        await u.intents.mark_succeeded(intent.id, NOW + timedelta(minutes=1))
    async with side.units.uow() as u:
        [done] = await u.intents.of_invoice(invoice)
        assert (done.status, done.confirmed_at) == (IntentStatus.SUCCEEDED, NOW + timedelta(minutes=1))
        # Forgotten after an hour (refused as stale by then anyway).
        assert await u.intents.record_delivery("test", "d1", NOW + timedelta(minutes=61)) is True
    with pytest.raises(asyncpg.UniqueViolationError):  # one payment per intent
        async with side.units.uow() as u:
            await u.payments.add(
                payment_id=uuid.uuid4(),
                invoice_id=invoice,
                patient_id=pid,
                kind=PaymentKind.PAYMENT,
                amount=D(1),
                currency="TRY",
                method=PaymentMethod.ONLINE,
                created_by=actor,
                at=NOW,
                intent_id=intent.id,
            )
    with pytest.raises(asyncpg.UniqueViolationError):  # one intent per provider reference
        async with side.units.uow() as u:
            await u.intents.add(
                intent_id=uuid.uuid4(),
                invoice_id=invoice,
                patient_id=pid,
                amount=D(1),
                currency="TRY",
                provider="test",
                provider_ref="cs_1",
                checkout_url="u",
                created_by=actor,
                at=NOW,
            )


async def test_the_replica_and_the_patients_an_account_holds(side: Side) -> None:
    pid, other, account = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with side.units.uow() as u:
        await u.patients.remember(pid, account)
        await u.patients.remember(pid, None)  # an account once known is kept
        await u.patients.remember(other, None)
    async with side.units.read() as u:
        found = await u.patients.find(pid)
        assert found is not None and found.account_id == account
        assert await u.holders.patients_of(account) == [pid]
        assert await u.holders.patients_of(uuid.uuid4()) == []


async def test_a_unit_that_fails_leaves_nothing_and_publishes_nothing(side: Side) -> None:
    pid = uuid.uuid4()
    with pytest.raises(RuntimeError):
        async with side.units.uow() as u:
            invoice = await _issued(u, pid)
            u.add(
                InvoiceIssued(
                    invoice_id=invoice,
                    patient_id=pid,
                    encounter_id=uuid.uuid4(),
                    kind="visit",
                    payer="SGK",
                    currency="TRY",
                    total=D(1),
                    insurer_share=D(1),
                    patient_share=D(0),
                ),
                aggregate_id=invoice,
            )
            await u.payments.claim_key(STAFF, "k", "h")
            raise RuntimeError("the use case failed")
    async with side.units.read() as u:
        assert await u.invoices.find([pid], None, 10) == []
        assert await u.charges.of_patient(pid, 10) == []
        assert await u.payments.stored_response(STAFF, "k") is None
    assert await side.published() == []
