"""Tables and queries of the billing service: the repositories of ``his.billing.ports`` over one
connection of a unit of work (``PgPrices`` … ``PgIntents``), the unit (``BillingUnit``) and the
units over the database (``BillingStore(db)``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import asyncpg

from his.billing.domain import (
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
    Invoice,
    InvoiceDetail,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
    Payer,
    Payment,
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
from his.billing.store.online import PgIntents
from his.clients import replica
from his.clients.replica import KnownPatients
from his.kernel.db import Connection, Record, Unit, UnitOfWork, UnitsOn

__all__ = ["BillingStore", "BillingUnit", "DuplicateVersionError", "PgIntents"]


# --- plans and prices ---------------------------------------------------------------------------


def _price(row: Record) -> PriceEntry:
    return PriceEntry(code=row["code"], category=row["category"], amount=row["amount"], currency=row["currency"])


class PgPrices:
    """Billing's ``Prices`` on one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def payers(self) -> list[Payer]:
        """Every payer plan, by code, with its coverage by category and its exclusions."""
        conn = self.conn
        rows = await conn.fetch("SELECT * FROM payer_plan ORDER BY code")
        coverage = await conn.fetch("SELECT * FROM plan_coverage ORDER BY plan_code, category")
        exclusions = await conn.fetch("SELECT * FROM plan_exclusion ORDER BY plan_code, kind, value")

        def excluded(code: str, kind: str) -> tuple[str, ...]:
            return tuple(e["value"] for e in exclusions if e["plan_code"] == code and e["kind"] == kind)

        return [
            Payer(
                code=p["code"],
                title=p["title"],
                currency=p["currency"],
                coverage={c["category"]: c["percentage"] for c in coverage if c["plan_code"] == p["code"]},
                copay=p["copay"],
                deductible=p["deductible"],
                out_of_pocket_cap=p["out_of_pocket_cap"],
                excluded_categories=excluded(p["code"], "category"),
                excluded_codes=excluded(p["code"], "code"),
            )
            for p in rows
        ]

    async def plans(self) -> dict[str, Plan]:
        return {p.code: p.plan for p in await self.payers()}

    async def version_on(self, day: date) -> PriceListVersion | None:
        """The price list valid on ``day``: the latest version effective on or before it."""
        row = await self.conn.fetchrow(
            "SELECT * FROM price_list_version WHERE effective_from <= $1 ORDER BY effective_from DESC LIMIT 1", day
        )
        if row is None:
            return None
        return PriceListVersion(
            id=row["id"],
            effective_from=row["effective_from"],
            created_by=row["created_by"],
            created_at=row["created_at"],
        )

    async def lines(self, version_id: uuid.UUID) -> list[PriceEntry]:
        rows = await self.conn.fetch(
            "SELECT code, category, amount, currency FROM price_line WHERE version_id = $1 ORDER BY code", version_id
        )
        return [_price(r) for r in rows]

    async def price_on(self, code: str, day: date) -> PriceEntry | None:
        """The line for ``code`` in the price list valid on ``day`` (None: not priced then)."""
        row = await self.conn.fetchrow(
            """SELECT l.code, l.category, l.amount, l.currency FROM price_line l
               WHERE l.code = $1 AND l.version_id = (
                   SELECT id FROM price_list_version WHERE effective_from <= $2
                   ORDER BY effective_from DESC LIMIT 1)""",
            code,
            day,
        )
        return _price(row) if row else None

    async def add_version(
        self, vid: uuid.UUID, effective_from: date, lines: Sequence[PriceEntry], actor: uuid.UUID, at: datetime
    ) -> None:
        try:
            await self.conn.execute(
                "INSERT INTO price_list_version (id, effective_from, created_by, created_at) VALUES ($1, $2, $3, $4)",
                vid,
                effective_from,
                actor,
                at,
            )
        except asyncpg.UniqueViolationError as exc:
            raise DuplicateVersionError from exc
        await self.conn.executemany(
            "INSERT INTO price_line (version_id, code, category, amount, currency) VALUES ($1, $2, $3, $4, $5)",
            [(vid, x.code, x.category, x.amount, x.currency) for x in lines],
        )


# --- patients and their coverage -------------------------------------------------------------


class PgCoverage:
    """Billing's ``Coverage`` on one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(
        self, patient_id: uuid.UUID, payer: str | None, effective_from: date, event_id: uuid.UUID, changed_at: datetime
    ) -> None:
        await self.conn.execute(
            """INSERT INTO coverage (patient_id, payer, effective_from, event_id, changed_at)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING""",
            patient_id,
            payer,
            effective_from,
            event_id,
            changed_at,
        )

    async def payer_on(self, patient_id: uuid.UUID, day: date) -> str | None:
        """The payer code valid on ``day``: of the changes effective by then, the latest effective,
        and of those the one patients made last; None: self-pay."""
        payer: str | None = await self.conn.fetchval(
            """SELECT payer FROM coverage WHERE patient_id = $1 AND effective_from <= $2
               ORDER BY effective_from DESC, changed_at DESC, id DESC LIMIT 1""",
            patient_id,
            day,
        )
        return payer

    async def add_ward_tariff(self, event_id: uuid.UUID, tariff: WardTariff) -> None:
        """Remember a ward's corrected tariff (once per event)."""
        await self.conn.execute(
            """INSERT INTO ward_tariff (event_id, ward_id, ward_type, daily_rate, currency, changed_at)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING""",
            event_id,
            tariff.ward_id,
            tariff.ward_type,
            tariff.daily_rate,
            tariff.currency,
            tariff.changed_at,
        )

    async def ward_tariff_after(self, ward_id: uuid.UUID, after: datetime, currencies: list[str]) -> WardTariff | None:
        """The ward's latest tariff corrected after ``after`` into one of ``currencies``, if any."""
        row = await self.conn.fetchrow(
            """SELECT ward_id, ward_type, daily_rate, currency, changed_at FROM ward_tariff
               WHERE ward_id = $1 AND changed_at > $2 AND currency = ANY($3::text[])
               ORDER BY changed_at DESC LIMIT 1""",
            ward_id,
            after,
            currencies,
        )
        if row is None:
            return None
        return WardTariff(
            ward_id=row["ward_id"],
            ward_type=row["ward_type"],
            daily_rate=row["daily_rate"],
            currency=row["currency"],
            changed_at=row["changed_at"],
        )


# --- encounters --------------------------------------------------------------------------------


def _encounter(row: Record) -> Encounter:
    return Encounter(
        id=row["id"],
        patient_id=row["patient_id"],
        kind=EncounterKind(row["kind"]),
        source_id=row["source_id"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        expected_nights=row["expected_nights"],
        status=EncounterStatus(row["status"]),
    )


async def get_encounter(conn: Connection, encounter_id: uuid.UUID) -> Encounter | None:
    row = await conn.fetchrow("SELECT * FROM encounter WHERE id = $1", encounter_id)
    return _encounter(row) if row else None


class PgEncounters:
    """Billing's ``Encounters`` on one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def open(
        self, kind: EncounterKind, source_id: uuid.UUID, patient_id: uuid.UUID, started_at: datetime
    ) -> Encounter:
        """The encounter of a source (created open if new), locked for this transaction."""
        await self.conn.execute(
            """INSERT INTO encounter (id, patient_id, kind, source_id, started_at, status)
               VALUES ($1, $2, $3, $4, $5, 'open') ON CONFLICT (kind, source_id) DO NOTHING""",
            uuid.uuid4(),
            patient_id,
            kind.value,
            source_id,
            started_at,
        )
        row = await self.conn.fetchrow(
            "SELECT * FROM encounter WHERE kind = $1 AND source_id = $2 FOR UPDATE", kind.value, source_id
        )
        assert row is not None
        return _encounter(row)

    async def admitted(self, encounter_id: uuid.UUID, started_at: datetime) -> None:
        await self.conn.execute("UPDATE encounter SET started_at = $2 WHERE id = $1", encounter_id, started_at)

    async def discharged(self, encounter_id: uuid.UUID, ended_at: datetime, nights: int) -> None:
        await self.conn.execute(
            "UPDATE encounter SET ended_at = $2, expected_nights = $3 WHERE id = $1", encounter_id, ended_at, nights
        )

    async def close_if_complete(self, encounter_id: uuid.UUID) -> bool:
        """Close a discharged admission once every bed night its discharge counted has arrived."""
        closed = await self.conn.fetchval(
            """UPDATE encounter e SET status = 'closed'
               WHERE e.id = $1 AND e.status = 'open' AND e.ended_at IS NOT NULL
                 AND (SELECT count(*) FROM charge c WHERE c.encounter_id = e.id AND c.source_kind = 'bed_charge')
                     >= e.expected_nights
               RETURNING 1""",
            encounter_id,
        )
        return closed is not None

    async def admission_at(self, patient_id: uuid.UUID, at: datetime) -> uuid.UUID | None:
        """The admission the patient was in at ``at``, if any (its admission id)."""
        source: uuid.UUID | None = await self.conn.fetchval(
            """SELECT source_id FROM encounter WHERE kind = 'admission' AND patient_id = $1 AND started_at <= $2
               AND (ended_at IS NULL OR ended_at >= $2) ORDER BY started_at DESC LIMIT 1""",
            patient_id,
            at,
        )
        return source

    async def get(self, encounter_id: uuid.UUID) -> Encounter | None:
        return await get_encounter(self.conn, encounter_id)


# --- charges -----------------------------------------------------------------------------------

CHARGE_COLUMNS = """id, patient_id, source_kind, source_id, line_key, code, category, quantity, unit_price, amount,
                    currency, service_at, service_date, status, encounter_id, invoice_id"""


def _charge(row: Record) -> Charge:
    return Charge(
        id=row["id"],
        patient_id=row["patient_id"],
        source_kind=SourceKind(row["source_kind"]),
        source_id=row["source_id"],
        line_key=row["line_key"],
        code=row["code"],
        category=row["category"],
        quantity=row["quantity"],
        unit_price=row["unit_price"],
        amount=row["amount"],
        currency=row["currency"],
        service_at=row["service_at"],
        service_date=row["service_date"],
        status=ChargeStatus(row["status"]),
        encounter_id=row["encounter_id"],
        invoice_id=row["invoice_id"],
    )


async def active_charges(conn: Connection, invoice_id: uuid.UUID) -> list[Charge]:
    rows = await conn.fetch(
        f"""SELECT {CHARGE_COLUMNS} FROM charge WHERE invoice_id = $1 AND status = 'active'
            ORDER BY service_at, code, line_key, id""",
        invoice_id,
    )
    return [_charge(r) for r in rows]


class PgCharges:
    """Billing's ``Charges`` on one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(self, charge: Charge) -> bool:
        """Record a charge; False if this source's line was charged already (a redelivery)."""
        inserted = await self.conn.fetchval(
            f"""INSERT INTO charge ({CHARGE_COLUMNS})
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                ON CONFLICT (source_kind, source_id, line_key) DO NOTHING RETURNING id""",
            charge.id,
            charge.patient_id,
            charge.source_kind.value,
            charge.source_id,
            charge.line_key,
            charge.code,
            charge.category,
            charge.quantity,
            charge.unit_price,
            charge.amount,
            charge.currency,
            charge.service_at,
            charge.service_date,
            charge.status.value,
            charge.encounter_id,
            charge.invoice_id,
        )
        return inserted is not None

    async def attach(self, charge_ids: list[uuid.UUID], invoice_id: uuid.UUID) -> None:
        await self.conn.execute("UPDATE charge SET invoice_id = $2 WHERE id = ANY($1::uuid[])", charge_ids, invoice_id)

    async def active_on(self, invoice_id: uuid.UUID) -> list[Charge]:
        return await active_charges(self.conn, invoice_id)

    async def visits_within(self, patient_id: uuid.UUID, start: datetime, end: datetime | None) -> list[Charge]:
        """Active charges of the patient in [start, end] that are not on an admission."""
        rows = await self.conn.fetch(
            f"""SELECT {", ".join("c." + x.strip() for x in CHARGE_COLUMNS.split(","))}
                FROM charge c JOIN encounter e ON e.id = c.encounter_id
                WHERE c.patient_id = $1 AND c.status = 'active' AND e.kind <> 'admission'
                  AND c.service_at >= $2 AND ($3::timestamptz IS NULL OR c.service_at <= $3)
                ORDER BY c.service_at, c.id FOR UPDATE OF c""",
            patient_id,
            start,
            end,
        )
        return [_charge(r) for r in rows]

    async def move_to_encounter(self, charge_ids: list[uuid.UUID], encounter_id: uuid.UUID) -> None:
        await self.conn.execute(
            "UPDATE charge SET encounter_id = $2, invoice_id = NULL WHERE id = ANY($1::uuid[])",
            charge_ids,
            encounter_id,
        )

    async def mark_source_voided(self, kind: SourceKind, source_id: uuid.UUID) -> None:
        await self.conn.execute(
            "INSERT INTO voided_source (source_kind, source_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            kind.value,
            source_id,
        )

    async def source_voided(self, kind: SourceKind, source_id: uuid.UUID) -> bool:
        found = await self.conn.fetchval(
            "SELECT 1 FROM voided_source WHERE source_kind = $1 AND source_id = $2", kind.value, source_id
        )
        return found is not None

    async def void(self, kind: SourceKind, source_id: uuid.UUID, at: datetime) -> list[uuid.UUID]:
        """Void the active charges of a source; returns the invoices they were on."""
        rows = await self.conn.fetch(
            """UPDATE charge SET status = 'void', voided_at = $3
               WHERE source_kind = $1 AND source_id = $2 AND status = 'active' RETURNING invoice_id""",
            kind.value,
            source_id,
            at,
        )
        return sorted({r[0] for r in rows if r[0] is not None})

    async def of_patient(self, patient_id: uuid.UUID, limit: int) -> list[Charge]:
        rows = await self.conn.fetch(
            f"SELECT {CHARGE_COLUMNS} FROM charge WHERE patient_id = $1 ORDER BY service_at DESC, id LIMIT $2",
            patient_id,
            limit,
        )
        return [_charge(r) for r in rows]


# --- invoices ----------------------------------------------------------------------------------


def _invoice(row: Record) -> Invoice:
    return Invoice(
        id=row["id"],
        patient_id=row["patient_id"],
        encounter_id=row["encounter_id"],
        kind=InvoiceKind(row["kind"]),
        replaces=row["replaces"],
        status=InvoiceStatus(row["status"]),
        currency=row["currency"],
        service_date=row["service_date"],
        payer=row["payer"],
        plan_year=row["plan_year"],
        total=row["total"],
        insurer_share=row["insurer_share"],
        patient_share=row["patient_share"],
        paid=row["paid"],
        deductible_applied=row["deductible_applied"],
        out_of_pocket_applied=row["out_of_pocket_applied"],
        issued_at=row["issued_at"],
        voided_at=row["voided_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def get_invoice(conn: Connection, invoice_id: uuid.UUID, *, lock: bool = False) -> Invoice | None:
    row = await conn.fetchrow(f"SELECT * FROM invoice WHERE id = $1{' FOR UPDATE' if lock else ''}", invoice_id)
    return _invoice(row) if row else None


class PgInvoices:
    """Billing's ``Invoices`` (and the accumulators they are priced with) on one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def draft_of(self, encounter_id: uuid.UUID) -> Invoice | None:
        row = await self.conn.fetchrow(
            "SELECT * FROM invoice WHERE encounter_id = $1 AND status = 'draft' FOR UPDATE", encounter_id
        )
        return _invoice(row) if row else None

    async def has_issued(self, encounter_id: uuid.UUID) -> bool:
        found = await self.conn.fetchval(
            "SELECT 1 FROM invoice WHERE encounter_id = $1 AND issued_at IS NOT NULL LIMIT 1", encounter_id
        )
        return found is not None

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
        """A new draft invoice (a replacement names the invoice it ``replaces`` and takes what was paid on it)."""
        saved = await self.conn.fetchrow(
            """INSERT INTO invoice (id, patient_id, encounter_id, kind, replaces, status, currency, service_date, paid,
                                    created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, 'draft', $6, $7, $8, $9, $9) RETURNING *""",
            invoice_id,
            patient_id,
            encounter_id,
            kind.value,
            replaces,
            currency,
            service_date,
            paid,
            at,
        )
        assert saved is not None
        return _invoice(saved)

    async def set_service_date(self, invoice_id: uuid.UUID, day: date) -> None:
        await self.conn.execute("UPDATE invoice SET service_date = $2 WHERE id = $1", invoice_id, day)

    async def get(self, invoice_id: uuid.UUID, *, lock: bool = False) -> Invoice | None:
        return await get_invoice(self.conn, invoice_id, lock=lock)

    async def write_lines(self, lines: Sequence[InvoiceLine]) -> None:
        await self.conn.executemany(
            """INSERT INTO invoice_line (invoice_id, position, charge_id, code, category, quantity, unit_price, total,
                                         insurer_share, patient_share, excluded, deductible, copay)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
            [
                (
                    x.invoice_id,
                    x.position,
                    x.charge_id,
                    x.code,
                    x.category,
                    x.quantity,
                    x.unit_price,
                    x.total,
                    x.insurer_share,
                    x.patient_share,
                    x.excluded,
                    x.deductible,
                    x.copay,
                )
                for x in lines
            ],
        )

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
        """Make a draft payable: priced under ``payer``'s plan of ``plan_year``."""
        row = await self.conn.fetchrow(
            """UPDATE invoice SET status = $2, payer = $3, plan_year = $4, total = $5, insurer_share = $6,
                      patient_share = $7, deductible_applied = $8, out_of_pocket_applied = $9, issued_at = $10,
                      updated_at = $10
               WHERE id = $1 RETURNING *""",
            invoice_id,
            status.value,
            payer,
            plan_year,
            priced.total,
            priced.insurer_share,
            priced.patient_share,
            priced.deductible_applied,
            priced.out_of_pocket_applied,
            at,
        )
        assert row is not None
        return _invoice(row)

    async def mark_void(self, invoice_id: uuid.UUID, *, keep_paid: bool, at: datetime) -> None:
        await self.conn.execute(
            """UPDATE invoice SET status = 'void', voided_at = $3, updated_at = $3,
                      paid = CASE WHEN $2 THEN paid ELSE 0 END WHERE id = $1""",
            invoice_id,
            keep_paid,
            at,
        )

    async def move_open_items(self, old: uuid.UUID, new: uuid.UUID) -> None:
        """Active charges and payments of a voided invoice go to its replacement."""
        await self.conn.execute(
            "UPDATE charge SET invoice_id = $2 WHERE invoice_id = $1 AND status = 'active'", old, new
        )
        await self.conn.execute("UPDATE payment SET invoice_id = $2 WHERE invoice_id = $1", old, new)

    async def set_paid(self, invoice_id: uuid.UUID, paid: Decimal, status: InvoiceStatus, at: datetime) -> None:
        await self.conn.execute(
            "UPDATE invoice SET paid = $2, status = $3, updated_at = $4 WHERE id = $1",
            invoice_id,
            paid,
            status.value,
            at,
        )

    async def lines_of(self, invoice_id: uuid.UUID) -> list[InvoiceLine]:
        rows = await self.conn.fetch("SELECT * FROM invoice_line WHERE invoice_id = $1 ORDER BY position", invoice_id)
        return [
            InvoiceLine(
                invoice_id=r["invoice_id"],
                position=r["position"],
                charge_id=r["charge_id"],
                code=r["code"],
                category=r["category"],
                quantity=r["quantity"],
                unit_price=r["unit_price"],
                total=r["total"],
                insurer_share=r["insurer_share"],
                patient_share=r["patient_share"],
                excluded=r["excluded"],
                deductible=r["deductible"],
                copay=r["copay"],
            )
            for r in rows
        ]

    async def detailed(self, invoice: Invoice) -> InvoiceDetail:
        """An invoice with its encounter and lines: while a draft, its charges (not yet priced)."""
        enc = await get_encounter(self.conn, invoice.encounter_id)
        assert enc is not None
        if invoice.status is InvoiceStatus.DRAFT:
            return InvoiceDetail(invoice, enc, charges=tuple(await active_charges(self.conn, invoice.id)))
        return InvoiceDetail(invoice, enc, lines=tuple(await self.lines_of(invoice.id)))

    async def issued_since(self, patient_id: uuid.UUID, since: date) -> list[Invoice]:
        """The patient's issued invoices (not draft, not void) for services on or after ``since``,
        locked, oldest first."""
        rows = await self.conn.fetch(
            """SELECT * FROM invoice WHERE patient_id = $1 AND service_date >= $2
               AND status NOT IN ('draft', 'void') ORDER BY service_date, created_at, id FOR UPDATE""",
            patient_id,
            since,
        )
        return [_invoice(r) for r in rows]

    async def find(
        self, patient_ids: list[uuid.UUID] | None, status: InvoiceStatus | None, limit: int
    ) -> list[Invoice]:
        rows = await self.conn.fetch(
            """SELECT * FROM invoice WHERE ($1::uuid[] IS NULL OR patient_id = ANY($1::uuid[]))
               AND ($2::text IS NULL OR status = $2) ORDER BY created_at DESC, id LIMIT $3""",
            patient_ids,
            status.value if status is not None else None,
            limit,
        )
        return [_invoice(r) for r in rows]

    async def accumulator(self, patient_id: uuid.UUID, payer: str, year: int) -> Accumulator:
        """The patient's year under ``payer``, locked until the transaction ends."""
        await self.conn.execute(
            "INSERT INTO accumulator (patient_id, payer, year) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            patient_id,
            payer,
            year,
        )
        row = await self.conn.fetchrow(
            "SELECT * FROM accumulator WHERE patient_id = $1 AND payer = $2 AND year = $3 FOR UPDATE",
            patient_id,
            payer,
            year,
        )
        assert row is not None
        return Accumulator(row["deductible_used"], row["out_of_pocket"])

    async def save_accumulator(self, patient_id: uuid.UUID, payer: str, year: int, acc: Accumulator) -> None:
        await self.conn.execute(
            """UPDATE accumulator SET deductible_used = $4, out_of_pocket = $5
               WHERE patient_id = $1 AND payer = $2 AND year = $3""",
            patient_id,
            payer,
            year,
            acc.deductible_used,
            acc.out_of_pocket,
        )


# --- claims --------------------------------------------------------------------------------------


def _claim(row: Record) -> Claim:
    return Claim(
        id=row["id"],
        invoice_id=row["invoice_id"],
        patient_id=row["patient_id"],
        payer=row["payer"],
        amount=row["amount"],
        currency=row["currency"],
        status=ClaimStatus(row["status"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class PgClaims:
    """Billing's ``Claims`` on one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

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
        row = await self.conn.fetchrow(
            """INSERT INTO claim (id, invoice_id, patient_id, payer, amount, currency, status, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, 'draft', $7, $7) RETURNING *""",
            claim_id,
            invoice_id,
            patient_id,
            payer,
            amount,
            currency,
            at,
        )
        assert row is not None
        return _claim(row)

    async def get(self, claim_id: uuid.UUID, *, lock: bool = False) -> Claim | None:
        row = await self.conn.fetchrow(f"SELECT * FROM claim WHERE id = $1{' FOR UPDATE' if lock else ''}", claim_id)
        return _claim(row) if row else None

    async def of_invoice(self, invoice_id: uuid.UUID) -> Claim | None:
        row = await self.conn.fetchrow("SELECT * FROM claim WHERE invoice_id = $1 FOR UPDATE", invoice_id)
        return _claim(row) if row else None

    async def set_status(self, claim_id: uuid.UUID, status: ClaimStatus, at: datetime) -> Claim:
        row = await self.conn.fetchrow(
            "UPDATE claim SET status = $2, updated_at = $3 WHERE id = $1 RETURNING *", claim_id, status.value, at
        )
        assert row is not None
        return _claim(row)

    async def find(self, status: ClaimStatus | None, payer: str | None, limit: int) -> list[Claim]:
        rows = await self.conn.fetch(
            """SELECT * FROM claim WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR payer = $2)
               ORDER BY created_at DESC, id LIMIT $3""",
            status.value if status is not None else None,
            payer,
            limit,
        )
        return [_claim(r) for r in rows]


# --- payments and idempotency keys -------------------------------------------------------------


def _payment(row: Record) -> Payment:
    return Payment(
        id=row["id"],
        invoice_id=row["invoice_id"],
        patient_id=row["patient_id"],
        kind=PaymentKind(row["kind"]),
        amount=row["amount"],
        currency=row["currency"],
        method=PaymentMethod(row["method"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        provider=row["provider"],
        intent_id=row["intent_id"],
    )


class PgPayments:
    """Billing's ``Payments`` and idempotency keys on one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

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
        saved = await self.conn.fetchrow(
            """INSERT INTO payment (id, invoice_id, patient_id, kind, amount, currency, method, created_by, provider,
                                    intent_id, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *""",
            payment_id,
            invoice_id,
            patient_id,
            kind.value,
            amount,
            currency,
            method.value,
            created_by,
            provider,
            intent_id,
            at,
        )
        assert saved is not None
        return _payment(saved)

    async def of_invoice(self, invoice_id: uuid.UUID) -> list[Payment]:
        rows = await self.conn.fetch("SELECT * FROM payment WHERE invoice_id = $1 ORDER BY created_at, id", invoice_id)
        return [_payment(r) for r in rows]

    async def claim_key(self, actor: uuid.UUID, key: str, request_hash: str) -> bool:
        """Take an idempotency key for this request; False if it is taken (by a committed request).

        A concurrent holder of the same key makes this wait for its outcome: the unique key decides.
        """
        taken = await self.conn.fetchval(
            """INSERT INTO idempotency_key (actor, key, request_hash, response_status, response_body)
               VALUES ($1, $2, $3, 0, '') ON CONFLICT DO NOTHING RETURNING 1""",
            actor,
            key,
            request_hash,
        )
        return taken is not None

    async def stored_response(self, actor: uuid.UUID, key: str) -> StoredResponse | None:
        row = await self.conn.fetchrow(
            "SELECT request_hash, response_status, response_body FROM idempotency_key WHERE actor = $1 AND key = $2",
            actor,
            key,
        )
        if row is None:
            return None
        return StoredResponse(
            request_hash=row["request_hash"], status=row["response_status"], body=row["response_body"]
        )

    async def store_response(self, actor: uuid.UUID, key: str, status: int, body: str) -> None:
        await self.conn.execute(
            "UPDATE idempotency_key SET response_status = $3, response_body = $4 WHERE actor = $1 AND key = $2",
            actor,
            key,
            status,
            body,
        )


@dataclass(frozen=True)
class PgHolders:
    """Billing's ``Holders``: the accounts of the replica's patients, on one connection."""

    conn: Connection

    async def patients_of(self, account_id: uuid.UUID) -> list[uuid.UUID]:
        return await replica.patients_of_account(self.conn, account_id)


class BillingUnit(Unit):
    """A unit of work of billing on PostgreSQL."""

    def __init__(self, uow: UnitOfWork) -> None:
        super().__init__(uow)
        self.prices = PgPrices(self.conn)
        self.coverage = PgCoverage(self.conn)
        self.encounters = PgEncounters(self.conn)
        self.charges = PgCharges(self.conn)
        self.invoices = PgInvoices(self.conn)
        self.claims = PgClaims(self.conn)
        self.payments = PgPayments(self.conn)
        self.intents = PgIntents(self.conn)
        self.holders = PgHolders(self.conn)
        self.patients = KnownPatients(self.conn)


class BillingStore(UnitsOn[BillingUnit]):
    """Billing's units of work (``his.billing.ports.BillingUnits``) on its database."""

    def unit(self, uow: UnitOfWork) -> BillingUnit:
        return BillingUnit(uow)
