"""What billing's use cases work through, inside a unit of work (``his.kernel.ports``): the price
list and the payers' plans, the patients' coverage and the wards' corrected tariffs, encounters,
charges, invoices with their lines, the yearly accumulators, claims, payments with their
idempotency keys, online payments with the provider's deliveries, and the patient directory's
replica. The store implements them on PostgreSQL (``his.billing.store``); ``his.testing.billing``
in memory, for unit tests. Both pass the same contract tests
(``tests/integration/test_billing_contract.py``).

What the tables guarantee and the use cases rely on is refused on both sides: a price list
version per effective date (``DuplicateVersionError``), a charge per source line, a coverage
change and a ward tariff per event, an idempotency key per caller, a signed delivery and a
provider event once (each answered False or None, as ``ON CONFLICT DO NOTHING``). A moment a
use case records (``at``) is the unit's clock's, passed in.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from his.billing.domain import (
    ZERO,
    Accumulator,
    Charge,
    Claim,
    ClaimStatus,
    Encounter,
    EncounterKind,
    Invoice,
    InvoiceDetail,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
    Payer,
    Payment,
    PaymentIntent,
    PaymentKind,
    PaymentMethod,
    Plan,
    Priced,
    PriceEntry,
    PriceListVersion,
    SourceKind,
    StoredResponse,
    WardTariff,
)
from his.clients.replica import Known
from his.kernel.ports import Units, Work


class Prices(Protocol):
    """The payers' plans and the price list's versions."""

    async def payers(self) -> list[Payer]:
        """Every payer plan, by code, with its coverage by category and its exclusions."""
        ...

    async def plans(self) -> dict[str, Plan]:
        """The plans of ``payers``, by code."""
        ...

    async def version_on(self, day: date) -> PriceListVersion | None:
        """The price list valid on ``day``: the latest version effective on or before it."""
        ...

    async def lines(self, version_id: uuid.UUID) -> list[PriceEntry]:
        """A version's lines, by code."""
        ...

    async def price_on(self, code: str, day: date) -> PriceEntry | None:
        """The line for ``code`` in the price list valid on ``day`` (None: not priced then)."""
        ...

    async def add_version(
        self, vid: uuid.UUID, effective_from: date, lines: Sequence[PriceEntry], actor: uuid.UUID, at: datetime
    ) -> None:
        """A new version with its lines; ``DuplicateVersionError`` if one starts that day."""
        ...


class Coverage(Protocol):
    """The patients' coverage history and the wards' corrected tariffs, learnt from events."""

    async def add(
        self, patient_id: uuid.UUID, payer: str | None, effective_from: date, event_id: uuid.UUID, changed_at: datetime
    ) -> None:
        """Record a coverage change (once per event)."""
        ...

    async def payer_on(self, patient_id: uuid.UUID, day: date) -> str | None:
        """The payer valid on ``day``: of the changes effective by then the latest effective, of
        those the one made last; None: self-pay."""
        ...

    async def add_ward_tariff(self, event_id: uuid.UUID, tariff: WardTariff) -> None:
        """Remember a ward's corrected tariff (once per event)."""
        ...

    async def ward_tariff_after(self, ward_id: uuid.UUID, after: datetime, currencies: list[str]) -> WardTariff | None:
        """The ward's latest tariff corrected after ``after`` into one of ``currencies``, if any."""
        ...


class Encounters(Protocol):
    """What charges are grouped by: an admission, an appointment, a lab order, supplies."""

    async def open(
        self, kind: EncounterKind, source_id: uuid.UUID, patient_id: uuid.UUID, started_at: datetime
    ) -> Encounter:
        """The encounter of a source (created open if new), locked until the unit ends."""
        ...

    async def admitted(self, encounter_id: uuid.UUID, started_at: datetime) -> None: ...

    async def discharged(self, encounter_id: uuid.UUID, ended_at: datetime, nights: int) -> None: ...

    async def close_if_complete(self, encounter_id: uuid.UUID) -> bool:
        """Close a discharged admission once every bed night its discharge counted has arrived;
        whether it closed now."""
        ...

    async def admission_at(self, patient_id: uuid.UUID, at: datetime) -> uuid.UUID | None:
        """The admission the patient was in at ``at``, if any (its admission id)."""
        ...

    async def get(self, encounter_id: uuid.UUID) -> Encounter | None: ...


class Charges(Protocol):
    """Charges, unique per source line, and the sources cancelled."""

    async def add(self, charge: Charge) -> bool:
        """Record a charge; False if this source's line was charged already (a redelivery)."""
        ...

    async def attach(self, charge_ids: list[uuid.UUID], invoice_id: uuid.UUID) -> None: ...

    async def active_on(self, invoice_id: uuid.UUID) -> list[Charge]:
        """The active charges on an invoice, by service time, code, line and id."""
        ...

    async def visits_within(self, patient_id: uuid.UUID, start: datetime, end: datetime | None) -> list[Charge]:
        """Active charges of the patient in [start, end] not on an admission, locked, by time."""
        ...

    async def move_to_encounter(self, charge_ids: list[uuid.UUID], encounter_id: uuid.UUID) -> None:
        """Charges onto another encounter, off their invoice."""
        ...

    async def mark_source_voided(self, kind: SourceKind, source_id: uuid.UUID) -> None: ...

    async def source_voided(self, kind: SourceKind, source_id: uuid.UUID) -> bool: ...

    async def void(self, kind: SourceKind, source_id: uuid.UUID, at: datetime) -> list[uuid.UUID]:
        """Void the active charges of a source; the invoices they were on, sorted."""
        ...

    async def of_patient(self, patient_id: uuid.UUID, limit: int) -> list[Charge]:
        """A patient's charges, latest first (ties by id)."""
        ...


class Invoices(Protocol):
    """Invoices, their lines, and the yearly accumulators they are priced with."""

    async def draft_of(self, encounter_id: uuid.UUID) -> Invoice | None:
        """The encounter's draft invoice, locked."""
        ...

    async def has_issued(self, encounter_id: uuid.UUID) -> bool: ...

    async def create(
        self,
        *,
        invoice_id: uuid.UUID,
        patient_id: uuid.UUID,
        encounter_id: uuid.UUID,
        kind: InvoiceKind,
        currency: str,
        service_date: date,
        at: datetime,
        replaces: uuid.UUID | None = None,
        paid: Decimal = ZERO,
    ) -> Invoice:
        """A new draft invoice, created ``at`` (a replacement names the invoice it ``replaces``
        and takes what was paid on it)."""
        ...

    async def set_service_date(self, invoice_id: uuid.UUID, day: date) -> None: ...

    async def get(self, invoice_id: uuid.UUID, *, lock: bool = False) -> Invoice | None: ...

    async def write_lines(self, lines: Sequence[InvoiceLine]) -> None: ...

    async def mark_issued(
        self,
        invoice_id: uuid.UUID,
        *,
        status: InvoiceStatus,
        payer: str,
        plan_year: int,
        priced: Priced,
        at: datetime,
    ) -> Invoice:
        """Make a draft payable ``at``: priced under ``payer``'s plan of ``plan_year``."""
        ...

    async def mark_void(self, invoice_id: uuid.UUID, *, keep_paid: bool, at: datetime) -> None: ...

    async def move_open_items(self, old: uuid.UUID, new: uuid.UUID) -> None:
        """Active charges and payments of a voided invoice go to its replacement."""
        ...

    async def set_paid(self, invoice_id: uuid.UUID, paid: Decimal, status: InvoiceStatus, at: datetime) -> None: ...

    async def lines_of(self, invoice_id: uuid.UUID) -> list[InvoiceLine]: ...

    async def detailed(self, invoice: Invoice) -> InvoiceDetail:
        """An invoice with its encounter and lines: while a draft, its charges (not yet priced)."""
        ...

    async def issued_since(self, patient_id: uuid.UUID, since: date) -> list[Invoice]:
        """The patient's issued invoices (not draft, not void) for services on or after
        ``since``, locked, oldest first."""
        ...

    async def find(
        self, patient_ids: list[uuid.UUID] | None, status: InvoiceStatus | None, limit: int
    ) -> list[Invoice]:
        """Invoices of these patients (None: everyone's), latest first (ties by id)."""
        ...

    async def accumulator(self, patient_id: uuid.UUID, payer: str, year: int) -> Accumulator:
        """The patient's year under ``payer``, locked until the unit ends."""
        ...

    async def save_accumulator(self, patient_id: uuid.UUID, payer: str, year: int, acc: Accumulator) -> None: ...


class Claims(Protocol):
    """Claims on the insurers' shares, one per invoice."""

    async def add(
        self,
        *,
        claim_id: uuid.UUID,
        invoice_id: uuid.UUID,
        patient_id: uuid.UUID,
        payer: str,
        amount: Decimal,
        currency: str,
        at: datetime,
    ) -> Claim:
        """A draft claim of ``amount`` on ``payer`` for an issued invoice."""
        ...

    async def get(self, claim_id: uuid.UUID, *, lock: bool = False) -> Claim | None: ...

    async def of_invoice(self, invoice_id: uuid.UUID) -> Claim | None:
        """The invoice's claim, locked."""
        ...

    async def set_status(self, claim_id: uuid.UUID, status: ClaimStatus, at: datetime) -> Claim: ...

    async def find(self, status: ClaimStatus | None, payer: str | None, limit: int) -> list[Claim]:
        """Claims, latest first (ties by id)."""
        ...


class Payments(Protocol):
    """Money received and refunded, and the callers' idempotency keys with their answers."""

    async def add(
        self,
        *,
        payment_id: uuid.UUID,
        invoice_id: uuid.UUID,
        patient_id: uuid.UUID,
        kind: PaymentKind,
        amount: Decimal,
        currency: str,
        method: PaymentMethod,
        created_by: uuid.UUID,
        at: datetime,
        provider: str | None = None,
        intent_id: uuid.UUID | None = None,
    ) -> Payment:
        """Record money received or refunded (online: the ``provider``'s confirmation of ``intent_id``)."""
        ...

    async def of_invoice(self, invoice_id: uuid.UUID) -> list[Payment]:
        """An invoice's payments and refunds, oldest first (ties by id)."""
        ...

    async def claim_key(self, actor: uuid.UUID, key: str, request_hash: str) -> bool:
        """Take an idempotency key for this request; False if it is taken. A concurrent holder
        of the same key makes this wait for its outcome: the unique key decides."""
        ...

    async def stored_response(self, actor: uuid.UUID, key: str) -> StoredResponse | None: ...

    async def store_response(self, actor: uuid.UUID, key: str, status: int, body: str) -> None: ...


class Intents(Protocol):
    """Online payments opened with a provider, and the provider's deliveries and events applied."""

    async def add(
        self,
        *,
        intent_id: uuid.UUID,
        invoice_id: uuid.UUID,
        patient_id: uuid.UUID,
        amount: Decimal,
        currency: str,
        provider: str,
        provider_ref: str,
        checkout_url: str,
        created_by: uuid.UUID,
        at: datetime,
    ) -> PaymentIntent:
        """A pending online payment, opened with ``provider`` under its reference ``provider_ref``."""
        ...

    async def by_reference(self, provider: str, reference: str) -> PaymentIntent | None:
        """The intent a provider's reference names, locked."""
        ...

    async def of_invoice(self, invoice_id: uuid.UUID) -> list[PaymentIntent]:
        """An invoice's intents, oldest first (ties by id)."""
        ...

    async def mark_succeeded(self, intent_id: uuid.UUID, at: datetime) -> None: ...

    async def record_delivery(self, provider: str, digest: str, at: datetime) -> bool:
        """Remember a verified signed delivery received ``at``; False if it was seen before (a
        replay). Deliveries older than the memory (an hour before ``at``) are forgotten."""
        ...

    async def record_event(self, provider: str, event_id: str, intent_id: uuid.UUID) -> bool:
        """Remember a provider event applied; False if it was applied before (the provider's retry)."""
        ...


class Holders(Protocol):
    """Whose account a patient's record is linked to, from the replica's other side."""

    async def patients_of(self, account_id: uuid.UUID) -> list[uuid.UUID]:
        """The patients whose records the account holds."""
        ...


class BillingWork(Work, Protocol):
    """A unit of work of billing."""

    @property
    def prices(self) -> Prices: ...

    @property
    def coverage(self) -> Coverage: ...

    @property
    def encounters(self) -> Encounters: ...

    @property
    def charges(self) -> Charges: ...

    @property
    def invoices(self) -> Invoices: ...

    @property
    def claims(self) -> Claims: ...

    @property
    def payments(self) -> Payments: ...

    @property
    def intents(self) -> Intents: ...

    @property
    def holders(self) -> Holders: ...

    @property
    def patients(self) -> Known: ...


#: Where billing's units of work come from.
BillingUnits = Units[BillingWork]
