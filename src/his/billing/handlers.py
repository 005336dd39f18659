"""Use cases of the billing service: one function per consumed event or command.

Charges come only from events. Each is unique per source line (``charge`` has a unique key on
source kind, source id and line), so a redelivered or replayed event never charges twice, on top
of the inbox. Where a charge goes (docs/adr/0010-billing.md):

- a charge whose time falls within one of the patient's admissions goes on that admission's
  invoice, which collects charges as a draft while the patient is in and is issued when the
  discharge event arrives (every bed night is posted before it on admissions' stream);
- any other charge forms a visit invoice of its own source (one per appointment, one per lab
  order, one per patient consumption of stock), issued when the charge arrives;
- a charge arriving after its encounter's invoice was issued goes on a supplementary invoice
  of the same encounter, issued at once;
- a charge billed as a visit because its event was applied before the admission's moves onto the
  admission when that arrives (its visit invoice is voided).

An invoice is priced (``domain.price``) with the plan valid on its encounter's first date and
the patient's accumulator for that plan and year, locked and updated in the same transaction.
A cancellation voids its source's charges; if they were on an issued invoice, that invoice is
voided (its contribution leaves the accumulator, its claim is voided) and the remaining charges
are reissued on a replacement invoice, which takes over the payments made so far.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from decimal import Decimal
from functools import cache
from zoneinfo import ZoneInfo

from prometheus_client import Counter

from his.billing.domain import (
    ZERO,
    Charge,
    ChargeStatus,
    Claim,
    ClaimAction,
    ClaimStatus,
    Encounter,
    EncounterKind,
    EncounterStatus,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
    Line,
    Payment,
    PaymentKind,
    PaymentMethod,
    Plan,
    SourceKind,
    UnknownPayerError,
    WardTariff,
    billable_currencies,
    cents,
    check_payment,
    check_refund,
    claim_transition,
    payment_status,
    plan_for,
    price,
    unpriced,
)
from his.billing.ports import BillingWork
from his.billing.store import BillingUnit
from his.events.admissions import BedChargePosted, PatientAdmitted, PatientDischarged, WardUpdated
from his.events.billing import (
    ClaimAccepted,
    ClaimCreated,
    ClaimEvent,
    ClaimPaid,
    ClaimRejected,
    ClaimSubmitted,
    ClaimVoided,
    InvoiceIssued,
    InvoiceVoided,
    PaymentReceived,
    PaymentRefunded,
)
from his.events.inventory import StockConsumed
from his.events.laboratory import LabOrderCancelled, LabResults
from his.events.patients import CoverageChanged
from his.events.scheduling import AppointmentCancelled, AppointmentCompleted
from his.kernel.config import Settings
from his.kernel.consumer import PermanentError
from his.kernel.db import UnitOfWork
from his.kernel.events import Envelope

ISSUED = Counter("his_invoices_issued_total", "Invoices issued (counted after their commit)")


class UnknownError(LookupError):
    """An invoice or claim that does not exist."""


class ConflictError(Exception):
    """The request cannot be applied in the current state (an idempotency key reused, a draft invoice)."""


@cache
def zone() -> ZoneInfo:
    """The hospital's time zone (``HIS_TIMEZONE``): what the date of a service is."""
    return ZoneInfo(Settings().timezone)


def day_of(at: datetime) -> date:
    return at.astimezone(zone()).date()


@dataclass(frozen=True)
class Item:
    """One line a source charges."""

    line_key: str
    code: str
    category: str
    quantity: Decimal
    unit_price: Decimal
    currency: str


# --- patients and coverage ---------------------------------------------------------------------


async def coverage_changed(uow: BillingWork, env: Envelope, ev: CoverageChanged) -> None:
    """Add to the patient's coverage history; an invoice uses the payer valid on its service date.

    A payer billing has no plan for is recorded too (it is what patients holds), so that nothing
    of the patient's is priced as self-pay in its place: each invoice that needs it dead-letters
    until the coverage is corrected. Changes of one day are ordered by when patients made them
    (the event's time), so a stale change replayed from the DLQ never overrides a later correction.
    """
    await uow.coverage.add(ev.patient_id, ev.payer, ev.effective_from, env.id, env.time)
    # Invoices already issued for services the new coverage applies to were split under another
    # plan (coverage travels on patients' stream, charges on others: it can arrive after them).
    # Each is voided and reissued under the plan now valid on its service date, payments kept.
    plans = await uow.prices.plans()
    for invoice in await uow.invoices.issued_since(ev.patient_id, ev.effective_from):
        now_valid = await plan_on(uow, ev.patient_id, invoice.service_date, plans)
        if now_valid.code != invoice.payer:
            await void_and_reissue(uow, invoice)


async def plan_on(uow: BillingWork, patient_id: uuid.UUID, day: date, plans: dict[str, Plan] | None = None) -> Plan:
    """The plan of the payer valid for the patient on ``day``; a payer without a plan dead-letters
    the event being applied (``PermanentError``), to be replayed once the coverage is corrected."""
    payer = await uow.coverage.payer_on(patient_id, day)
    try:
        return plan_for(payer, plans if plans is not None else await uow.prices.plans())
    except UnknownPayerError as exc:
        raise PermanentError(
            f"patient {patient_id}: {exc}; correct the patient's coverage (PATCH /api/patients/{patient_id}),"
            " then replay this event"
        ) from None


async def ward_updated(uow: BillingWork, env: Envelope, ev: WardUpdated) -> None:
    """Remember a ward's corrected tariff (see ``on_bed_charge_posted``)."""
    await uow.coverage.add_ward_tariff(
        env.id,
        WardTariff(
            ward_id=ev.ward_id,
            ward_type=ev.ward_type,
            daily_rate=ev.daily_rate,
            currency=ev.currency,
            changed_at=env.time,
        ),
    )


# --- encounters --------------------------------------------------------------------------------


async def admitted(uow: BillingWork, env: Envelope, ev: PatientAdmitted) -> None:
    enc = await uow.encounters.open(EncounterKind.ADMISSION, ev.admission_id, ev.patient_id, ev.admitted_at)
    await uow.encounters.admitted(enc.id, ev.admitted_at)
    await adopt(uow, replace(enc, started_at=ev.admitted_at))


async def discharged(uow: BillingWork, env: Envelope, ev: PatientDischarged) -> None:
    """Close the admission and issue the invoice that collected its charges, once every bed night
    the discharge counts has arrived (bed nights and discharges are separate consumers, so the
    discharge may be applied first; the last bed night then closes the admission)."""
    enc = await uow.encounters.open(EncounterKind.ADMISSION, ev.admission_id, ev.patient_id, ev.admitted_at)
    await uow.encounters.discharged(enc.id, ev.discharged_at, ev.nights)
    await adopt(uow, replace(enc, started_at=ev.admitted_at, ended_at=ev.discharged_at))
    await close_if_complete(uow, enc.id)


async def close_if_complete(uow: BillingWork, encounter_id: uuid.UUID) -> None:
    if await uow.encounters.close_if_complete(encounter_id):
        draft = await uow.invoices.draft_of(encounter_id)
        if draft is not None:
            await issue(uow, draft)


# --- charges -----------------------------------------------------------------------------------


async def _priced(uow: BillingWork, code: str, on: date, quantity: Decimal, key: str) -> Item:
    line = await uow.prices.price_on(code, on)
    if line is None:  # dead-lettered: add the price, then replay the event
        raise PermanentError(f"no price for {code} on {on.isoformat()}")
    return Item(key, code, line.category, quantity, line.amount, line.currency)


async def appointment_completed(uow: BillingWork, env: Envelope, ev: AppointmentCompleted) -> None:
    """Charge the appointment's service at the price list's price on its date."""
    item = await _priced(uow, f"consultation.{ev.service}", day_of(ev.start), Decimal(1), "service")
    await capture(uow, ev.patient_id, (SourceKind.APPOINTMENT, ev.appointment_id), ev.start, [item])


async def bed_charge_posted(uow: BillingWork, env: Envelope, ev: BedChargePosted) -> None:
    """A bed night at the ward's rate (admissions owns the tariff), on its admission's invoice.

    A night posted in a currency billing does not invoice in (a ward entered before currencies
    were checked) is billed at the ward's tariff as admissions corrected it after the posting;
    without such a correction it dead-letters, to be replayed once the ward is corrected."""
    at = datetime.combine(ev.night, time(12), tzinfo=zone())
    ward_type, amount, currency = ev.ward_type, ev.amount, ev.currency
    known = billable_currencies(await uow.prices.plans())
    if currency not in known:
        corrected = await uow.coverage.ward_tariff_after(ev.ward_id, env.time, known)
        if corrected is not None:
            ward_type, amount, currency = corrected.ward_type, corrected.daily_rate, corrected.currency
    item = Item("night", f"bed.{ward_type}", "bed", Decimal(1), amount, currency)
    await capture(uow, ev.patient_id, (SourceKind.BED_CHARGE, ev.charge_id), at, [item], admission=ev.admission_id)


async def lab_order_resulted(uow: BillingWork, env: Envelope, ev: LabResults) -> None:
    """One line per test at the catalogue price the laboratory sealed in the event."""
    items = [
        Item(f"{i}", f"lab.{c.code}", "laboratory", Decimal(1), c.amount, c.currency) for i, c in enumerate(ev.charges)
    ]
    if items:
        await capture(uow, ev.patient_id, (SourceKind.LAB_ORDER, ev.order_id), ev.resulted_at, items)


async def stock_consumed(uow: BillingWork, env: Envelope, ev: StockConsumed) -> None:
    """Chargeable stock used for a patient: ``item.<code>`` at the price list's price × quantity."""
    if not ev.chargeable or ev.patient_id is None:
        return
    qty = ev.quantity.quantize(Decimal("0.0001"))  # as stored
    item = await _priced(uow, f"item.{ev.item_code}", day_of(ev.consumed_at), qty, "item")
    await capture(uow, ev.patient_id, (SourceKind.STOCK, ev.consumption_id), ev.consumed_at, [item])


_VISIT_KIND = {
    SourceKind.APPOINTMENT: EncounterKind.APPOINTMENT,
    SourceKind.LAB_ORDER: EncounterKind.LAB_ORDER,
    SourceKind.STOCK: EncounterKind.SUPPLIES,
}


async def capture(
    uow: BillingWork,
    patient_id: uuid.UUID,
    source: tuple[SourceKind, uuid.UUID],
    at: datetime,
    items: list[Item],
    *,
    admission: uuid.UUID | None = None,
) -> None:
    """Record a source's charges once and put them on the invoice of their encounter."""
    source_kind, source_id = source
    if any(it.quantity <= 0 or it.unit_price < 0 or not it.unit_price.is_finite() for it in items):
        raise PermanentError("a charge needs a positive quantity and a price of at least zero")
    admission = admission or await uow.encounters.admission_at(patient_id, at)
    if admission is not None:
        enc = await uow.encounters.open(EncounterKind.ADMISSION, admission, patient_id, at)
    else:
        enc = await uow.encounters.open(_VISIT_KIND[source_kind], source_id, patient_id, at)
    voided = await uow.charges.source_voided(source_kind, source_id)
    new: list[uuid.UUID] = []
    for it in items:
        unit = cents(it.unit_price)  # a price is money: 0.01, as stored
        charge = Charge(
            id=uuid.uuid4(),
            patient_id=patient_id,
            source_kind=source_kind,
            source_id=source_id,
            line_key=it.line_key,
            code=it.code,
            category=it.category,
            quantity=it.quantity,
            unit_price=unit,
            amount=Line(it.code, it.category, it.quantity, unit).total,
            currency=it.currency,
            service_at=at,
            service_date=day_of(at),
            status=ChargeStatus.VOID if voided else ChargeStatus.ACTIVE,
            encounter_id=enc.id,
            invoice_id=None,
        )
        if await uow.charges.add(charge):
            new.append(charge.id)
    if voided or not new:
        return
    if any(it.currency != items[0].currency for it in items):
        raise PermanentError("the lines of one source are in different currencies")
    await check_currency(uow, items[0].currency, source_kind)
    await place(uow, enc, new, items[0].currency, bed_night=source_kind is SourceKind.BED_CHARGE)


async def check_currency(uow: BillingWork, currency: str, source_kind: SourceKind) -> None:
    """A charge in a currency none of billing's plans is in cannot be invoiced: dead-letter it
    (before it opens or joins an invoice) rather than price it under a plan of another currency."""
    known = billable_currencies(await uow.prices.plans())
    if currency not in known:
        bed = source_kind is SourceKind.BED_CHARGE
        where = "correct the ward's currency (PATCH /api/wards/{id})" if bed else "correct it"
        raise PermanentError(
            f"a {source_kind} charge in {currency}, which billing does not invoice in (currencies: {', '.join(known)});"
            f" {where}, then replay this event"
        )


async def place(
    uow: BillingWork, enc: Encounter, charge_ids: list[uuid.UUID], currency: str, *, bed_night: bool = False
) -> None:
    """Put new charges of an encounter on its invoice: the draft of an admission still open, else a
    new invoice (a supplementary one if the encounter was invoiced already), issued at once."""
    collecting = enc.kind is EncounterKind.ADMISSION and enc.status is EncounterStatus.OPEN
    invoice = await uow.invoices.draft_of(enc.id) if collecting else None
    if invoice is None:
        kind = InvoiceKind.SUPPLEMENTARY if await uow.invoices.has_issued(enc.id) else _invoice_kind(enc)
        invoice = await uow.invoices.create(
            invoice_id=uuid.uuid4(),
            patient_id=enc.patient_id,
            encounter_id=enc.id,
            kind=kind,
            currency=currency,
            service_date=day_of(enc.started_at),
            at=uow.clock(),
        )
    if currency != invoice.currency:
        raise PermanentError(f"charges in another currency than the invoice's {invoice.currency}")
    await uow.charges.attach(charge_ids, invoice.id)
    if not collecting:
        await issue(uow, invoice)
    elif bed_night:
        await close_if_complete(uow, enc.id)


def _invoice_kind(enc: Encounter) -> InvoiceKind:
    return InvoiceKind.ADMISSION if enc.kind is EncounterKind.ADMISSION else InvoiceKind.VISIT


async def issue(uow: BillingWork, invoice: Invoice) -> Invoice | None:
    """Price a draft invoice under the plan valid on its service date, and make it payable."""
    charges = await uow.charges.active_on(invoice.id)
    if not charges:  # everything on it was cancelled before it was issued
        await uow.invoices.mark_void(invoice.id, keep_paid=True, at=uow.clock())
        return None
    enc = await uow.encounters.get(invoice.encounter_id)
    assert enc is not None
    day = day_of(enc.started_at)  # the encounter's first date: its plan and plan year
    await uow.invoices.set_service_date(invoice.id, day)
    plan = await plan_on(uow, invoice.patient_id, day)
    if plan.currency != invoice.currency:
        raise PermanentError(f"invoice {invoice.id} is in {invoice.currency}, plan {plan.code} in {plan.currency}")
    year = await uow.invoices.accumulator(invoice.patient_id, plan.code, day.year)
    priced = price(plan, [Line(c.code, c.category, c.quantity, c.unit_price) for c in charges], year)
    await uow.invoices.write_lines(
        [
            InvoiceLine(
                invoice_id=invoice.id,
                position=i,
                charge_id=c.id,
                code=c.code,
                category=c.category,
                quantity=c.quantity,
                unit_price=c.unit_price,
                total=p.total,
                insurer_share=p.insurer_share,
                patient_share=p.patient_share,
                excluded=p.excluded,
                deductible=p.deductible,
                copay=p.copay,
            )
            for i, (c, p) in enumerate(zip(charges, priced.lines, strict=True))
        ],
    )
    await uow.invoices.save_accumulator(invoice.patient_id, plan.code, day.year, priced.after)
    status = payment_status(priced.patient_share, invoice.paid)
    issued = await uow.invoices.mark_issued(
        invoice.id, status=status, payer=plan.code, plan_year=day.year, priced=priced, at=uow.clock()
    )
    uow.add(
        InvoiceIssued(
            invoice_id=issued.id,
            patient_id=issued.patient_id,
            encounter_id=issued.encounter_id,
            kind=issued.kind.value,
            payer=plan.code,
            currency=issued.currency,
            total=priced.total,
            insurer_share=priced.insurer_share,
            patient_share=priced.patient_share,
            replaces=issued.replaces,
        ),
        aggregate_id=issued.id,
    )
    uow.on_commit(ISSUED.inc)
    if priced.insurer_share > ZERO:
        claim = await uow.claims.add(
            claim_id=uuid.uuid4(),
            invoice_id=issued.id,
            patient_id=issued.patient_id,
            payer=plan.code,
            amount=priced.insurer_share,
            currency=issued.currency,
            at=uow.clock(),
        )
        uow.add(_claim_event(ClaimCreated, claim), aggregate_id=claim.id)
    return issued


def _claim_event(model: type[ClaimEvent], claim: Claim) -> ClaimEvent:
    return model(
        claim_id=claim.id,
        invoice_id=claim.invoice_id,
        payer=claim.payer,
        amount=claim.amount,
        currency=claim.currency,
    )


# --- cancellations -----------------------------------------------------------------------------


async def appointment_cancelled(uow: BillingWork, env: Envelope, ev: AppointmentCancelled) -> None:
    await void_source(uow, SourceKind.APPOINTMENT, ev.appointment_id)


async def lab_order_cancelled(uow: BillingWork, env: Envelope, ev: LabOrderCancelled) -> None:
    await void_source(uow, SourceKind.LAB_ORDER, ev.order_id)


async def void_source(uow: BillingWork, kind: SourceKind, source_id: uuid.UUID) -> None:
    """Void a source's charges (and any arriving later); reissue issued invoices without them."""
    await uow.charges.mark_source_voided(kind, source_id)
    for invoice_id in await uow.charges.void(kind, source_id, uow.clock()):
        invoice = await uow.invoices.get(invoice_id, lock=True)
        assert invoice is not None
        if invoice.status not in (InvoiceStatus.DRAFT, InvoiceStatus.VOID):
            await void_and_reissue(uow, invoice)


async def void_and_reissue(uow: BillingWork, invoice: Invoice) -> None:
    remaining = await uow.charges.active_on(invoice.id)
    await _void(uow, invoice, keep_paid=not remaining)
    replacement: Invoice | None = None
    if remaining:
        replacement = await uow.invoices.create(
            invoice_id=uuid.uuid4(),
            patient_id=invoice.patient_id,
            encounter_id=invoice.encounter_id,
            kind=invoice.kind,
            replaces=invoice.id,
            currency=invoice.currency,
            service_date=invoice.service_date,
            paid=invoice.paid,
            at=uow.clock(),
        )
        await uow.invoices.move_open_items(invoice.id, replacement.id)
        await issue(uow, replacement)
    uow.add(
        InvoiceVoided(
            invoice_id=invoice.id,
            patient_id=invoice.patient_id,
            replaced_by=replacement.id if replacement else None,
        ),
        aggregate_id=invoice.id,
    )


async def _void(uow: BillingWork, invoice: Invoice, *, keep_paid: bool) -> None:
    """Void an issued invoice: its share of the year leaves the accumulator, its claim is void."""
    payer, plan_year = invoice.payer, invoice.plan_year
    assert payer is not None and plan_year is not None, f"invoice {invoice.id} was never issued"
    year = await uow.invoices.accumulator(invoice.patient_id, payer, plan_year)
    back = unpriced(year, invoice.deductible_applied, invoice.out_of_pocket_applied)
    await uow.invoices.save_accumulator(invoice.patient_id, payer, plan_year, back)
    claim = await uow.claims.of_invoice(invoice.id)
    if claim is not None and claim.status in (ClaimStatus.DRAFT, ClaimStatus.SUBMITTED, ClaimStatus.ACCEPTED):
        await uow.claims.set_status(claim.id, ClaimStatus.VOID, uow.clock())
        uow.add(_claim_event(ClaimVoided, claim), aggregate_id=claim.id)
    await uow.invoices.mark_void(invoice.id, keep_paid=keep_paid, at=uow.clock())


async def adopt(uow: BillingWork, admission: Encounter) -> None:
    """Charges that fall within this admission but were billed as visits, because their event was
    applied before billing learnt of the admission (streams are not ordered with each other),
    move onto it: their visit invoices are voided (payments stay there, to be refunded) and the
    charges go on the admission's invoice like any other charge of the stay."""
    strays = await uow.charges.visits_within(admission.patient_id, admission.started_at, admission.ended_at)
    if not strays:
        return
    for invoice_id in sorted({c.invoice_id for c in strays if c.invoice_id is not None}):
        invoice = await uow.invoices.get(invoice_id, lock=True)
        assert invoice is not None
        if invoice.status not in (InvoiceStatus.DRAFT, InvoiceStatus.VOID):
            await _void(uow, invoice, keep_paid=True)
            uow.add(InvoiceVoided(invoice_id=invoice_id, patient_id=invoice.patient_id), aggregate_id=invoice_id)
    ids = [c.id for c in strays]
    await uow.charges.move_to_encounter(ids, admission.id)
    await place(uow, admission, ids, strays[0].currency)


# --- payments ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Money:
    """Money taken at a desk, or refunded."""

    kind: PaymentKind
    invoice_id: uuid.UUID
    amount: Decimal
    currency: str
    method: PaymentMethod

    def fingerprint(self) -> str:
        canonical = json.dumps(
            [self.kind, str(self.invoice_id), str(self.amount.normalize()), self.currency, self.method]
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    replayed: bool


async def take(uow: BillingWork, actor: uuid.UUID, key: str, m: Money) -> Answer:
    """A payment or refund under an idempotency key: the first request with the key does it and
    stores its answer; the same key and request again get that answer; another request under
    the same key is a ``ConflictError``. Concurrent holders of one key wait on its unique row."""
    payments = uow.payments
    if not await payments.claim_key(actor, key, m.fingerprint()):
        stored = await payments.stored_response(actor, key)
        assert stored is not None
        if stored.request_hash != m.fingerprint():
            raise ConflictError("this Idempotency-Key was used for a different request")
        return Answer(stored.status, stored.body, replayed=True)
    invoice = await uow.invoices.get(m.invoice_id, lock=True)
    if invoice is None:
        raise UnknownError("invoice not found")
    paid = invoice.paid
    if m.kind is PaymentKind.PAYMENT:
        if invoice.status in (InvoiceStatus.DRAFT, InvoiceStatus.VOID):
            raise ConflictError(f"a {invoice.status} invoice takes no payments")
        check_payment(m.amount, m.currency, invoice.currency, invoice.issued_share() - paid)
        paid += m.amount
    else:
        check_refund(m.amount, m.currency, invoice.currency, paid)
        paid -= m.amount
    status = invoice.status_after(paid)
    await uow.invoices.set_paid(invoice.id, paid, status, uow.clock())
    payment = await payments.add(
        payment_id=uuid.uuid4(),
        invoice_id=invoice.id,
        patient_id=invoice.patient_id,
        kind=m.kind,
        amount=m.amount,
        currency=m.currency,
        method=m.method,
        created_by=actor,
        at=uow.clock(),
    )
    if m.kind is PaymentKind.PAYMENT:
        event: PaymentReceived | PaymentRefunded = PaymentReceived(
            payment_id=payment.id,
            invoice_id=invoice.id,
            patient_id=invoice.patient_id,
            amount=m.amount,
            currency=m.currency,
            method=m.method.value,
            invoice_status=str(status),
        )
    else:
        event = PaymentRefunded(
            refund_id=payment.id,
            invoice_id=invoice.id,
            patient_id=invoice.patient_id,
            amount=m.amount,
            currency=m.currency,
            method=m.method.value,
            invoice_status=str(status),
        )
    uow.add(event, aggregate_id=invoice.id)
    body = json.dumps(
        {
            **payment_json(payment),
            "invoice_status": str(status),
            "invoice_paid": str(paid),
            "outstanding": str(invoice.issued_share() - paid),
        }
    )
    await payments.store_response(actor, key, 201, body)
    return Answer(201, body, replayed=False)


def payment_json(p: Payment) -> dict[str, str]:
    """A payment or refund as the answer that records it says it."""
    return {
        "id": str(p.id),
        "invoice_id": str(p.invoice_id),
        "kind": p.kind.value,
        "amount": str(p.amount),
        "currency": p.currency,
        "method": p.method.value,
        "created_at": p.created_at.isoformat(),
    }


# --- claims ------------------------------------------------------------------------------------

_CLAIM_EVENTS: dict[ClaimStatus, type[ClaimEvent]] = {
    ClaimStatus.SUBMITTED: ClaimSubmitted,
    ClaimStatus.ACCEPTED: ClaimAccepted,
    ClaimStatus.REJECTED: ClaimRejected,
    ClaimStatus.PAID: ClaimPaid,
}


async def act_on_claim(uow: BillingWork, claim_id: uuid.UUID, action: ClaimAction) -> Claim:
    """Move a claim along draft → submitted → accepted → paid (or rejected); ``InvalidTransitionError`` else."""
    claim = await uow.claims.get(claim_id, lock=True)
    if claim is None:
        raise UnknownError("claim not found")
    after = claim_transition(claim.status, action)
    moved = await uow.claims.set_status(claim_id, after, uow.clock())
    uow.add(_claim_event(_CLAIM_EVENTS[after], moved), aggregate_id=claim_id)
    return moved


# --- the consumers (``his.kernel.consumer``): each applies its event in the consumer's unit of work ---


async def on_coverage_changed(uow: UnitOfWork, env: Envelope, ev: CoverageChanged) -> None:
    await coverage_changed(BillingUnit(uow), env, ev)


async def on_ward_updated(uow: UnitOfWork, env: Envelope, ev: WardUpdated) -> None:
    await ward_updated(BillingUnit(uow), env, ev)


async def on_admitted(uow: UnitOfWork, env: Envelope, ev: PatientAdmitted) -> None:
    await admitted(BillingUnit(uow), env, ev)


async def on_discharged(uow: UnitOfWork, env: Envelope, ev: PatientDischarged) -> None:
    await discharged(BillingUnit(uow), env, ev)


async def on_appointment_completed(uow: UnitOfWork, env: Envelope, ev: AppointmentCompleted) -> None:
    await appointment_completed(BillingUnit(uow), env, ev)


async def on_bed_charge_posted(uow: UnitOfWork, env: Envelope, ev: BedChargePosted) -> None:
    await bed_charge_posted(BillingUnit(uow), env, ev)


async def on_lab_order_resulted(uow: UnitOfWork, env: Envelope, ev: LabResults) -> None:
    await lab_order_resulted(BillingUnit(uow), env, ev)


async def on_stock_consumed(uow: UnitOfWork, env: Envelope, ev: StockConsumed) -> None:
    await stock_consumed(BillingUnit(uow), env, ev)


async def on_appointment_cancelled(uow: UnitOfWork, env: Envelope, ev: AppointmentCancelled) -> None:
    await appointment_cancelled(BillingUnit(uow), env, ev)


async def on_lab_order_cancelled(uow: UnitOfWork, env: Envelope, ev: LabOrderCancelled) -> None:
    await lab_order_cancelled(BillingUnit(uow), env, ev)
