"""Internal HTTP API of the billing service (reached through the gateway).

Every route re-verifies the caller's token (except the payment provider's webhook, which carries
the provider's signature instead) and calls one use case of ``his.billing.accounts.Accounts``,
which decides through ``his.billing.policy``: a patient reads the
invoices of the patient record linked to their own account (another patient's id answers 404)
and pays them online through the payment provider; BILLING records payments taken at a desk;
BILLING and ADMIN see all; other staff are refused (403). Charges, invoices, claims and payments
are a patient's data: every decision on them, allowed or denied, is audited. Money is a decimal
string with its currency.
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from his.billing import domain, handlers
from his.billing.accounts import Accounts
from his.billing.domain import ClaimAction, ClaimStatus, InvoiceStatus, PaymentKind, PaymentMethod, PriceEntry
from his.billing.handlers import Answer
from his.billing.online import IntentView
from his.kernel.params import CalendarDate, Limit
from his.kernel.web import Caller, Moment, errors, provided, public

router = APIRouter(tags=["billing"])
Books = Annotated[Accounts, Depends(provided(Accounts))]
IdempotencyKey = Annotated[
    str | None,
    Header(description="Required: the same key and body answer the same again; another body is a 409"),
]


Category = Literal["consultation", "procedure", "bed", "laboratory", "supplies"]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Amount = Annotated[Decimal, Field(max_digits=12, decimal_places=2, allow_inf_nan=False)]


class PriceLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=3, max_length=80, pattern=r"^[a-z_]+\.[A-Za-z0-9_.\-]+$")
    category: Category
    amount: Amount = Field(ge=0)
    currency: Currency


class NewPriceList(BaseModel):
    model_config = ConfigDict(extra="forbid")
    effective_from: date
    lines: list[PriceLineIn] = Field(min_length=1, max_length=5000)


class MoneyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Amount
    currency: Currency
    method: Literal["cash", "card", "bank_transfer", "online"]


class OnlineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Amount
    currency: Currency


#: What taking money may answer besides its 201: no Idempotency-Key (400), refused (403, 404), the
#: key reused for another request or an invoice that takes no payments (409).
MONEY_ERRORS = errors(400, 403, 404, 409)


def money(x: Decimal | None) -> str | None:
    return None if x is None else str(x)


def quantity(x: Decimal) -> str:
    """A quantity without trailing zeros or an exponent: 3, 2.5, 100."""
    return format(x.normalize(), "f")


def answered(answer: Answer) -> Response:
    """A stored idempotent answer, sent as it was first sent (``Idempotent-Replayed`` on a repeat)."""
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)


class PayerPlan(BaseModel):
    code: str
    title: str
    currency: str
    #: The share the payer covers per category, as a percentage.
    coverage: dict[str, str]
    copay: str | None
    deductible: str | None
    out_of_pocket_cap: str | None
    excluded_categories: list[str]
    excluded_codes: list[str]

    @classmethod
    def of(cls, p: domain.Payer) -> PayerPlan:
        return cls(
            code=p.code,
            title=p.title,
            currency=p.currency,
            coverage={k: str(v) for k, v in p.coverage.items()},
            copay=money(p.copay),
            deductible=money(p.deductible),
            out_of_pocket_cap=money(p.out_of_pocket_cap),
            excluded_categories=list(p.excluded_categories),
            excluded_codes=list(p.excluded_codes),
        )


class PayerPlans(BaseModel):
    items: list[PayerPlan]


class PriceLine(BaseModel):
    code: str
    category: str
    amount: str
    currency: str

    @classmethod
    def of(cls, e: PriceEntry) -> PriceLine:
        return cls(code=e.code, category=e.category, amount=str(e.amount), currency=e.currency)


class PriceList(BaseModel):
    version_id: uuid.UUID
    effective_from: date
    #: The day asked about.
    date: date
    lines: list[PriceLine]


class PriceListCreated(BaseModel):
    version_id: uuid.UUID
    effective_from: date
    #: How many lines it has.
    lines: int


class Charge(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    #: What charged it: appointment, admission, lab_order, stock.
    source: str
    source_id: uuid.UUID
    code: str
    category: str
    quantity: str
    unit_price: str
    amount: str
    currency: str
    service_date: date
    status: str
    invoice_id: uuid.UUID | None

    @classmethod
    def of(cls, c: domain.Charge) -> Charge:
        return cls(
            id=c.id,
            patient_id=c.patient_id,
            source=c.source_kind.value,
            source_id=c.source_id,
            code=c.code,
            category=c.category,
            quantity=quantity(c.quantity),
            unit_price=str(c.unit_price),
            amount=str(c.amount),
            currency=c.currency,
            service_date=c.service_date,
            status=c.status.value,
            invoice_id=c.invoice_id,
        )


class Charges(BaseModel):
    items: list[Charge]


class InvoiceLine(BaseModel):
    """A line: while the invoice is a draft, a charge not yet priced (shares null)."""

    charge_id: uuid.UUID
    code: str
    category: str
    quantity: str
    unit_price: str
    total: str
    insurer_share: str | None
    patient_share: str | None
    excluded: bool | None
    deductible: str | None = None
    copay: str | None = None

    @classmethod
    def charged(cls, c: domain.Charge) -> InvoiceLine:
        """A charge on a draft invoice, not yet priced."""
        return cls(
            charge_id=c.id,
            code=c.code,
            category=c.category,
            quantity=quantity(c.quantity),
            unit_price=str(c.unit_price),
            total=str(c.amount),
            insurer_share=None,
            patient_share=None,
            excluded=None,
        )

    @classmethod
    def of(cls, x: domain.InvoiceLine) -> InvoiceLine:
        return cls(
            charge_id=x.charge_id,
            code=x.code,
            category=x.category,
            quantity=quantity(x.quantity),
            unit_price=str(x.unit_price),
            total=str(x.total),
            insurer_share=str(x.insurer_share),
            patient_share=str(x.patient_share),
            excluded=x.excluded,
            deductible=str(x.deductible),
            copay=str(x.copay),
        )


class Encounter(BaseModel):
    """The visit or stay the invoice bills."""

    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    kind: str
    source_id: uuid.UUID
    started_at: Moment
    ended_at: Moment | None


class Invoice(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    kind: str
    status: InvoiceStatus
    payer: str | None
    currency: str
    service_date: date
    total: str | None
    insurer_share: str | None
    patient_share: str | None
    paid: str | None
    outstanding: str | None
    #: The invoice this one corrects, if any.
    replaces: uuid.UUID | None
    encounter: Encounter
    lines: list[InvoiceLine]
    issued_at: Moment | None
    voided_at: Moment | None

    @classmethod
    def of(cls, d: domain.InvoiceDetail) -> Invoice:
        inv = d.invoice
        if inv.status is InvoiceStatus.DRAFT:
            lines = [InvoiceLine.charged(c) for c in d.charges]
            total = money(sum((c.amount for c in d.charges), Decimal("0.00")))
        else:
            lines = [InvoiceLine.of(x) for x in d.lines]
            total = money(inv.total)
        return cls(
            id=inv.id,
            patient_id=inv.patient_id,
            kind=inv.kind.value,
            status=inv.status,
            payer=inv.payer,
            currency=inv.currency,
            service_date=inv.service_date,
            total=total,
            insurer_share=money(inv.insurer_share),
            patient_share=money(inv.patient_share),
            paid=money(inv.paid),
            outstanding=money(inv.outstanding),
            replaces=inv.replaces,
            encounter=Encounter.model_validate(d.encounter),
            lines=lines,
            issued_at=inv.issued_at,
            voided_at=inv.voided_at,
        )


class Invoices(BaseModel):
    items: list[Invoice]


class Payment(BaseModel):
    id: uuid.UUID
    invoice_id: uuid.UUID
    #: payment or refund.
    kind: str
    amount: str
    currency: str
    method: str
    created_at: Moment

    @classmethod
    def of(cls, p: domain.Payment) -> Payment:
        return cls(
            id=p.id,
            invoice_id=p.invoice_id,
            kind=p.kind.value,
            amount=str(p.amount),
            currency=p.currency,
            method=p.method.value,
            created_at=p.created_at,
        )


class Payments(BaseModel):
    items: list[Payment]


class OnlinePayment(BaseModel):
    """A payment opened with the provider: pay at ``checkout_url``; ``succeeded`` once confirmed."""

    id: uuid.UUID
    invoice_id: uuid.UUID
    status: str
    amount: str
    currency: str
    provider: str
    #: The embedded TEST provider: no money moves.
    test_mode: bool
    checkout_url: str
    created_at: Moment
    confirmed_at: Moment | None

    @classmethod
    def of(cls, v: IntentView) -> OnlinePayment:
        i = v.intent
        return cls(
            id=i.id,
            invoice_id=i.invoice_id,
            status=i.status.value,
            amount=str(i.amount),
            currency=i.currency,
            provider=i.provider,
            test_mode=v.test_mode,
            checkout_url=i.checkout_url,
            created_at=i.created_at,
            confirmed_at=i.confirmed_at,
        )


class OnlinePayments(BaseModel):
    items: list[OnlinePayment]


class Confirmed(BaseModel):
    status: Literal["applied", "already_applied"]
    event_id: str


class Claim(BaseModel):
    id: uuid.UUID
    invoice_id: uuid.UUID
    patient_id: uuid.UUID
    payer: str
    amount: str
    currency: str
    status: ClaimStatus
    created_at: Moment
    updated_at: Moment

    @classmethod
    def of(cls, c: domain.Claim) -> Claim:
        return cls(
            id=c.id,
            invoice_id=c.invoice_id,
            patient_id=c.patient_id,
            payer=c.payer,
            amount=str(c.amount),
            currency=c.currency,
            status=c.status,
            created_at=c.created_at,
            updated_at=c.updated_at,
        )


class Claims(BaseModel):
    items: list[Claim]


@router.get("/payers", openapi_extra=public("/api/payers"))
async def payers(who: Caller, books: Books) -> PayerPlans:
    """Payer plans: coverage percentage per category, co-pay, deductible, cap, exclusions (any signed-in)."""
    return PayerPlans(items=[PayerPlan.of(p) for p in await books.plans()])


@router.get("/price-list", responses=errors(404), openapi_extra=public("/api/price-list"))
async def price_list(
    who: Caller, books: Books, day: Annotated[CalendarDate | None, Query(alias="date")] = None
) -> PriceList:
    """The price list valid on ``date`` (default today, hospital time): the latest version in
    effect (any signed-in user)."""
    found = await books.price_list(day)
    return PriceList(
        version_id=found.version.id,
        effective_from=found.version.effective_from,
        date=found.on,
        lines=[PriceLine.of(x) for x in found.lines],
    )


@router.post("/price-list", status_code=201, responses=errors(403, 409), openapi_extra=public("/api/price-list"))
async def new_price_list(body: NewPriceList, who: Caller, books: Books) -> PriceListCreated:
    """A new price list version (ADMIN): the complete list, in effect from ``effective_from``
    (today or later; prices never change retroactively). 409 if a version starts that day."""
    lines = [PriceEntry(x.code, x.category, x.amount, x.currency) for x in body.lines]
    vid = await books.new_price_list(who, body.effective_from, lines)
    return PriceListCreated(version_id=vid, effective_from=body.effective_from, lines=len(lines))


@router.get("/charges", responses=errors(403, 404), openapi_extra=public("/api/charges"))
async def charges(patient_id: uuid.UUID, who: Caller, books: Books, limit: Limit = 200) -> Charges:
    """A patient's charges, latest first, with their status and invoice (BILLING, ADMIN)."""
    return Charges(items=[Charge.of(x) for x in await books.charges(who, patient_id, limit)])


@router.get("/invoices", responses=errors(403, 404), openapi_extra=public("/api/invoices"))
async def invoices(
    who: Caller,
    books: Books,
    patient_id: uuid.UUID | None = None,
    status: InvoiceStatus | None = None,
    limit: Limit = 50,
) -> Invoices:
    """Invoices, latest first: of one patient (the patient themself, BILLING, ADMIN); a patient
    without ``patient_id`` gets their own; staff without it get everyone's."""
    return Invoices(items=[Invoice.of(x) for x in await books.invoices(who, patient_id, status, limit)])


@router.get("/invoices/{invoice_id}", responses=errors(403, 404), openapi_extra=public("/api/invoices/{id}"))
async def invoice(invoice_id: uuid.UUID, who: Caller, books: Books) -> Invoice:
    """One invoice with its lines, shares, payer and encounter (its patient, BILLING, ADMIN)."""
    return Invoice.of(await books.invoice(who, invoice_id))


@router.get(
    "/invoices/{invoice_id}/payments", responses=errors(403, 404), openapi_extra=public("/api/invoices/{id}/payments")
)
async def payments(invoice_id: uuid.UUID, who: Caller, books: Books) -> Payments:
    """Payments and refunds of an invoice (its patient, BILLING, ADMIN)."""
    return Payments(items=[Payment.of(x) for x in await books.payments(who, invoice_id)])


@router.post(
    "/invoices/{invoice_id}/payments",
    status_code=201,
    response_model=Payment,
    responses=errors(400, 403, 404, 409),
    openapi_extra=public("/api/invoices/{id}/payments"),
)
async def pay(
    invoice_id: uuid.UUID, body: MoneyIn, who: Caller, books: Books, idempotency_key: IdempotencyKey = None
) -> Response:
    """Record money taken at a desk for (part of) the patient's share (BILLING): cash, card at
    the desk's terminal or bank transfer. Needs an ``Idempotency-Key``: the same key and body
    answer the same again; another body → 409. The amount is > 0, in the invoice currency, at
    most the outstanding share (else 422). Patients pay online (``/online-payments``)."""
    m = handlers.Money(PaymentKind.PAYMENT, invoice_id, body.amount, body.currency, PaymentMethod(body.method))
    return answered(await books.take(who, idempotency_key, m))


@router.post(
    "/invoices/{invoice_id}/online-payments",
    status_code=201,
    response_model=OnlinePayment,
    responses=MONEY_ERRORS,
    openapi_extra=public("/api/invoices/{id}/online-payments"),
)
async def pay_online(
    invoice_id: uuid.UUID, body: OnlineIn, who: Caller, books: Books, idempotency_key: IdempotencyKey = None
) -> Response:
    """Open an online payment of (part of) the patient's share with the payment provider (the
    patient themself), with an ``Idempotency-Key``. Answers the pending payment and the
    provider's ``checkout_url``, where the patient pays; the invoice is paid only when the
    provider confirms (``test_mode: true``: the embedded TEST provider, no money moves)."""
    return answered(await books.pay_online(who, idempotency_key, invoice_id, body.amount, body.currency))


@router.get(
    "/invoices/{invoice_id}/online-payments",
    responses=errors(403, 404),
    openapi_extra=public("/api/invoices/{id}/online-payments"),
)
async def online_payments(invoice_id: uuid.UUID, who: Caller, books: Books) -> OnlinePayments:
    """The online payments opened on an invoice and whether the provider confirmed them (its
    patient, BILLING, ADMIN)."""
    return OnlinePayments(items=[OnlinePayment.of(x) for x in await books.online_payments(who, invoice_id)])


@router.post(
    "/payments/webhooks/{provider_name}",
    responses=errors(401, 404, 409),
    openapi_extra=public("/api/payments/webhooks/{provider}", without_token=True),
)
async def provider_webhook(provider_name: str, request: Request, books: Books) -> Confirmed:
    """The payment provider's confirmation that it received a payment (the provider, not a
    user: its ``Payment-Signature`` is verified instead of a token). A forged, altered or
    stale signature is 401; the same signed delivery again is 409; the same event signed
    afresh (a provider's retry) answers ``already_applied`` and changes nothing."""
    applied, event_id = await books.confirmed(provider_name, await request.body(), request.headers)
    return Confirmed(status="applied" if applied else "already_applied", event_id=event_id)


@router.post(
    "/invoices/{invoice_id}/refunds",
    status_code=201,
    response_model=Payment,
    responses=errors(400, 403, 404, 409),
    openapi_extra=public("/api/invoices/{id}/refunds"),
)
async def refund(
    invoice_id: uuid.UUID, body: MoneyIn, who: Caller, books: Books, idempotency_key: IdempotencyKey = None
) -> Response:
    """Refund money paid on an invoice (BILLING, ADMIN), at most what was paid; with an ``Idempotency-Key``."""
    m = handlers.Money(PaymentKind.REFUND, invoice_id, body.amount, body.currency, PaymentMethod(body.method))
    return answered(await books.take(who, idempotency_key, m))


@router.get("/claims", responses=errors(403), openapi_extra=public("/api/claims"))
async def claims(
    who: Caller,
    books: Books,
    status: ClaimStatus | None = None,
    payer: Annotated[str | None, Query(max_length=32)] = None,
    limit: Limit = 50,
) -> Claims:
    """Claims for insurers' shares, latest first (BILLING, ADMIN); of one status, of one payer plan."""
    return Claims(items=[Claim.of(x) for x in await books.claims(who, status, payer, limit)])


@router.get("/claims/{claim_id}", responses=errors(403, 404), openapi_extra=public("/api/claims/{id}"))
async def claim(claim_id: uuid.UUID, who: Caller, books: Books) -> Claim:
    """One claim (BILLING, ADMIN)."""
    return Claim.of(await books.claim(who, claim_id))


@router.post(
    "/claims/{claim_id}/{action}", responses=errors(403, 404, 409), openapi_extra=public("/api/claims/{id}/{action}")
)
async def claim_step(claim_id: uuid.UUID, action: ClaimAction, who: Caller, books: Books) -> Claim:
    """Submit, accept, reject or mark paid a claim (BILLING, ADMIN); an invalid transition is 409."""
    return Claim.of(await books.claim_step(who, claim_id, action))
