"""Events published by the billing service (ids, codes and amounts only)."""

from __future__ import annotations

import uuid
from decimal import Decimal

from his.kernel.events import Event, event


@event
class InvoiceIssued(Event):
    """An invoice was priced under the patient's plan and is payable.

    ``kind`` is ``visit``, ``admission`` or ``supplementary``; ``replaces`` names the voided
    invoice this one reissues without cancelled charges.
    """

    type = "his.billing.invoice.issued.v1"
    invoice_id: uuid.UUID
    patient_id: uuid.UUID
    encounter_id: uuid.UUID
    kind: str
    payer: str
    currency: str
    total: Decimal
    insurer_share: Decimal
    patient_share: Decimal
    replaces: uuid.UUID | None = None


@event
class InvoiceVoided(Event):
    """An issued invoice was voided because a cancellation took charges off it."""

    type = "his.billing.invoice.voided.v1"
    invoice_id: uuid.UUID
    patient_id: uuid.UUID
    #: The invoice reissued without the voided charges, if any charges remained.
    replaced_by: uuid.UUID | None = None


@event
class PaymentReceived(Event):
    """The patient paid (part of) their share of an invoice."""

    type = "his.billing.payment.received.v1"
    payment_id: uuid.UUID
    invoice_id: uuid.UUID
    patient_id: uuid.UUID
    amount: Decimal
    currency: str
    method: str
    invoice_status: str


@event
class PaymentRefunded(Event):
    """Money paid on an invoice went back to the patient."""

    type = "his.billing.payment.refunded.v1"
    refund_id: uuid.UUID
    invoice_id: uuid.UUID
    patient_id: uuid.UUID
    amount: Decimal
    currency: str
    method: str
    invoice_status: str


class ClaimEvent(Event):
    claim_id: uuid.UUID
    invoice_id: uuid.UUID
    payer: str
    amount: Decimal
    currency: str


@event
class ClaimCreated(ClaimEvent):
    """A claim for the insurer's share of an issued invoice was drafted."""

    type = "his.billing.claim.created.v1"


@event
class ClaimSubmitted(ClaimEvent):
    """A claim was sent to the payer."""

    type = "his.billing.claim.submitted.v1"


@event
class ClaimAccepted(ClaimEvent):
    """The payer accepted a claim."""

    type = "his.billing.claim.accepted.v1"


@event
class ClaimRejected(ClaimEvent):
    """The payer rejected a claim."""

    type = "his.billing.claim.rejected.v1"


@event
class ClaimPaid(ClaimEvent):
    """The payer paid a claim."""

    type = "his.billing.claim.paid.v1"


@event
class ClaimVoided(ClaimEvent):
    """The claimed invoice was voided, so the claim no longer stands."""

    type = "his.billing.claim.voided.v1"
