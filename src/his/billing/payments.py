"""Payments through a payment provider: the port, and how a provider's confirmation is checked.

A patient pays online, never by telling billing they paid: billing opens a payment with the
provider (``start``: an intent of an amount on an invoice), the patient completes the provider's
checkout, and the provider confirms to billing with a signed message, its webhook. That
confirmation is what marks money as received (``his.billing.online.confirm``). Staff record money
taken at a desk themselves (``POST /invoices/{id}/payments``, BILLING).

A confirmation is a JSON body signed the way the common providers sign their webhooks:

    Payment-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

The secret is shared with the provider and kept under the data directory's secrets
(``HIS_PAYMENT_WEBHOOK_SECRET``). Billing refuses a body whose signature does not verify (forged
or altered: 401), one signed more than ``TOLERANCE`` seconds away from now (stale: 401), and the
same signed delivery seen twice (a replay: 409, see ``store.record_delivery``). A provider that
retries an event signs it afresh; the event's id makes the retry change nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Protocol

import orjson

SIGNATURE_HEADER = "Payment-Signature"
#: How far from now (seconds) a confirmation's signing time may be.
TOLERANCE = 300.0
#: The event type that confirms money was received.
SUCCEEDED = "payment.succeeded"


class SignatureError(Exception):
    """The confirmation does not carry a valid, fresh signature of the provider."""


class MalformedConfirmationError(ValueError):
    """The body is signed but is not a confirmation billing understands."""


@dataclass(frozen=True)
class Checkout:
    """A payment opened with a provider: its reference there, and where the payer completes it."""

    provider: str
    reference: str
    url: str
    #: A provider in test mode moves no money (the embedded default).
    test_mode: bool


@dataclass(frozen=True)
class Confirmation:
    """A provider's verified word that it received ``amount`` for the payment ``reference``."""

    provider: str
    event_id: str
    reference: str
    amount: Decimal
    currency: str
    #: Identifies this signed delivery (not the event): the same delivery twice is a replay.
    delivery: str


class PaymentProvider(Protocol):
    """A card-payment provider, as billing uses it."""

    name: str
    test_mode: bool

    async def start(self, intent_id: uuid.UUID, amount: Decimal, currency: str) -> Checkout:
        """Open a payment of ``amount`` with the provider. ``intent_id`` is the provider's
        idempotency key: the same id again answers the same checkout."""
        ...

    def verify(self, body: bytes, headers: Mapping[str, str], now: float) -> Confirmation:
        """The confirmation a delivery carries, if the provider signed it lately: else
        ``SignatureError`` (or ``MalformedConfirmationError`` for a signed body of another shape)."""
        ...


def sign(secret: bytes, body: bytes, at: int) -> str:
    """The ``Payment-Signature`` header value for ``body`` signed at unix time ``at``."""
    digest = hmac.new(secret, f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


def verify_signature(secret: bytes, body: bytes, header: str | None, now: float, tolerance: float = TOLERANCE) -> str:
    """Check a ``Payment-Signature`` header; returns the verified digest (which names the delivery)."""
    if not header:
        raise SignatureError(f"the {SIGNATURE_HEADER} header is missing")
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    at, given = parts.get("t", ""), parts.get("v1", "")
    if not (at.isascii() and at.isdigit()) or not given:
        raise SignatureError(f"the {SIGNATURE_HEADER} header is malformed")
    expected = hmac.new(secret, f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given):
        raise SignatureError("the signature does not match the body")
    if abs(now - int(at)) > tolerance:
        raise SignatureError(f"the signature is older than {int(tolerance)} seconds (or from the future)")
    return expected


def parse_confirmation(provider: str, body: bytes, delivery: str) -> Confirmation:
    """The confirmation in a verified body: ``{"id", "type": "payment.succeeded", "data":
    {"reference", "amount", "currency"}}``."""
    try:
        doc = orjson.loads(body)
        data = doc["data"]
        event_id, kind = str(doc["id"]), str(doc["type"])
        reference, currency, amount = str(data["reference"]), str(data["currency"]), Decimal(str(data["amount"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, InvalidOperation) as exc:
        raise MalformedConfirmationError(f"not a payment confirmation: {exc!r}") from None
    if kind != SUCCEEDED:
        raise MalformedConfirmationError(f"unsupported event type {kind!r} (only {SUCCEEDED})")
    if not amount.is_finite() or amount <= 0 or not (0 < len(event_id) <= 200 and 0 < len(reference) <= 200):
        raise MalformedConfirmationError("the confirmation's id, reference or amount is out of range")
    return Confirmation(provider, event_id, reference, amount, currency, delivery)


def confirmation_body(event_id: str, reference: str, amount: Decimal, currency: str, *, test_mode: bool) -> bytes:
    """A confirmation as a provider sends it (the embedded test provider and the tests use it)."""
    doc = {
        "id": event_id,
        "type": SUCCEEDED,
        "livemode": not test_mode,
        "data": {"reference": reference, "amount": str(amount), "currency": currency},
    }
    return orjson.dumps(doc)
