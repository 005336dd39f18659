"""Billing's ports in memory (``his.billing.ports``), seeded as its migrations seed the database:
the payers SGK, ALLIANZ, SELF and NOVA and the first price list (``seeded_payers``,
``seeded_prices``, read from the migration's ``PLANS`` and ``PRICES``).

What the tables enforce, the fakes enforce too, and refuse as PostgreSQL does. What the use cases
rely on answers as the store does: a price list version per date (``DuplicateVersionError``), a
charge per source line, a coverage change and a ward tariff per event, an idempotency key per
caller, a signed delivery and a provider event once (False or nothing, as ``ON CONFLICT DO
NOTHING``). The rest raise the driver's errors (``asyncpg``): primary and unique keys (one draft
invoice per encounter, one claim per invoice, one payment per intent, one intent per provider
reference), the CHECKs (money never negative, amounts of claims, payments and intents above zero,
shares adding up to the total, currencies of three capitals, the five categories, an online
payment's intent), and the foreign keys. A refused write aborts the unit of work, as it aborts
PostgreSQL's transaction: every later call of the unit fails, and so does the unit if it ends
without the error. Money is kept to two places and quantities to four, as the ``NUMERIC``
columns keep them; moments come back in UTC, as ``timestamptz`` gives them.
"""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NoReturn

import asyncpg

from his.billing.domain import (
    CATEGORIES,
    ZERO,
    Accumulator,
    Charge,
    ChargeStatus,
    Claim,
    ClaimStatus,
    DuplicateVersionError,
    Encounter,
    EncounterKind,
    EncounterStatus,
    IntentStatus,
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
from his.kernel.clock import Clock, utc_now
from his.testing.replica import FakeKnown
from his.testing.units import FakeUnits, FakeWork

_MIGRATION = "his.billing.store.migrations.0002_billing"
_CURRENCY = re.compile(r"[A-Z]{3}")
#: How long verified deliveries are remembered (``his.billing.store.online.DELIVERY_MEMORY``).
DELIVERY_MEMORY = timedelta(hours=1)
#: When the migration seeded the first price list, as far as the fakes know.
SEEDED_AT = datetime(2020, 1, 1, tzinfo=UTC)


def _numeric(value: Decimal, places: int, digits: int) -> Decimal:
    """A value as a ``NUMERIC(digits, places)`` column keeps it; ``NumericValueOutOfRangeError`` if
    it does not fit."""
    out = Decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    if not out.is_finite() or abs(out) >= Decimal(10) ** (digits - places):
        raise asyncpg.NumericValueOutOfRangeError(f"numeric field overflow: {value}")
    return out


def money(value: Decimal) -> Decimal:
    """An amount as ``NUMERIC(12,2)`` keeps it."""
    return _numeric(value, 2, 12)


def quantity(value: Decimal) -> Decimal:
    """A quantity as ``NUMERIC(14,4)`` keeps it."""
    return _numeric(value, 4, 14)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def seeded_payers() -> dict[str, Payer]:
    """The payer plans the migration seeds (its ``PLANS``), by code."""
    plans = importlib.import_module(_MIGRATION).PLANS
    return {
        code: Payer(
            code=code,
            title=title,
            currency="TRY",
            coverage={c: _numeric(Decimal(pct), 2, 5) for c in CATEGORIES},
            copay=money(Decimal(copay)),
            deductible=money(Decimal(deductible)),
            out_of_pocket_cap=money(Decimal(cap)) if cap is not None else None,
            excluded_categories=tuple(sorted(excluded)),
            excluded_codes=(),
        )
        for code, title, copay, deductible, cap, pct, excluded in plans
    }


def seeded_prices() -> tuple[PriceListVersion, dict[str, PriceEntry]]:
    """The first price list the migration seeds (its ``FIRST_VERSION`` and ``PRICES``, in TRY)."""
    m = importlib.import_module(_MIGRATION)
    version = PriceListVersion(uuid.UUID(m.FIRST_VERSION), date(2020, 1, 1), None, SEEDED_AT)
    lines = {code: PriceEntry(code, category, money(Decimal(amount)), "TRY") for code, category, amount in m.PRICES}
    return version, lines


def _seeded_versions() -> dict[uuid.UUID, PriceListVersion]:
    version, _ = seeded_prices()
    return {version.id: version}


def _seeded_lines() -> dict[uuid.UUID, dict[str, PriceEntry]]:
    version, lines = seeded_prices()
    return {version.id: lines}


@dataclass(frozen=True)
class CoverageRow:
    """A row of ``coverage``: ``id`` is its serial (rows recorded later count higher)."""

    id: int
    patient_id: uuid.UUID
    payer: str | None
    effective_from: date
    event_id: uuid.UUID
    changed_at: datetime


@dataclass
class BillingState:
    """Billing's tables."""

    payers: dict[str, Payer] = field(default_factory=seeded_payers)
    versions: dict[uuid.UUID, PriceListVersion] = field(default_factory=_seeded_versions)
    price_lines: dict[uuid.UUID, dict[str, PriceEntry]] = field(default_factory=_seeded_lines)
    coverage: list[CoverageRow] = field(default_factory=list)
    ward_tariffs: dict[uuid.UUID, WardTariff] = field(default_factory=dict)
    encounters: dict[uuid.UUID, Encounter] = field(default_factory=dict)
    charges: dict[uuid.UUID, Charge] = field(default_factory=dict)
    voided_sources: set[tuple[SourceKind, uuid.UUID]] = field(default_factory=set)
    invoices: dict[uuid.UUID, Invoice] = field(default_factory=dict)
    lines: dict[tuple[uuid.UUID, int], InvoiceLine] = field(default_factory=dict)
    accumulators: dict[tuple[uuid.UUID, str, int], Accumulator] = field(default_factory=dict)
    claims: dict[uuid.UUID, Claim] = field(default_factory=dict)
    payments: dict[uuid.UUID, Payment] = field(default_factory=dict)
    keys: dict[tuple[uuid.UUID, str], StoredResponse] = field(default_factory=dict)
    intents: dict[uuid.UUID, PaymentIntent] = field(default_factory=dict)
    #: Verified deliveries by digest: their provider and when they were received.
    deliveries: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    provider_events: dict[tuple[str, str], uuid.UUID] = field(default_factory=dict)
    known: dict[uuid.UUID, uuid.UUID | None] = field(default_factory=dict)


class _Repository:
    def __init__(self, work: FakeBillingWork, state: BillingState) -> None:
        self.work, self.state = work, state

    def ok(self) -> None:
        self.work.going_on()

    def refuse(self, error: Exception) -> NoReturn:
        self.work.refuse(error)

    def currency(self, currency: str) -> None:
        if not _CURRENCY.fullmatch(currency):
            self.refuse(asyncpg.CheckViolationError(f"currency {currency!r}"))

    def invoice_exists(self, invoice_id: uuid.UUID) -> None:
        if invoice_id not in self.state.invoices:
            self.refuse(asyncpg.ForeignKeyViolationError(f"no invoice {invoice_id}"))


class FakePrices(_Repository):
    async def payers(self) -> list[Payer]:
        self.ok()
        return [self.state.payers[c] for c in sorted(self.state.payers)]

    async def plans(self) -> dict[str, Plan]:
        return {p.code: p.plan for p in await self.payers()}

    async def version_on(self, day: date) -> PriceListVersion | None:
        self.ok()
        valid = [v for v in self.state.versions.values() if v.effective_from <= day]
        return max(valid, key=lambda v: v.effective_from) if valid else None

    async def lines(self, version_id: uuid.UUID) -> list[PriceEntry]:
        self.ok()
        lines = self.state.price_lines.get(version_id, {})
        return [lines[c] for c in sorted(lines)]

    async def price_on(self, code: str, day: date) -> PriceEntry | None:
        version = await self.version_on(day)
        return self.state.price_lines.get(version.id, {}).get(code) if version else None

    async def add_version(
        self, vid: uuid.UUID, effective_from: date, lines: Sequence[PriceEntry], actor: uuid.UUID, at: datetime
    ) -> None:
        self.ok()
        if vid in self.state.versions:
            self.refuse(asyncpg.UniqueViolationError(f"version {vid} exists"))  # the primary key
        if any(v.effective_from == effective_from for v in self.state.versions.values()):
            self.refuse(DuplicateVersionError())  # UNIQUE (effective_from)
        kept: dict[str, PriceEntry] = {}
        for x in lines:
            if not 1 <= len(x.code) <= 80 or x.category not in CATEGORIES:
                self.refuse(asyncpg.CheckViolationError(f"price line {x.code!r}"))
            amount = money(x.amount)
            if amount < 0:
                self.refuse(asyncpg.CheckViolationError("a price is never negative"))
            self.currency(x.currency)
            if x.code in kept:
                self.refuse(asyncpg.UniqueViolationError(f"{x.code} twice"))  # PRIMARY KEY (version_id, code)
            kept[x.code] = replace(x, amount=amount)
        self.state.versions[vid] = PriceListVersion(vid, effective_from, actor, _utc(at))
        self.state.price_lines[vid] = kept


class FakeCoverage(_Repository):
    async def add(
        self, patient_id: uuid.UUID, payer: str | None, effective_from: date, event_id: uuid.UUID, changed_at: datetime
    ) -> None:
        self.ok()
        if any(c.event_id == event_id for c in self.state.coverage):
            return  # ON CONFLICT (event_id) DO NOTHING
        row = CoverageRow(len(self.state.coverage) + 1, patient_id, payer, effective_from, event_id, _utc(changed_at))
        self.state.coverage.append(row)

    async def payer_on(self, patient_id: uuid.UUID, day: date) -> str | None:
        self.ok()
        rows = [c for c in self.state.coverage if c.patient_id == patient_id and c.effective_from <= day]
        if not rows:
            return None
        return max(rows, key=lambda c: (c.effective_from, c.changed_at, c.id)).payer

    async def add_ward_tariff(self, event_id: uuid.UUID, tariff: WardTariff) -> None:
        self.ok()
        rate = money(tariff.daily_rate)
        if rate < 0:
            self.refuse(asyncpg.CheckViolationError("a daily rate is never negative"))
        self.currency(tariff.currency)
        if event_id not in self.state.ward_tariffs:  # ON CONFLICT (event_id) DO NOTHING
            self.state.ward_tariffs[event_id] = replace(tariff, daily_rate=rate, changed_at=_utc(tariff.changed_at))

    async def ward_tariff_after(self, ward_id: uuid.UUID, after: datetime, currencies: list[str]) -> WardTariff | None:
        self.ok()
        found = [
            t
            for t in self.state.ward_tariffs.values()
            if t.ward_id == ward_id and t.changed_at > after and t.currency in currencies
        ]
        return max(found, key=lambda t: t.changed_at) if found else None


class FakeEncounters(_Repository):
    async def open(
        self, kind: EncounterKind, source_id: uuid.UUID, patient_id: uuid.UUID, started_at: datetime
    ) -> Encounter:
        self.ok()
        for e in self.state.encounters.values():
            if e.kind is kind and e.source_id == source_id:
                return e
        enc = Encounter(uuid.uuid4(), patient_id, kind, source_id, _utc(started_at), None, None, EncounterStatus.OPEN)
        self.state.encounters[enc.id] = enc
        return enc

    def _set(self, encounter_id: uuid.UUID, **changes: Any) -> None:
        enc = self.state.encounters.get(encounter_id)
        if enc is not None:  # an UPDATE of no row changes nothing
            self.state.encounters[encounter_id] = replace(enc, **changes)

    async def admitted(self, encounter_id: uuid.UUID, started_at: datetime) -> None:
        self.ok()
        self._set(encounter_id, started_at=_utc(started_at))

    async def discharged(self, encounter_id: uuid.UUID, ended_at: datetime, nights: int) -> None:
        self.ok()
        if nights < 0:
            self.refuse(asyncpg.CheckViolationError("expected_nights is never negative"))
        self._set(encounter_id, ended_at=_utc(ended_at), expected_nights=nights)

    async def close_if_complete(self, encounter_id: uuid.UUID) -> bool:
        self.ok()
        enc = self.state.encounters.get(encounter_id)
        if enc is None or enc.status is not EncounterStatus.OPEN or enc.ended_at is None:
            return False
        if enc.expected_nights is None:
            return False  # a comparison with NULL is not true
        nights = sum(
            1
            for c in self.state.charges.values()
            if c.encounter_id == encounter_id and c.source_kind is SourceKind.BED_CHARGE
        )
        if nights < enc.expected_nights:
            return False
        self.state.encounters[encounter_id] = replace(enc, status=EncounterStatus.CLOSED)
        return True

    async def admission_at(self, patient_id: uuid.UUID, at: datetime) -> uuid.UUID | None:
        self.ok()
        found = [
            e
            for e in self.state.encounters.values()
            if e.kind is EncounterKind.ADMISSION
            and e.patient_id == patient_id
            and e.started_at <= at
            and (e.ended_at is None or e.ended_at >= at)
        ]
        return max(found, key=lambda e: e.started_at).source_id if found else None

    async def get(self, encounter_id: uuid.UUID) -> Encounter | None:
        self.ok()
        return self.state.encounters.get(encounter_id)


class FakeCharges(_Repository):
    async def add(self, charge: Charge) -> bool:
        self.ok()
        # As PostgreSQL checks them: the values, the CHECKs, the unique keys, the foreign keys.
        charge = replace(
            charge,
            quantity=quantity(charge.quantity),
            unit_price=money(charge.unit_price),
            amount=money(charge.amount),
            service_at=_utc(charge.service_at),
        )
        if charge.quantity <= 0 or charge.unit_price < 0 or charge.amount < 0 or charge.category not in CATEGORIES:
            self.refuse(asyncpg.CheckViolationError(f"charge {charge.code}"))
        self.currency(charge.currency)
        key = (charge.source_kind, charge.source_id, charge.line_key)
        if any((c.source_kind, c.source_id, c.line_key) == key for c in self.state.charges.values()):
            return False  # ON CONFLICT (source_kind, source_id, line_key) DO NOTHING
        if charge.id in self.state.charges:
            self.refuse(asyncpg.UniqueViolationError(f"charge {charge.id} exists"))  # the primary key
        if charge.encounter_id is not None and charge.encounter_id not in self.state.encounters:
            self.refuse(asyncpg.ForeignKeyViolationError(f"no encounter {charge.encounter_id}"))
        if charge.invoice_id is not None:
            self.invoice_exists(charge.invoice_id)
        self.state.charges[charge.id] = charge
        return True

    def _set(self, charge_ids: Sequence[uuid.UUID], **changes: Any) -> None:
        for cid in charge_ids:
            if cid in self.state.charges:
                self.state.charges[cid] = replace(self.state.charges[cid], **changes)

    async def attach(self, charge_ids: list[uuid.UUID], invoice_id: uuid.UUID) -> None:
        self.ok()
        if any(c in self.state.charges for c in charge_ids):
            self.invoice_exists(invoice_id)
        self._set(charge_ids, invoice_id=invoice_id)

    async def active_on(self, invoice_id: uuid.UUID) -> list[Charge]:
        self.ok()
        found = [
            c for c in self.state.charges.values() if c.invoice_id == invoice_id and c.status is ChargeStatus.ACTIVE
        ]
        return sorted(found, key=lambda c: (c.service_at, c.code, c.line_key, c.id))

    async def visits_within(self, patient_id: uuid.UUID, start: datetime, end: datetime | None) -> list[Charge]:
        self.ok()
        found = []
        for c in self.state.charges.values():
            enc = self.state.encounters.get(c.encounter_id) if c.encounter_id is not None else None
            if (
                enc is not None
                and enc.kind is not EncounterKind.ADMISSION
                and c.patient_id == patient_id
                and c.status is ChargeStatus.ACTIVE
                and c.service_at >= start
                and (end is None or c.service_at <= end)
            ):
                found.append(c)
        return sorted(found, key=lambda c: (c.service_at, c.id))

    async def move_to_encounter(self, charge_ids: list[uuid.UUID], encounter_id: uuid.UUID) -> None:
        self.ok()
        if any(c in self.state.charges for c in charge_ids) and encounter_id not in self.state.encounters:
            self.refuse(asyncpg.ForeignKeyViolationError(f"no encounter {encounter_id}"))
        self._set(charge_ids, encounter_id=encounter_id, invoice_id=None)

    async def mark_source_voided(self, kind: SourceKind, source_id: uuid.UUID) -> None:
        self.ok()
        self.state.voided_sources.add((kind, source_id))

    async def source_voided(self, kind: SourceKind, source_id: uuid.UUID) -> bool:
        self.ok()
        return (kind, source_id) in self.state.voided_sources

    async def void(self, kind: SourceKind, source_id: uuid.UUID, at: datetime) -> list[uuid.UUID]:
        self.ok()
        hit = [
            c
            for c in self.state.charges.values()
            if c.source_kind is kind and c.source_id == source_id and c.status is ChargeStatus.ACTIVE
        ]
        self._set([c.id for c in hit], status=ChargeStatus.VOID)
        return sorted({c.invoice_id for c in hit if c.invoice_id is not None})

    async def of_patient(self, patient_id: uuid.UUID, limit: int) -> list[Charge]:
        self.ok()
        found = sorted((c for c in self.state.charges.values() if c.patient_id == patient_id), key=lambda c: c.id)
        found.sort(key=lambda c: c.service_at, reverse=True)
        return found[:limit]


class FakeInvoices(_Repository):
    def _keep(self, invoice: Invoice) -> Invoice:
        """Store ``invoice`` if its CHECKs and keys allow it."""
        shares = (invoice.total, invoice.insurer_share, invoice.patient_share)
        if invoice.paid < 0 or any(x is not None and x < 0 for x in shares[1:]):
            self.refuse(asyncpg.CheckViolationError("money on an invoice is never negative"))
        if None not in shares and invoice.total != (invoice.insurer_share or ZERO) + (invoice.patient_share or ZERO):
            self.refuse(asyncpg.CheckViolationError("an invoice's shares add up to its total"))
        if invoice.status is InvoiceStatus.DRAFT and any(
            i.encounter_id == invoice.encounter_id and i.status is InvoiceStatus.DRAFT and i.id != invoice.id
            for i in self.state.invoices.values()
        ):
            self.refuse(asyncpg.UniqueViolationError("invoice_one_draft_per_encounter"))
        self.state.invoices[invoice.id] = invoice
        return invoice

    def _stored(self, invoice_id: uuid.UUID) -> Invoice | None:
        return self.state.invoices.get(invoice_id)

    async def draft_of(self, encounter_id: uuid.UUID) -> Invoice | None:
        self.ok()
        return next(
            (
                i
                for i in self.state.invoices.values()
                if i.encounter_id == encounter_id and i.status is InvoiceStatus.DRAFT
            ),
            None,
        )

    async def has_issued(self, encounter_id: uuid.UUID) -> bool:
        self.ok()
        return any(i.encounter_id == encounter_id and i.issued_at is not None for i in self.state.invoices.values())

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
        self.ok()
        self.currency(currency)
        invoice = Invoice(
            id=invoice_id,
            patient_id=patient_id,
            encounter_id=encounter_id,
            kind=kind,
            replaces=replaces,
            status=InvoiceStatus.DRAFT,
            currency=currency,
            service_date=service_date,
            payer=None,
            plan_year=None,
            total=None,
            insurer_share=None,
            patient_share=None,
            paid=money(paid),
            deductible_applied=ZERO,
            out_of_pocket_applied=ZERO,
            issued_at=None,
            voided_at=None,
            created_at=_utc(at),
            updated_at=_utc(at),
        )
        if invoice_id in self.state.invoices:
            self.refuse(asyncpg.UniqueViolationError(f"invoice {invoice_id} exists"))  # the primary key
        kept = self._keep(invoice)
        if encounter_id not in self.state.encounters or (replaces is not None and replaces not in self.state.invoices):
            del self.state.invoices[invoice_id]
            self.refuse(asyncpg.ForeignKeyViolationError("an invoice's encounter and the invoice it replaces exist"))
        return kept

    async def set_service_date(self, invoice_id: uuid.UUID, day: date) -> None:
        self.ok()
        if (found := self._stored(invoice_id)) is not None:
            self.state.invoices[invoice_id] = replace(found, service_date=day)

    async def get(self, invoice_id: uuid.UUID, *, lock: bool = False) -> Invoice | None:
        self.ok()
        return self._stored(invoice_id)

    async def write_lines(self, lines: Sequence[InvoiceLine]) -> None:
        self.ok()
        for given in lines:
            x = replace(
                given,
                quantity=quantity(given.quantity),
                unit_price=money(given.unit_price),
                total=money(given.total),
                insurer_share=money(given.insurer_share),
                patient_share=money(given.patient_share),
                deductible=money(given.deductible),
                copay=money(given.copay),
            )
            if x.insurer_share < 0 or x.patient_share < 0 or x.insurer_share + x.patient_share != x.total:
                self.refuse(asyncpg.CheckViolationError("a line's shares are never negative and add up to its total"))
            if (x.invoice_id, x.position) in self.state.lines:
                self.refuse(asyncpg.UniqueViolationError("PRIMARY KEY (invoice_id, position)"))
            self.invoice_exists(x.invoice_id)
            if x.charge_id not in self.state.charges:
                self.refuse(asyncpg.ForeignKeyViolationError(f"no charge {x.charge_id}"))
            self.state.lines[(x.invoice_id, x.position)] = x

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
        self.ok()
        found = self._stored(invoice_id)
        assert found is not None  # as the store's: an UPDATE of no row returns none
        return self._keep(
            replace(
                found,
                status=status,
                payer=payer,
                plan_year=plan_year,
                total=money(priced.total),
                insurer_share=money(priced.insurer_share),
                patient_share=money(priced.patient_share),
                deductible_applied=money(priced.deductible_applied),
                out_of_pocket_applied=money(priced.out_of_pocket_applied),
                issued_at=_utc(at),
                updated_at=_utc(at),
            )
        )

    async def mark_void(self, invoice_id: uuid.UUID, *, keep_paid: bool, at: datetime) -> None:
        self.ok()
        if (found := self._stored(invoice_id)) is not None:
            self._keep(
                replace(
                    found,
                    status=InvoiceStatus.VOID,
                    voided_at=_utc(at),
                    updated_at=_utc(at),
                    paid=found.paid if keep_paid else money(ZERO),
                )
            )

    async def move_open_items(self, old: uuid.UUID, new: uuid.UUID) -> None:
        self.ok()
        moving = [c for c in self.state.charges.values() if c.invoice_id == old and c.status is ChargeStatus.ACTIVE]
        paid = [p for p in self.state.payments.values() if p.invoice_id == old]
        if moving or paid:
            self.invoice_exists(new)
        for c in moving:
            self.state.charges[c.id] = replace(c, invoice_id=new)
        for p in paid:
            self.state.payments[p.id] = replace(p, invoice_id=new)

    async def set_paid(self, invoice_id: uuid.UUID, paid: Decimal, status: InvoiceStatus, at: datetime) -> None:
        self.ok()
        if (found := self._stored(invoice_id)) is not None:
            self._keep(replace(found, paid=money(paid), status=status, updated_at=_utc(at)))

    async def lines_of(self, invoice_id: uuid.UUID) -> list[InvoiceLine]:
        self.ok()
        return sorted((x for (i, _), x in self.state.lines.items() if i == invoice_id), key=lambda x: x.position)

    async def detailed(self, invoice: Invoice) -> InvoiceDetail:
        self.ok()
        enc = self.state.encounters.get(invoice.encounter_id)
        assert enc is not None
        if invoice.status is InvoiceStatus.DRAFT:
            charges = await FakeCharges(self.work, self.state).active_on(invoice.id)
            return InvoiceDetail(invoice, enc, charges=tuple(charges))
        return InvoiceDetail(invoice, enc, lines=tuple(await self.lines_of(invoice.id)))

    async def issued_since(self, patient_id: uuid.UUID, since: date) -> list[Invoice]:
        self.ok()
        found = [
            i
            for i in self.state.invoices.values()
            if i.patient_id == patient_id
            and i.service_date >= since
            and i.status not in (InvoiceStatus.DRAFT, InvoiceStatus.VOID)
        ]
        return sorted(found, key=lambda i: (i.service_date, i.created_at, i.id))

    async def find(
        self, patient_ids: list[uuid.UUID] | None, status: InvoiceStatus | None, limit: int
    ) -> list[Invoice]:
        self.ok()
        found = sorted(
            (
                i
                for i in self.state.invoices.values()
                if (patient_ids is None or i.patient_id in patient_ids) and (status is None or i.status is status)
            ),
            key=lambda i: i.id,
        )
        found.sort(key=lambda i: i.created_at, reverse=True)
        return found[:limit]

    async def accumulator(self, patient_id: uuid.UUID, payer: str, year: int) -> Accumulator:
        self.ok()
        return self.state.accumulators.setdefault((patient_id, payer, year), Accumulator(money(ZERO), money(ZERO)))

    async def save_accumulator(self, patient_id: uuid.UUID, payer: str, year: int, acc: Accumulator) -> None:
        self.ok()
        kept = Accumulator(money(acc.deductible_used), money(acc.out_of_pocket))
        if kept.deductible_used < 0 or kept.out_of_pocket < 0:
            self.refuse(asyncpg.CheckViolationError("an accumulator is never negative"))
        if (patient_id, payer, year) in self.state.accumulators:  # an UPDATE of no row changes nothing
            self.state.accumulators[(patient_id, payer, year)] = kept


class FakeClaims(_Repository):
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
        self.ok()
        amount = money(amount)
        if amount <= 0:
            self.refuse(asyncpg.CheckViolationError("a claim is of more than zero"))
        if claim_id in self.state.claims:
            self.refuse(asyncpg.UniqueViolationError(f"claim {claim_id} exists"))  # the primary key
        if any(c.invoice_id == invoice_id for c in self.state.claims.values()):
            self.refuse(asyncpg.UniqueViolationError("one claim per invoice"))  # UNIQUE (invoice_id)
        self.invoice_exists(invoice_id)
        claim = Claim(claim_id, invoice_id, patient_id, payer, amount, currency, ClaimStatus.DRAFT, _utc(at), _utc(at))
        self.state.claims[claim_id] = claim
        return claim

    async def get(self, claim_id: uuid.UUID, *, lock: bool = False) -> Claim | None:
        self.ok()
        return self.state.claims.get(claim_id)

    async def of_invoice(self, invoice_id: uuid.UUID) -> Claim | None:
        self.ok()
        return next((c for c in self.state.claims.values() if c.invoice_id == invoice_id), None)

    async def set_status(self, claim_id: uuid.UUID, status: ClaimStatus, at: datetime) -> Claim:
        self.ok()
        found = self.state.claims.get(claim_id)
        assert found is not None  # as the store's: an UPDATE of no row returns none
        moved = replace(found, status=status, updated_at=_utc(at))
        self.state.claims[claim_id] = moved
        return moved

    async def find(self, status: ClaimStatus | None, payer: str | None, limit: int) -> list[Claim]:
        self.ok()
        found = sorted(
            (
                c
                for c in self.state.claims.values()
                if (status is None or c.status is status) and (payer is None or c.payer == payer)
            ),
            key=lambda c: c.id,
        )
        found.sort(key=lambda c: c.created_at, reverse=True)
        return found[:limit]


class FakePayments(_Repository):
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
        self.ok()
        amount = money(amount)
        if amount <= 0:
            self.refuse(asyncpg.CheckViolationError("a payment is of more than zero"))
        if not ((method is PaymentMethod.ONLINE) == (intent_id is not None) or kind is PaymentKind.REFUND):
            self.refuse(asyncpg.CheckViolationError("payment_online_has_intent"))
        if payment_id in self.state.payments:
            self.refuse(asyncpg.UniqueViolationError(f"payment {payment_id} exists"))  # the primary key
        if intent_id is not None and any(p.intent_id == intent_id for p in self.state.payments.values()):
            self.refuse(asyncpg.UniqueViolationError("one payment per intent"))  # UNIQUE (intent_id)
        self.invoice_exists(invoice_id)
        if intent_id is not None and intent_id not in self.state.intents:
            self.refuse(asyncpg.ForeignKeyViolationError(f"no intent {intent_id}"))
        payment = Payment(
            payment_id,
            invoice_id,
            patient_id,
            kind,
            amount,
            currency,
            method,
            created_by,
            _utc(at),
            provider,
            intent_id,
        )
        self.state.payments[payment_id] = payment
        return payment

    async def of_invoice(self, invoice_id: uuid.UUID) -> list[Payment]:
        self.ok()
        found = [p for p in self.state.payments.values() if p.invoice_id == invoice_id]
        return sorted(found, key=lambda p: (p.created_at, p.id))

    async def claim_key(self, actor: uuid.UUID, key: str, request_hash: str) -> bool:
        self.ok()
        if (actor, key) in self.state.keys:
            return False  # ON CONFLICT DO NOTHING
        self.state.keys[(actor, key)] = StoredResponse(request_hash, 0, "")
        return True

    async def stored_response(self, actor: uuid.UUID, key: str) -> StoredResponse | None:
        self.ok()
        return self.state.keys.get((actor, key))

    async def store_response(self, actor: uuid.UUID, key: str, status: int, body: str) -> None:
        self.ok()
        if (found := self.state.keys.get((actor, key))) is not None:
            self.state.keys[(actor, key)] = replace(found, status=status, body=body)


class FakeIntents(_Repository):
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
        self.ok()
        amount = money(amount)
        if amount <= 0:
            self.refuse(asyncpg.CheckViolationError("an intent is of more than zero"))
        self.currency(currency)
        if intent_id in self.state.intents:
            self.refuse(asyncpg.UniqueViolationError(f"intent {intent_id} exists"))  # the primary key
        if any((i.provider, i.provider_ref) == (provider, provider_ref) for i in self.state.intents.values()):
            self.refuse(asyncpg.UniqueViolationError("UNIQUE (provider, provider_ref)"))
        self.invoice_exists(invoice_id)
        intent = PaymentIntent(
            intent_id,
            invoice_id,
            patient_id,
            amount,
            currency,
            provider,
            provider_ref,
            checkout_url,
            IntentStatus.PENDING,
            created_by,
            _utc(at),
            None,
        )
        self.state.intents[intent_id] = intent
        return intent

    async def by_reference(self, provider: str, reference: str) -> PaymentIntent | None:
        self.ok()
        return next(
            (i for i in self.state.intents.values() if (i.provider, i.provider_ref) == (provider, reference)), None
        )

    async def of_invoice(self, invoice_id: uuid.UUID) -> list[PaymentIntent]:
        self.ok()
        found = [i for i in self.state.intents.values() if i.invoice_id == invoice_id]
        return sorted(found, key=lambda i: (i.created_at, i.id))

    async def mark_succeeded(self, intent_id: uuid.UUID, at: datetime) -> None:
        self.ok()
        if (found := self.state.intents.get(intent_id)) is not None:
            self.state.intents[intent_id] = replace(found, status=IntentStatus.SUCCEEDED, confirmed_at=_utc(at))

    async def record_delivery(self, provider: str, digest: str, at: datetime) -> bool:
        self.ok()
        for d, (_, received) in list(self.state.deliveries.items()):
            if received < at - DELIVERY_MEMORY:
                del self.state.deliveries[d]
        if digest in self.state.deliveries:
            return False  # ON CONFLICT DO NOTHING
        self.state.deliveries[digest] = (provider, _utc(at))
        return True

    async def record_event(self, provider: str, event_id: str, intent_id: uuid.UUID) -> bool:
        self.ok()
        if (provider, event_id) in self.state.provider_events:
            return False  # ON CONFLICT DO NOTHING
        if intent_id not in self.state.intents:
            self.refuse(asyncpg.ForeignKeyViolationError(f"no intent {intent_id}"))
        self.state.provider_events[(provider, event_id)] = intent_id
        return True


class FakeHolders(_Repository):
    async def patients_of(self, account_id: uuid.UUID) -> list[uuid.UUID]:
        self.ok()
        return [p for p, a in self.state.known.items() if a == account_id]


class FakeBillingWork(FakeWork):
    def __init__(self, state: BillingState, clock: Clock) -> None:
        super().__init__(clock)
        self.prices = FakePrices(self, state)
        self.coverage = FakeCoverage(self, state)
        self.encounters = FakeEncounters(self, state)
        self.charges = FakeCharges(self, state)
        self.invoices = FakeInvoices(self, state)
        self.claims = FakeClaims(self, state)
        self.payments = FakePayments(self, state)
        self.intents = FakeIntents(self, state)
        self.holders = FakeHolders(self, state)
        self.patients = FakeKnown(state.known)


class FakeBilling(FakeUnits[BillingState, FakeBillingWork]):
    """Billing's units of work in memory, with the migrations' payers and price list."""

    def __init__(self, clock: Clock = utc_now, state: BillingState | None = None) -> None:
        super().__init__(state or BillingState(), FakeBillingWork, clock)
