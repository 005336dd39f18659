"""Billing rules: payer plans, invoice arithmetic, invoice and claim states, and the entities
the store returns (encounters, charges, invoices and their lines, claims, payments, online
payments, price lists, payers). Pure, no IO.

Money is ``Decimal`` throughout, in the currency's minor unit of 0.01. The rounding rule (see
docs/adr/0010-billing.md) is the whole of it:

1. A line's total is quantity × unit price, rounded to 0.01 half-up.
2. Per line, in the order the lines are given: an excluded line is the patient's in full. A
   covered line first pays what is left of the year's deductible (patient), then what is left of
   the invoice's co-pay (patient); of the rest the insurer pays the plan's percentage, rounded to
   0.01 half-up, and the patient the remainder.
3. Out-of-pocket cap: when the patient's share of covered amounts in the plan year would pass the
   cap, the insurer pays the excess of that line instead. Excluded lines never count toward the
   deductible or the cap, and the cap never lowers them.
4. The patient's share of a line is always its total minus the insurer's share, so the two add up
   exactly; an invoice's figures are sums of its lines' figures.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from his.kernel.transitions import Lifecycle

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
HUNDRED = Decimal(100)

#: What a charge is for; plans set a coverage percentage per category.
CATEGORIES = ("consultation", "procedure", "bed", "laboratory", "supplies")
#: The plan of a patient without (known) coverage.
SELF_PAY = "SELF"


def cents(amount: Decimal) -> Decimal:
    """``amount`` rounded to 0.01, half away from zero (the only rounding billing does)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


class BillingError(ValueError):
    """A billing rule was broken; the message says which."""


@dataclass(frozen=True)
class Plan:
    """A payer plan as data. Percentages are what the insurer pays of a covered amount."""

    code: str
    coverage: dict[str, Decimal]
    copay: Decimal = ZERO
    deductible: Decimal = ZERO
    #: The patient's yearly share of covered amounts never exceeds this (None: no cap).
    out_of_pocket_cap: Decimal | None = None
    excluded_categories: frozenset[str] = frozenset()
    excluded_codes: frozenset[str] = frozenset()
    currency: str = "TRY"

    def excludes(self, code: str, category: str) -> bool:
        return category in self.excluded_categories or code in self.excluded_codes

    def percentage(self, category: str) -> Decimal:
        return self.coverage.get(category, ZERO)


@dataclass(frozen=True)
class Line:
    """A charge to price: ``quantity`` × ``unit_price`` of ``code`` in ``category``."""

    code: str
    category: str
    quantity: Decimal
    unit_price: Decimal

    @property
    def total(self) -> Decimal:
        return cents(self.quantity * self.unit_price)


@dataclass(frozen=True)
class Accumulator:
    """A patient's year under one plan: deductible met so far, share of covered amounts paid."""

    deductible_used: Decimal = ZERO
    out_of_pocket: Decimal = ZERO


@dataclass(frozen=True)
class PricedLine:
    line: Line
    total: Decimal
    insurer_share: Decimal
    patient_share: Decimal
    excluded: bool
    #: Parts of the patient's share, for the invoice's reader.
    deductible: Decimal = ZERO
    copay: Decimal = ZERO


@dataclass(frozen=True)
class Priced:
    lines: list[PricedLine]
    #: The accumulator after this invoice (what issuing it adds to the patient's year).
    after: Accumulator
    before: Accumulator = field(default_factory=Accumulator)

    @property
    def total(self) -> Decimal:
        return sum((p.total for p in self.lines), ZERO)

    @property
    def insurer_share(self) -> Decimal:
        return sum((p.insurer_share for p in self.lines), ZERO)

    @property
    def patient_share(self) -> Decimal:
        return sum((p.patient_share for p in self.lines), ZERO)

    @property
    def deductible_applied(self) -> Decimal:
        return self.after.deductible_used - self.before.deductible_used

    @property
    def out_of_pocket_applied(self) -> Decimal:
        return self.after.out_of_pocket - self.before.out_of_pocket


def price(plan: Plan, lines: Sequence[Line], year: Accumulator) -> Priced:
    """Split each line between insurer and patient under ``plan``, given the patient's ``year`` so far."""
    if any(p < ZERO for p in (plan.copay, plan.deductible)) or (
        plan.out_of_pocket_cap is not None and plan.out_of_pocket_cap < ZERO
    ):
        raise BillingError("plan amounts cannot be negative")
    acc = year
    copay_left = plan.copay
    out: list[PricedLine] = []
    for line in lines:
        if line.quantity <= 0 or line.unit_price < 0:
            raise BillingError("a line needs a positive quantity and a price of at least zero")
        total = line.total
        if plan.excludes(line.code, line.category):
            out.append(PricedLine(line, total, ZERO, total, excluded=True))
            continue
        deductible = min(total, max(plan.deductible - acc.deductible_used, ZERO))
        copay = min(total - deductible, copay_left)
        copay_left -= copay
        rest = total - deductible - copay
        pct = min(max(plan.percentage(line.category), ZERO), HUNDRED)
        insurer = cents(rest * pct / HUNDRED)
        patient = total - insurer
        if plan.out_of_pocket_cap is not None:
            room = max(plan.out_of_pocket_cap - acc.out_of_pocket, ZERO)
            if patient > room:
                insurer += patient - room
                patient = room
        acc = Accumulator(acc.deductible_used + deductible, acc.out_of_pocket + patient)
        out.append(PricedLine(line, total, insurer, patient, excluded=False, deductible=deductible, copay=copay))
    return Priced(out, after=acc, before=year)


def unpriced(year: Accumulator, deductible_applied: Decimal, out_of_pocket_applied: Decimal) -> Accumulator:
    """The accumulator with an invoice's contribution taken back out (the invoice was voided)."""
    return replace(
        year,
        deductible_used=max(year.deductible_used - deductible_applied, ZERO),
        out_of_pocket=max(year.out_of_pocket - out_of_pocket_applied, ZERO),
    )


class InvoiceStatus(StrEnum):
    #: An admission's invoice collecting charges until discharge: not yet priced or payable.
    DRAFT = "draft"
    OPEN = "open"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    VOID = "void"


def payment_status(patient_share: Decimal, paid: Decimal) -> InvoiceStatus:
    """An issued invoice's status from what the patient owes and has paid (net of refunds)."""
    if paid >= patient_share:
        return InvoiceStatus.PAID
    if paid > ZERO:
        return InvoiceStatus.PARTIALLY_PAID
    return InvoiceStatus.OPEN


def check_money(amount: Decimal, currency: str, invoice_currency: str, limit: Decimal, what: str) -> Decimal:
    """An amount of money moved on an invoice, or ``BillingError``: positive, whole cents, in
    the invoice's currency and at most ``limit`` (``what`` names that limit in the message)."""
    if not amount.is_finite() or amount <= ZERO:
        raise BillingError("amount must be greater than zero")
    if amount != cents(amount):
        raise BillingError("amount has at most two decimal places")
    if currency != invoice_currency:
        raise BillingError(f"the invoice is in {invoice_currency}")
    if amount > limit:
        raise BillingError(f"amount exceeds {what} ({limit})")
    return amount


def check_payment(amount: Decimal, currency: str, invoice_currency: str, outstanding: Decimal) -> Decimal:
    """A payment: at most what the patient still owes."""
    return check_money(amount, currency, invoice_currency, outstanding, "the outstanding patient share")


def check_refund(amount: Decimal, currency: str, invoice_currency: str, paid: Decimal) -> Decimal:
    """A refund: at most what was paid."""
    return check_money(amount, currency, invoice_currency, paid, "what was paid")


class ClaimStatus(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    PAID = "paid"
    #: The claimed invoice was voided (a cancellation took charges off it).
    VOID = "void"


class ClaimAction(StrEnum):
    SUBMIT = "submit"
    ACCEPT = "accept"
    REJECT = "reject"
    PAY = "pay"


class DuplicateVersionError(Exception):
    """A price list version with this effective date exists already (its unique key)."""


class InvalidTransitionError(ValueError):
    """The claim is not in a state that allows this action."""


#: A claim's lifecycle: ``claim_transition(status, action)`` is the next status.
claim_transition: Lifecycle[ClaimStatus, ClaimAction] = Lifecycle(
    {
        (ClaimStatus.DRAFT, ClaimAction.SUBMIT): ClaimStatus.SUBMITTED,
        (ClaimStatus.SUBMITTED, ClaimAction.ACCEPT): ClaimStatus.ACCEPTED,
        (ClaimStatus.SUBMITTED, ClaimAction.REJECT): ClaimStatus.REJECTED,
        (ClaimStatus.ACCEPTED, ClaimAction.PAY): ClaimStatus.PAID,
    },
    refuse=lambda status, action: InvalidTransitionError(f"a {status.value} claim cannot take '{action.value}'"),
)


class UnknownPayerError(BillingError):
    """A payer code billing has no plan for: never billed as self-pay in its place."""

    def __init__(self, payer: str, known: list[str]) -> None:
        super().__init__(f"payer {payer!r} has no plan in billing (plans: {', '.join(known)})")
        self.payer, self.known = payer, known


def plan_for(payer: str | None, plans: dict[str, Plan]) -> Plan:
    """The plan of a payer code; no payer is self-pay. A payer billing has no plan for is an
    ``UnknownPayerError``: pricing it as self-pay would bill the patient for the insurer's share."""
    if payer is None:
        return plans[SELF_PAY]
    if payer not in plans:
        raise UnknownPayerError(payer, sorted(plans))
    return plans[payer]


def billable_currencies(plans: dict[str, Plan]) -> list[str]:
    """The currencies billing invoices in: those of its payer plans (a plan's co-pay, deductible
    and cap are amounts in its currency, so an invoice is priced only under a plan of its own)."""
    return sorted({p.currency for p in plans.values()})


# --- entities ----------------------------------------------------------------------------------
#
# Money is a ``Decimal`` of 0.01 next to the currency it is in.


@dataclass(frozen=True)
class Payer:
    """A payer plan as billing keeps it: its title, its terms and its exclusions (in the order
    they are kept). ``plan`` is what pricing uses."""

    code: str
    title: str
    currency: str
    #: The percentage the payer covers, per category.
    coverage: dict[str, Decimal]
    copay: Decimal
    deductible: Decimal
    out_of_pocket_cap: Decimal | None
    excluded_categories: tuple[str, ...]
    excluded_codes: tuple[str, ...]

    @property
    def plan(self) -> Plan:
        return Plan(
            self.code,
            self.coverage,
            copay=self.copay,
            deductible=self.deductible,
            out_of_pocket_cap=self.out_of_pocket_cap,
            excluded_categories=frozenset(self.excluded_categories),
            excluded_codes=frozenset(self.excluded_codes),
            currency=self.currency,
        )


@dataclass(frozen=True)
class PriceListVersion:
    """A version of the price list, in effect from ``effective_from`` until the next one."""

    id: uuid.UUID
    effective_from: date
    created_by: uuid.UUID | None
    created_at: datetime


@dataclass(frozen=True)
class PriceEntry:
    """The price of one code in a price list version."""

    code: str
    category: str
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class PriceList:
    """The price list in effect on ``on``: its version and its entries, by code."""

    on: date
    version: PriceListVersion
    lines: tuple[PriceEntry, ...]


@dataclass(frozen=True)
class WardTariff:
    """A ward's tariff as admissions corrected it at ``changed_at``."""

    ward_id: uuid.UUID
    ward_type: str
    daily_rate: Decimal
    currency: str
    changed_at: datetime


class EncounterKind(StrEnum):
    """What an invoice bills: a stay, or the visit of one appointment, lab order or use of supplies."""

    ADMISSION = "admission"
    APPOINTMENT = "appointment"
    LAB_ORDER = "lab_order"
    SUPPLIES = "supplies"


class EncounterStatus(StrEnum):
    OPEN = "open"
    #: A discharged admission whose every bed night arrived.
    CLOSED = "closed"


@dataclass(frozen=True)
class Encounter:
    """A visit or a stay, of one source (``source_id``: the admission, appointment, lab order or
    consumption); its first date is its invoices' service date, plan and plan year."""

    id: uuid.UUID
    patient_id: uuid.UUID
    kind: EncounterKind
    source_id: uuid.UUID
    started_at: datetime
    ended_at: datetime | None
    #: An admission's bed nights, as its discharge counted them.
    expected_nights: int | None
    status: EncounterStatus


class SourceKind(StrEnum):
    """What charged: a completed appointment, a bed night, a resulted lab order, stock used."""

    APPOINTMENT = "appointment"
    BED_CHARGE = "bed_charge"
    LAB_ORDER = "lab_order"
    STOCK = "stock"


class ChargeStatus(StrEnum):
    ACTIVE = "active"
    #: Its source was cancelled.
    VOID = "void"


@dataclass(frozen=True)
class Charge:
    """One line a source charged: ``quantity`` × ``unit_price`` of ``code``, ``amount`` in all."""

    id: uuid.UUID
    patient_id: uuid.UUID
    source_kind: SourceKind
    source_id: uuid.UUID
    #: Which of its source's lines it is (a source charges each line once).
    line_key: str
    code: str
    category: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    currency: str
    service_at: datetime
    service_date: date
    status: ChargeStatus
    encounter_id: uuid.UUID | None
    invoice_id: uuid.UUID | None


class InvoiceKind(StrEnum):
    VISIT = "visit"
    ADMISSION = "admission"
    #: Charges that arrived after their encounter's invoice was issued.
    SUPPLEMENTARY = "supplementary"


@dataclass(frozen=True)
class Invoice:
    """An invoice of one encounter. While a draft it is not priced: payer, plan year and shares
    are None until it is issued."""

    id: uuid.UUID
    patient_id: uuid.UUID
    encounter_id: uuid.UUID
    kind: InvoiceKind
    #: The voided invoice this one reissues, if any.
    replaces: uuid.UUID | None
    status: InvoiceStatus
    currency: str
    service_date: date
    payer: str | None
    plan_year: int | None
    total: Decimal | None
    insurer_share: Decimal | None
    patient_share: Decimal | None
    #: Paid by the patient, net of refunds.
    paid: Decimal
    #: What issuing it added to the patient's year (taken back out when it is voided).
    deductible_applied: Decimal
    out_of_pocket_applied: Decimal
    issued_at: datetime | None
    voided_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def outstanding(self) -> Decimal | None:
        """What the patient still owes: their share less what was paid (None while a draft)."""
        return self.patient_share - self.paid if self.patient_share is not None else None

    def issued_share(self) -> Decimal:
        """The patient's share of an issued invoice (money moves only on one that was priced)."""
        assert self.patient_share is not None, f"invoice {self.id} was never issued"
        return self.patient_share

    def status_after(self, paid: Decimal) -> InvoiceStatus:
        """Its status once ``paid`` (net of refunds) is paid on it: a void invoice stays void."""
        return self.status if self.status is InvoiceStatus.VOID else payment_status(self.issued_share(), paid)


@dataclass(frozen=True)
class InvoiceLine:
    """A charge as priced on an issued invoice: its shares, and the deductible and co-pay in the
    patient's share."""

    invoice_id: uuid.UUID
    position: int
    charge_id: uuid.UUID
    code: str
    category: str
    quantity: Decimal
    unit_price: Decimal
    total: Decimal
    insurer_share: Decimal
    patient_share: Decimal
    excluded: bool
    deductible: Decimal
    copay: Decimal


@dataclass(frozen=True)
class InvoiceDetail:
    """An invoice with its encounter and what it bills: while a draft, its active charges (not yet
    priced); once issued, its priced lines."""

    invoice: Invoice
    encounter: Encounter
    charges: tuple[Charge, ...] = ()
    lines: tuple[InvoiceLine, ...] = ()


@dataclass(frozen=True)
class Claim:
    """A claim for the insurer's share of an issued invoice."""

    id: uuid.UUID
    invoice_id: uuid.UUID
    patient_id: uuid.UUID
    payer: str
    amount: Decimal
    currency: str
    status: ClaimStatus
    created_at: datetime
    updated_at: datetime


class PaymentKind(StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"


class PaymentMethod(StrEnum):
    CASH = "cash"
    #: At a desk's card terminal.
    CARD = "card"
    BANK_TRANSFER = "bank_transfer"
    #: Confirmed by the payment provider.
    ONLINE = "online"


@dataclass(frozen=True)
class Payment:
    """Money received on an invoice (``kind`` payment) or given back (refund). An online payment
    names its provider and the intent it confirmed."""

    id: uuid.UUID
    invoice_id: uuid.UUID
    patient_id: uuid.UUID
    kind: PaymentKind
    amount: Decimal
    currency: str
    method: PaymentMethod
    created_by: uuid.UUID
    created_at: datetime
    provider: str | None
    intent_id: uuid.UUID | None


class IntentStatus(StrEnum):
    PENDING = "pending"
    #: The provider confirmed it: its payment is recorded.
    SUCCEEDED = "succeeded"


@dataclass(frozen=True)
class PaymentIntent:
    """An online payment a patient opened with a payment provider: ``provider_ref`` is its
    reference there, ``checkout_url`` where it is paid."""

    id: uuid.UUID
    invoice_id: uuid.UUID
    patient_id: uuid.UUID
    amount: Decimal
    currency: str
    provider: str
    provider_ref: str
    checkout_url: str
    status: IntentStatus
    created_by: uuid.UUID
    created_at: datetime
    confirmed_at: datetime | None


@dataclass(frozen=True)
class StoredResponse:
    """The answer kept under an idempotency key, with the fingerprint of the request it answered."""

    request_hash: str
    status: int
    body: str
