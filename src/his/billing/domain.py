"""Billing rules: payer plans, invoice arithmetic, invoice and claim states. Pure, no IO.

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

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
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
