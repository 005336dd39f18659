"""Internal HTTP API of the billing service (reached through the gateway).

Every route re-verifies the caller's token. A patient reads and pays only the invoices of the
patient record linked to their own account (any other id answers 404); BILLING and ADMIN see
all. Charges, invoices, claims and payments are a patient's data: reading or changing them is
audited. Money is a decimal string with its currency.
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from his.billing import handlers, store
from his.billing.domain import BillingError, ClaimAction, InvalidTransitionError
from his.events.audit import Action as AuditAction
from his.events.audit import BillingRecordAccessed, record_access
from his.kernel.auth import authenticate, jwks_verifier, require
from his.kernel.db import UnitOfWork
from his.kernel.problems import HTTPException
from his.kernel.security import Principal, TokenVerifier
from his.kernel.service import ServiceContext

STAFF = ("BILLING", "ADMIN")
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


def money(x: Decimal | None) -> str | None:
    return None if x is None else str(x)


def quantity(x: Decimal) -> str:
    """A quantity without trailing zeros or an exponent: 3, 2.5, 100."""
    return format(x.normalize(), "f")


def router(ctx: ServiceContext, verifier: TokenVerifier | None = None) -> APIRouter:
    r = APIRouter(tags=["billing"])
    tokens = verifier or jwks_verifier()

    def audit(
        uow: UnitOfWork, who: Principal, patient_id: uuid.UUID | None, action: AuditAction, resource: str
    ) -> None:
        purpose = "billing" if who.has_any(*STAFF) else "own_record"
        record_access(uow, BillingRecordAccessed, who, patient_id=patient_id, action=action,
                      resource=resource, purpose=purpose)  # fmt: skip

    async def owns(who: Principal, patient_id: uuid.UUID) -> bool:
        if not who.has_any("PATIENT"):
            return False
        async with ctx.db.pool.acquire() as conn:
            account = await store.account_of(conn, patient_id)
        return account is not None and str(account) == who.subject

    async def may_see(who: Principal, patient_id: uuid.UUID) -> bool:
        return who.has_any(*STAFF) or await owns(who, patient_id)

    async def invoice_for(who: Principal, invoice_id: uuid.UUID) -> dict[str, Any]:
        async with ctx.db.pool.acquire() as conn:
            row = await store.get_invoice(conn, invoice_id)
        if row is None or not await may_see(who, row["patient_id"]):
            raise HTTPException(404, "invoice not found")
        return row

    @r.get("/payers")
    async def payers(request: Request) -> dict[str, Any]:
        """Payer plans: coverage percentage per category, co-pay, deductible, cap, exclusions (any signed-in)."""
        await authenticate(request, tokens)
        async with ctx.db.pool.acquire() as conn:
            rows = await store.plan_rows(conn)
        return {"items": [{
            "code": p["code"], "title": p["title"], "currency": p["currency"],
            "coverage": {k: str(v) for k, v in p["coverage"].items()}, "copay": money(p["copay"]),
            "deductible": money(p["deductible"]), "out_of_pocket_cap": money(p["out_of_pocket_cap"]),
            "excluded_categories": p["excluded_categories"], "excluded_codes": p["excluded_codes"],
        } for p in rows]}  # fmt: skip

    @r.get("/price-list")
    async def price_list(request: Request, day: Annotated[date | None, Query(alias="date")] = None) -> dict[str, Any]:
        """The price list valid on ``date`` (default today, hospital time): the latest version in effect."""
        await authenticate(request, tokens)
        on = day or handlers.today(ctx.db.clock())
        async with ctx.db.pool.acquire() as conn:
            version = await store.price_version_on(conn, on)
            lines = await store.price_lines(conn, version["id"]) if version else []
        if version is None:
            raise HTTPException(404, f"no price list in effect on {on.isoformat()}")
        return {"version_id": str(version["id"]), "effective_from": version["effective_from"].isoformat(),
                "date": on.isoformat(), "lines": [{**x, "amount": str(x["amount"])} for x in lines]}  # fmt: skip

    @r.post("/price-list", status_code=201)
    async def new_price_list(body: NewPriceList, request: Request) -> dict[str, Any]:
        """A new price list version (ADMIN): the complete list, in effect from ``effective_from``
        (today or later; prices never change retroactively). 409 if a version starts that day."""
        who = await authenticate(request, tokens)
        require(who, "ADMIN")
        if body.effective_from < handlers.today(ctx.db.clock()):
            raise HTTPException(422, "effective_from cannot be in the past")
        codes = [x.code for x in body.lines]
        if len(set(codes)) != len(codes):
            raise HTTPException(422, "each code appears once in a price list")
        vid = uuid.uuid4()
        try:
            async with ctx.db.uow() as uow:
                await store.add_price_version(uow.conn, vid, body.effective_from,
                                              [x.model_dump() for x in body.lines], uuid.UUID(who.subject))  # fmt: skip
        except store.DuplicateVersionError:
            raise HTTPException(409, "a price list version starts on that date already") from None
        return {"version_id": str(vid), "effective_from": body.effective_from.isoformat(), "lines": len(codes)}

    @r.get("/charges")
    async def charges(
        request: Request, patient_id: uuid.UUID, limit: Annotated[int, Query(ge=1, le=500)] = 200
    ) -> dict[str, Any]:
        """A patient's charges, latest first, with their status and invoice (BILLING, ADMIN)."""
        who = await authenticate(request, tokens)
        require(who, *STAFF)
        async with ctx.db.read() as uow:
            rows = await store.charges_of_patient(uow.conn, patient_id, limit)
            audit(uow, who, patient_id, "read", "charge")
        return {"items": [charge_json(x) for x in rows]}

    @r.get("/invoices")
    async def invoices(
        request: Request,
        patient_id: uuid.UUID | None = None,
        status: Annotated[str | None, Query(max_length=20)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        """Invoices, latest first: of one patient (the patient themself, BILLING, ADMIN); a patient
        without ``patient_id`` gets their own; staff without it get everyone's."""
        who = await authenticate(request, tokens)
        if patient_id is not None:
            if not await may_see(who, patient_id):
                raise HTTPException(404, "patient not found")
            ids: list[uuid.UUID] | None = [patient_id]
        elif who.has_any(*STAFF):
            ids = None
        elif who.has_any("PATIENT"):
            async with ctx.db.pool.acquire() as conn:
                ids = await store.patients_of_account(conn, uuid.UUID(who.subject))
        else:
            raise HTTPException(403, "not allowed for your role")
        async with ctx.db.read() as uow:
            rows = await store.invoices(uow.conn, ids, status, limit)
            items = [await invoice_json(uow, x) for x in rows]
            for pid in sorted({x["patient_id"] for x in rows}):
                audit(uow, who, pid, "read", "invoice")
        return {"items": items}

    @r.get("/invoices/{invoice_id}")
    async def invoice(invoice_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """One invoice with its lines, shares, payer and encounter (its patient, BILLING, ADMIN)."""
        who = await authenticate(request, tokens)
        row = await invoice_for(who, invoice_id)
        async with ctx.db.read() as uow:
            out = await invoice_json(uow, row)
            audit(uow, who, row["patient_id"], "read", "invoice")
        return out

    @r.get("/invoices/{invoice_id}/payments")
    async def payments(invoice_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """Payments and refunds of an invoice (its patient, BILLING, ADMIN)."""
        who = await authenticate(request, tokens)
        row = await invoice_for(who, invoice_id)
        async with ctx.db.read() as uow:
            rows = await store.payments_of(uow.conn, invoice_id)
            audit(uow, who, row["patient_id"], "read", "payment")
        return {"items": [handlers.payment_json(x) for x in rows]}

    async def take(
        kind: str, invoice_id: uuid.UUID, body: MoneyIn, request: Request, key: str | None, *, roles: tuple[str, ...]
    ) -> Response:
        who = await authenticate(request, tokens)
        row = await invoice_for(who, invoice_id)
        if not who.has_any(*roles) and not (kind == "payment" and await owns(who, row["patient_id"])):
            raise HTTPException(403, f"not allowed to record a {kind}")
        if key is None or not key.strip():
            raise HTTPException(400, "the Idempotency-Key header is required")
        if len(key) > 255:
            raise HTTPException(400, "the Idempotency-Key is at most 255 characters")
        m = handlers.Money(kind, invoice_id, body.amount, body.currency, body.method)
        try:
            async with ctx.db.uow() as uow:
                answer = await handlers.take(uow, uuid.UUID(who.subject), key, m)
                if not answer.replayed:
                    audit(uow, who, row["patient_id"], "create", kind)
        except BillingError as exc:
            raise HTTPException(422, str(exc)) from None
        except handlers.ConflictError as exc:
            raise HTTPException(409, str(exc)) from None
        headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
        return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)

    @r.post("/invoices/{invoice_id}/payments", status_code=201)
    async def pay(
        invoice_id: uuid.UUID,
        body: MoneyIn,
        request: Request,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Pay (part of) the patient's share (the patient themself, BILLING). Needs an
        ``Idempotency-Key``: the same key and body answer the same again; another body → 409.
        The amount is > 0, in the invoice currency, at most the outstanding share (else 422)."""
        return await take("payment", invoice_id, body, request, idempotency_key, roles=("BILLING",))

    @r.post("/invoices/{invoice_id}/refunds", status_code=201)
    async def refund(
        invoice_id: uuid.UUID,
        body: MoneyIn,
        request: Request,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Refund money paid on an invoice (BILLING, ADMIN), at most what was paid; with an ``Idempotency-Key``."""
        return await take("refund", invoice_id, body, request, idempotency_key, roles=STAFF)

    @r.get("/claims")
    async def claims(
        request: Request,
        status: Annotated[str | None, Query(max_length=20)] = None,
        payer: Annotated[str | None, Query(max_length=32)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        """Claims for insurers' shares, latest first (BILLING, ADMIN)."""
        who = await authenticate(request, tokens)
        require(who, *STAFF)
        async with ctx.db.read() as uow:
            rows = await store.claims(uow.conn, status, payer, limit)
            for pid in sorted({x["patient_id"] for x in rows}):  # each claim names its patient
                audit(uow, who, pid, "read", "claim")
        return {"items": [claim_json(x) for x in rows]}

    @r.get("/claims/{claim_id}")
    async def claim(claim_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """One claim (BILLING, ADMIN)."""
        who = await authenticate(request, tokens)
        require(who, *STAFF)
        async with ctx.db.read() as uow:
            row = await store.get_claim(uow.conn, claim_id)
            if row is None:
                raise HTTPException(404, "claim not found")
            audit(uow, who, row["patient_id"], "read", "claim")
        return claim_json(row)

    @r.post("/claims/{claim_id}/{action}")
    async def claim_step(claim_id: uuid.UUID, action: ClaimAction, request: Request) -> dict[str, Any]:
        """Submit, accept, reject or mark paid a claim (BILLING, ADMIN); an invalid transition is 409."""
        who = await authenticate(request, tokens)
        require(who, *STAFF)
        try:
            async with ctx.db.uow() as uow:
                row = await handlers.act_on_claim(uow, claim_id, action)
                audit(uow, who, row["patient_id"], "update", "claim")
        except handlers.UnknownError:
            raise HTTPException(404, "claim not found") from None
        except InvalidTransitionError as exc:
            raise HTTPException(409, str(exc)) from None
        return claim_json(row)

    return r


async def invoice_json(uow: UnitOfWork, row: dict[str, Any]) -> dict[str, Any]:
    conn = uow.conn
    enc = await store.get_encounter(conn, row["encounter_id"])
    assert enc is not None
    if row["status"] == "draft":  # still collecting: its lines are its charges, not yet priced
        lines = [{"charge_id": str(c["id"]), "code": c["code"], "category": c["category"],
                  "quantity": quantity(c["quantity"]), "unit_price": str(c["unit_price"]),
                  "total": str(c["amount"]), "insurer_share": None, "patient_share": None, "excluded": None}
                 for c in await store.active_charges(conn, row["id"])]  # fmt: skip
        total: str | None = str(sum((Decimal(x["total"]) for x in lines), Decimal("0.00")))
    else:
        lines = [{"charge_id": str(x["charge_id"]), "code": x["code"], "category": x["category"],
                  "quantity": quantity(x["quantity"]), "unit_price": str(x["unit_price"]),
                  "total": str(x["total"]), "insurer_share": str(x["insurer_share"]),
                  "patient_share": str(x["patient_share"]), "excluded": x["excluded"],
                  "deductible": str(x["deductible"]), "copay": str(x["copay"])}
                 for x in await store.lines_of(conn, row["id"])]  # fmt: skip
        total = money(row["total"])
    outstanding = row["patient_share"] - row["paid"] if row["patient_share"] is not None else None
    return {
        "id": str(row["id"]), "patient_id": str(row["patient_id"]), "kind": row["kind"], "status": row["status"],
        "payer": row["payer"], "currency": row["currency"], "service_date": row["service_date"].isoformat(),
        "total": total, "insurer_share": money(row["insurer_share"]), "patient_share": money(row["patient_share"]),
        "paid": money(row["paid"]), "outstanding": money(outstanding),
        "replaces": str(row["replaces"]) if row["replaces"] else None,
        "encounter": {"id": str(enc["id"]), "kind": enc["kind"], "source_id": str(enc["source_id"]),
                      "started_at": enc["started_at"].isoformat(),
                      "ended_at": enc["ended_at"].isoformat() if enc["ended_at"] else None},
        "lines": lines,
        "issued_at": row["issued_at"].isoformat() if row["issued_at"] else None,
        "voided_at": row["voided_at"].isoformat() if row["voided_at"] else None,
    }  # fmt: skip


def charge_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]), "patient_id": str(row["patient_id"]), "source": row["source_kind"],
        "source_id": str(row["source_id"]), "code": row["code"], "category": row["category"],
        "quantity": quantity(row["quantity"]), "unit_price": str(row["unit_price"]),
        "amount": str(row["amount"]), "currency": row["currency"], "service_date": row["service_date"].isoformat(),
        "status": row["status"], "invoice_id": str(row["invoice_id"]) if row["invoice_id"] else None,
    }  # fmt: skip


def claim_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]), "invoice_id": str(row["invoice_id"]), "patient_id": str(row["patient_id"]),
        "payer": row["payer"], "amount": str(row["amount"]), "currency": row["currency"], "status": row["status"],
        "created_at": row["created_at"].isoformat(), "updated_at": row["updated_at"].isoformat(),
    }  # fmt: skip
