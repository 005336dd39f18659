"""Use cases of online payments: a patient opens a payment with the payment provider; only the
provider's confirmation records the money as received (``his.billing.payments``).

Opening is idempotent like a desk payment: the ``Idempotency-Key`` is unique per caller, the
first request stores its answer and the same key and request get it again (another request under
the key: 409). The intent's id is derived from the caller and the key, and is the provider's own
idempotency key, so a retry after a lost answer opens nothing new at the provider either. The
provider is called before billing's transaction opens (no transaction waits on the network).

A confirmation is applied once: a signed delivery seen before is a replay (refused); an event
the provider sends again (signed afresh) finds its event id recorded and changes nothing; an
intent makes at most one payment (``payment.intent_id`` is unique). The amount and currency
must be the intent's. Money received is recorded even when it now exceeds what is owed (a desk
payment came first, or the invoice was voided meanwhile): it was taken, and is refunded from
there.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal

from his.billing.domain import (
    BillingError,
    IntentStatus,
    Invoice,
    InvoiceStatus,
    PaymentIntent,
    PaymentKind,
    PaymentMethod,
    check_payment,
)
from his.billing.handlers import Answer, ConflictError, UnknownError
from his.billing.payments import Checkout, Confirmation, PaymentProvider
from his.billing.ports import BillingUnits, BillingWork
from his.events.billing import PaymentReceived

#: Namespace of intent ids (UUIDv5 of the caller and their idempotency key).
INTENT_NAMESPACE = uuid.UUID("6f1c2a5e-93b4-4d0e-9a55-0c3f6a1b2d70")


class ReplayError(Exception):
    """This signed confirmation was delivered before: a replay, refused."""


class MismatchError(BillingError):
    """The confirmation's amount or currency is not the intent's."""


@dataclass(frozen=True)
class OnlinePayment:
    invoice_id: uuid.UUID
    amount: Decimal
    currency: str
    provider: str

    def fingerprint(self) -> str:
        canonical = json.dumps(
            ["online", str(self.invoice_id), str(self.amount.normalize()), self.currency, self.provider]
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def intent_id(actor: uuid.UUID, key: str) -> uuid.UUID:
    return uuid.uuid5(INTENT_NAMESPACE, f"{actor}\n{key}")


@dataclass(frozen=True)
class IntentView:
    """An online payment opened on an invoice, and whether its provider is in test mode (no money moves)."""

    intent: PaymentIntent
    test_mode: bool


def _payable(invoice: Invoice | None, p: OnlinePayment) -> Invoice:
    if invoice is None:
        raise UnknownError("invoice not found")
    if invoice.status in (InvoiceStatus.DRAFT, InvoiceStatus.VOID):
        raise ConflictError(f"a {invoice.status} invoice takes no payments")
    check_payment(p.amount, p.currency, invoice.currency, invoice.issued_share() - invoice.paid)
    return invoice


async def _stored(uow: BillingWork, actor: uuid.UUID, key: str, p: OnlinePayment) -> Answer | None:
    stored = await uow.payments.stored_response(actor, key)
    if stored is None:
        return None
    if stored.request_hash != p.fingerprint():
        raise ConflictError("this Idempotency-Key was used for a different request")
    return Answer(stored.status, stored.body, replayed=True)


async def replayed_or_payable(units: BillingUnits, actor: uuid.UUID, key: str, p: OnlinePayment) -> Answer | None:
    """The stored answer when the key was used before; else None once the invoice can take the
    payment. ``BillingError`` (422) for an amount that cannot be paid, ``ConflictError`` (409)
    for a key reused or an invoice that takes no payments."""
    async with units.read() as uow:
        if (answer := await _stored(uow, actor, key, p)) is not None:
            return answer
        _payable(await uow.invoices.get(p.invoice_id), p)
    return None


async def checkout(provider: PaymentProvider, actor: uuid.UUID, key: str, p: OnlinePayment) -> Checkout:
    """Open the payment with the provider (before any transaction: it is a network call)."""
    try:
        return await provider.start(intent_id(actor, key), p.amount, p.currency)
    except ValueError as exc:  # the provider has this intent with another amount: the key was reused
        raise ConflictError(str(exc)) from None


async def record_intent(
    uow: BillingWork, actor: uuid.UUID, key: str, p: OnlinePayment, opened: Checkout
) -> tuple[Answer, uuid.UUID | None]:
    """Record the opened payment and its answer under the idempotency key: the answer, and the
    invoice's patient (None when a concurrent request with the same key got there first: its
    answer is replayed)."""
    if not await uow.payments.claim_key(actor, key, p.fingerprint()):
        answer = await _stored(uow, actor, key, p)
        assert answer is not None
        return answer, None
    invoice = _payable(await uow.invoices.get(p.invoice_id, lock=True), p)
    intent = await uow.intents.add(
        intent_id=intent_id(actor, key),
        invoice_id=p.invoice_id,
        patient_id=invoice.patient_id,
        amount=p.amount,
        currency=p.currency,
        provider=opened.provider,
        provider_ref=opened.reference,
        checkout_url=opened.url,
        created_by=actor,
        at=uow.clock(),
    )
    body = json.dumps(intent_json(intent, test_mode=opened.test_mode))
    await uow.payments.store_response(actor, key, 201, body)
    return Answer(201, body, replayed=False), invoice.patient_id


async def confirm(uow: BillingWork, c: Confirmation) -> uuid.UUID | None:
    """Apply a provider's verified confirmation: record the payment once. The patient paid for
    when it was applied now, None if this event was applied before. ``ReplayError``,
    ``UnknownError`` (no intent with this reference), ``MismatchError``."""
    if not await uow.intents.record_delivery(c.provider, c.delivery, uow.clock()):
        raise ReplayError("this confirmation was delivered before")
    intent = await uow.intents.by_reference(c.provider, c.reference)
    if intent is None:
        raise UnknownError("no payment was opened with this reference")
    if (c.amount, c.currency) != (intent.amount, intent.currency):
        raise MismatchError(f"the payment was opened for {intent.amount} {intent.currency}")
    if not await uow.intents.record_event(c.provider, c.event_id, intent.id):
        return None
    if intent.status is IntentStatus.SUCCEEDED:  # confirmed before under another event id
        return None
    invoice = await uow.invoices.get(intent.invoice_id, lock=True)
    assert invoice is not None
    paid = invoice.paid + c.amount
    status = invoice.status_after(paid)
    now = uow.clock()
    await uow.invoices.set_paid(invoice.id, paid, status, now)
    payment = await uow.payments.add(
        payment_id=uuid.uuid4(),
        invoice_id=invoice.id,
        patient_id=invoice.patient_id,
        kind=PaymentKind.PAYMENT,
        amount=c.amount,
        currency=c.currency,
        method=PaymentMethod.ONLINE,
        created_by=intent.created_by,
        provider=c.provider,
        intent_id=intent.id,
        at=now,
    )
    await uow.intents.mark_succeeded(intent.id, now)
    uow.add(
        PaymentReceived(
            payment_id=payment.id,
            invoice_id=invoice.id,
            patient_id=invoice.patient_id,
            amount=c.amount,
            currency=c.currency,
            method=PaymentMethod.ONLINE.value,
            invoice_status=str(status),
        ),
        aggregate_id=invoice.id,
    )
    return invoice.patient_id


def intent_json(intent: PaymentIntent, *, test_mode: bool) -> dict[str, str | bool | None]:
    """An online payment as the answer that opened it says it."""
    return {
        "id": str(intent.id),
        "invoice_id": str(intent.invoice_id),
        "status": intent.status.value,
        "amount": str(intent.amount),
        "currency": intent.currency,
        "provider": intent.provider,
        "test_mode": test_mode,
        "checkout_url": intent.checkout_url,
        "created_at": intent.created_at.isoformat(),
        "confirmed_at": intent.confirmed_at.isoformat() if intent.confirmed_at else None,
    }
