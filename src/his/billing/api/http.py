"""Internal HTTP API of the billing service (reached through the gateway).

Every route re-verifies the caller's token (except the payment provider's webhook, which carries
the provider's signature instead) and decides through ``his.billing.policy``: a patient reads the
invoices of the patient record linked to their own account (another patient's id answers 404)
and pays them online through the payment provider; BILLING records payments taken at a desk;
BILLING and ADMIN see all; other staff are refused (403). Charges, invoices, claims and payments
are a patient's data: every decision on them, allowed or denied, is audited. Money is a decimal
string with its currency.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from his.access import NONE, Decision, Relationship, Role
from his.billing import handlers, online, policy, store
from his.billing.domain import BillingError, ClaimAction, ClaimStatus, InvalidTransitionError, InvoiceStatus
from his.billing.payments import MalformedConfirmationError, PaymentProvider, SignatureError
from his.billing.policy import STAFF, Operation
from his.billing.store import online as online_store
from his.clients import replica
from his.clients.patients import refused
from his.events.audit import Action as AuditAction
from his.events.audit import BillingRecordAccessed, record_access, record_workload_access
from his.kernel import faults
from his.kernel.auth import authenticate, jwks_verifier, require
from his.kernel.db import UnitOfWork
from his.kernel.params import CalendarDate, Limit, one_of
from his.kernel.problems import HTTPException, ProblemError
from his.kernel.security import Principal, TokenVerifier
from his.kernel.service import ServiceContext

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


#: How money is taken at a desk (card: the desk's terminal). Online money comes only from the
#: payment provider's confirmation.
DESK_METHODS = ("cash", "card", "bank_transfer")
#: Test-only fault point (``his.kernel.faults``): a desk payment or refund committed, its answer not sent.
MONEY_COMMITTED = faults.point("billing.payment.after_commit", "a desk payment or refund committed, not yet answered")


class OnlineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Amount
    currency: Currency


def money(x: Decimal | None) -> str | None:
    return None if x is None else str(x)


def quantity(x: Decimal) -> str:
    """A quantity without trailing zeros or an exponent: 3, 2.5, 100."""
    return format(x.normalize(), "f")


def router(
    ctx: ServiceContext,
    verifier: TokenVerifier | None = None,
    provider: PaymentProvider | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    r = APIRouter(tags=["billing"])
    tokens = verifier or jwks_verifier()

    def audit(
        uow: UnitOfWork,
        who: Principal,
        patient_id: uuid.UUID | None,
        action: AuditAction,
        resource: str,
        *,
        decision: Decision,
    ) -> None:
        record_access(
            uow,
            BillingRecordAccessed,
            who,
            patient_id=patient_id,
            action=action,
            resource=resource,
            purpose=decision.purpose,
            outcome=decision.outcome,
        )

    async def access(who: Principal, op: Operation, patient_id: uuid.UUID) -> Decision:
        """The policy's decision on ``op`` for the caller and this patient (not yet audited); the
        patient's own account is known here from patients' events."""
        rel = NONE
        if policy.RULES[op].needs_relationship(who.roles):
            async with ctx.db.pool.acquire() as conn:
                account = await replica.account_of(conn, patient_id)
            rel = Relationship(owner=account is not None and str(account) == who.subject)
        return policy.decide(op, who.roles, rel)

    async def deny(
        who: Principal, patient_id: uuid.UUID, decision: Decision, action: AuditAction, resource: str, *, what: str
    ) -> ProblemError:
        """Audit a refusal (committed before the answer) and give the error to raise."""
        async with ctx.db.read() as uow:
            audit(uow, who, patient_id, action, resource, decision=decision)
        return refused(decision, patient_id, what)

    async def invoice_for(
        who: Principal,
        invoice_id: uuid.UUID,
        op: Operation = Operation.READ_INVOICES,
        action: AuditAction = "read",
        resource: str = "invoice",
    ) -> tuple[dict[str, Any], Decision]:
        async with ctx.db.pool.acquire() as conn:
            row = await store.get_invoice(conn, invoice_id)
        if row is None:
            raise refused(policy.not_found(op, who.roles), None, "invoice")
        decision = await access(who, op, row["patient_id"])
        if not decision.allowed:
            raise await deny(who, row["patient_id"], decision, action, resource, what="invoice")
        return row, decision

    async def claim_for(who: Principal, claim_id: uuid.UUID, action: AuditAction) -> tuple[dict[str, Any], Decision]:
        async with ctx.db.pool.acquire() as conn:
            row = await store.get_claim(conn, claim_id)
        if row is None:
            raise refused(policy.not_found(Operation.ACCOUNTS, who.roles), None, "claim")
        decision = policy.decide(Operation.ACCOUNTS, who.roles, NONE)
        if not decision.allowed:
            raise await deny(who, row["patient_id"], decision, action, "claim", what="claim")
        return row, decision

    @r.get("/payers")
    async def payers(request: Request) -> dict[str, Any]:
        """Payer plans: coverage percentage per category, co-pay, deductible, cap, exclusions (any signed-in)."""
        await authenticate(request, tokens)
        async with ctx.db.pool.acquire() as conn:
            rows = await store.plan_rows(conn)
        return {
            "items": [
                {
                    "code": p["code"],
                    "title": p["title"],
                    "currency": p["currency"],
                    "coverage": {k: str(v) for k, v in p["coverage"].items()},
                    "copay": money(p["copay"]),
                    "deductible": money(p["deductible"]),
                    "out_of_pocket_cap": money(p["out_of_pocket_cap"]),
                    "excluded_categories": p["excluded_categories"],
                    "excluded_codes": p["excluded_codes"],
                }
                for p in rows
            ]
        }

    @r.get("/price-list")
    async def price_list(
        request: Request, day: Annotated[CalendarDate | None, Query(alias="date")] = None
    ) -> dict[str, Any]:
        """The price list valid on ``date`` (default today, hospital time): the latest version in
        effect (any signed-in user)."""
        await authenticate(request, tokens)
        on = day or handlers.today(ctx.db.clock())
        async with ctx.db.pool.acquire() as conn:
            version = await store.price_version_on(conn, on)
            lines = await store.price_lines(conn, version["id"]) if version else []
        if version is None:
            raise HTTPException(404, f"no price list in effect on {on.isoformat()}")
        return {
            "version_id": str(version["id"]),
            "effective_from": version["effective_from"].isoformat(),
            "date": on.isoformat(),
            "lines": [{**x, "amount": str(x["amount"])} for x in lines],
        }

    @r.post("/price-list", status_code=201)
    async def new_price_list(body: NewPriceList, request: Request) -> dict[str, Any]:
        """A new price list version (ADMIN): the complete list, in effect from ``effective_from``
        (today or later; prices never change retroactively). 409 if a version starts that day."""
        who = await authenticate(request, tokens)
        require(who, Role.ADMIN)
        if body.effective_from < handlers.today(ctx.db.clock()):
            raise HTTPException(422, "effective_from cannot be in the past")
        codes = [x.code for x in body.lines]
        if len(set(codes)) != len(codes):
            raise HTTPException(422, "each code appears once in a price list")
        vid = uuid.uuid4()
        try:
            async with ctx.db.uow() as uow:
                await store.add_price_version(
                    uow.conn, vid, body.effective_from, [x.model_dump() for x in body.lines], uuid.UUID(who.subject)
                )
        except store.DuplicateVersionError:
            raise HTTPException(409, "a price list version starts on that date already") from None
        return {"version_id": str(vid), "effective_from": body.effective_from.isoformat(), "lines": len(codes)}

    @r.get("/charges")
    async def charges(request: Request, patient_id: uuid.UUID, limit: Limit = 200) -> dict[str, Any]:
        """A patient's charges, latest first, with their status and invoice (BILLING, ADMIN)."""
        who = await authenticate(request, tokens)
        decision = policy.decide(Operation.ACCOUNTS, who.roles, NONE)
        if not decision.allowed:
            raise await deny(who, patient_id, decision, "read", "charge", what="patient")
        async with ctx.db.read() as uow:
            rows = await store.charges_of_patient(uow.conn, patient_id, limit)
            audit(uow, who, patient_id, "read", "charge", decision=decision)
        return {"items": [charge_json(x) for x in rows]}

    @r.get("/invoices")
    async def invoices(
        request: Request,
        patient_id: uuid.UUID | None = None,
        status: InvoiceStatus | None = None,
        limit: Limit = 50,
    ) -> dict[str, Any]:
        """Invoices, latest first: of one patient (the patient themself, BILLING, ADMIN); a patient
        without ``patient_id`` gets their own; staff without it get everyone's."""
        who = await authenticate(request, tokens)
        if patient_id is not None:
            decision = await access(who, Operation.READ_INVOICES, patient_id)
            if not decision.allowed:
                raise await deny(who, patient_id, decision, "read", "invoice", what="patient")
            ids: list[uuid.UUID] | None = [patient_id]
        elif who.has_any(*STAFF):
            decision, ids = policy.decide(Operation.READ_INVOICES, who.roles, NONE), None
        elif who.has_any(Role.PATIENT):
            decision = policy.decide(Operation.READ_INVOICES, who.roles, Relationship(owner=True))
            async with ctx.db.pool.acquire() as conn:
                ids = await replica.patients_of_account(conn, uuid.UUID(who.subject))
        else:
            raise HTTPException(403, "not allowed for your role")
        async with ctx.db.read() as uow:
            rows = await store.invoices(uow.conn, ids, status, limit)
            items = [await invoice_json(uow, x) for x in rows]
            for pid in sorted({x["patient_id"] for x in rows}):
                audit(uow, who, pid, "read", "invoice", decision=decision)
        return {"items": items}

    @r.get("/invoices/{invoice_id}")
    async def invoice(invoice_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """One invoice with its lines, shares, payer and encounter (its patient, BILLING, ADMIN)."""
        who = await authenticate(request, tokens)
        row, decision = await invoice_for(who, invoice_id)
        async with ctx.db.read() as uow:
            out = await invoice_json(uow, row)
            audit(uow, who, row["patient_id"], "read", "invoice", decision=decision)
        return out

    @r.get("/invoices/{invoice_id}/payments")
    async def payments(invoice_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """Payments and refunds of an invoice (its patient, BILLING, ADMIN)."""
        who = await authenticate(request, tokens)
        row, decision = await invoice_for(who, invoice_id, resource="payment")
        async with ctx.db.read() as uow:
            rows = await store.payments_of(uow.conn, invoice_id)
            audit(uow, who, row["patient_id"], "read", "payment", decision=decision)
        return {"items": [handlers.payment_json(x) for x in rows]}

    def idempotency(key: str | None) -> None:
        if key is None or not key.strip():
            raise HTTPException(400, "the Idempotency-Key header is required")
        if len(key) > 255:
            raise HTTPException(400, "the Idempotency-Key is at most 255 characters")

    async def take(
        kind: str, invoice_id: uuid.UUID, body: MoneyIn, request: Request, key: str | None, *, op: Operation
    ) -> Response:
        who = await authenticate(request, tokens)
        try:
            row, decision = await invoice_for(who, invoice_id, op, "create", kind)
        except ProblemError as exc:
            if op is Operation.PAY and exc.status == 403 and who.has_any(Role.PATIENT):
                raise HTTPException(
                    403, f"patients pay online: POST /api/invoices/{invoice_id}/online-payments"
                ) from None
            raise
        idempotency(key)
        if kind == "payment" and body.method not in DESK_METHODS:
            raise HTTPException(
                422,
                f"a desk payment is one of {', '.join(DESK_METHODS)}; online payments are "
                "recorded by the payment provider's confirmation",
            )
        assert key is not None
        m = handlers.Money(kind, invoice_id, body.amount, body.currency, body.method)
        try:
            async with ctx.db.uow() as uow:
                answer = await handlers.take(uow, uuid.UUID(who.subject), key, m)
                if not answer.replayed:
                    audit(uow, who, row["patient_id"], "create", kind, decision=decision)
        except BillingError as exc:
            raise HTTPException(422, str(exc)) from None
        except handlers.ConflictError as exc:
            raise HTTPException(409, str(exc)) from None
        if not answer.replayed:
            faults.hit(MONEY_COMMITTED)  # test-only: the answer below may never leave
        headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
        return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)

    @r.post("/invoices/{invoice_id}/payments", status_code=201)
    async def pay(
        invoice_id: uuid.UUID,
        body: MoneyIn,
        request: Request,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Record money taken at a desk for (part of) the patient's share (BILLING): cash, card at
        the desk's terminal or bank transfer. Needs an ``Idempotency-Key``: the same key and body
        answer the same again; another body → 409. The amount is > 0, in the invoice currency, at
        most the outstanding share (else 422). Patients pay online (``/online-payments``)."""
        return await take("payment", invoice_id, body, request, idempotency_key, op=Operation.PAY)

    @r.post("/invoices/{invoice_id}/online-payments", status_code=201)
    async def pay_online(
        invoice_id: uuid.UUID,
        body: OnlineIn,
        request: Request,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Open an online payment of (part of) the patient's share with the payment provider (the
        patient themself), with an ``Idempotency-Key``. Answers the pending payment and the
        provider's ``checkout_url``, where the patient pays; the invoice is paid only when the
        provider confirms (``test_mode: true``: the embedded TEST provider, no money moves)."""
        who = await authenticate(request, tokens)
        _, decision = await invoice_for(who, invoice_id, Operation.PAY_ONLINE, "create", "payment_intent")
        idempotency(idempotency_key)
        assert idempotency_key is not None
        if provider is None:
            raise HTTPException(503, "no payment provider is configured")
        m = online.OnlinePayment(invoice_id, body.amount, body.currency, provider.name)

        def audited(uow: UnitOfWork, invoice: dict[str, Any]) -> None:
            audit(uow, who, invoice["patient_id"], "create", "payment_intent", decision=decision)

        try:
            answer = await online.open_payment(
                ctx.db, provider, uuid.UUID(who.subject), idempotency_key, m, also=audited
            )
        except BillingError as exc:
            raise HTTPException(422, str(exc)) from None
        except handlers.ConflictError as exc:
            raise HTTPException(409, str(exc)) from None
        headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
        return Response(answer.body, status_code=answer.status, media_type="application/json", headers=headers)

    @r.get("/invoices/{invoice_id}/online-payments")
    async def online_payments(invoice_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """The online payments opened on an invoice and whether the provider confirmed them (its
        patient, BILLING, ADMIN)."""
        who = await authenticate(request, tokens)
        row, decision = await invoice_for(who, invoice_id, resource="payment_intent")
        async with ctx.db.read() as uow:
            rows = await online_store.intents_of(uow.conn, invoice_id)
            audit(uow, who, row["patient_id"], "read", "payment_intent", decision=decision)
        testing = provider.name if provider is not None and provider.test_mode else None
        return {"items": [online.intent_json(x, test_mode=x["provider"] == testing) for x in rows]}

    @r.post("/payments/webhooks/{provider_name}")
    async def provider_webhook(provider_name: str, request: Request) -> dict[str, Any]:
        """The payment provider's confirmation that it received a payment (the provider, not a
        user: its ``Payment-Signature`` is verified instead of a token). A forged, altered or
        stale signature is 401; the same signed delivery again is 409; the same event signed
        afresh (a provider's retry) answers ``already_applied`` and changes nothing."""
        if provider is None or provider_name != provider.name:
            raise HTTPException(404, "no such payment provider")
        body = await request.body()
        try:
            confirmation = provider.verify(body, request.headers, clock())
        except SignatureError as exc:
            raise HTTPException(401, str(exc)) from None
        except MalformedConfirmationError as exc:
            raise HTTPException(422, str(exc)) from None
        actor = f"spiffe://his.local/payment-provider/{provider.name}"

        def audited(uow: UnitOfWork, invoice: dict[str, Any]) -> None:
            record_workload_access(
                uow,
                BillingRecordAccessed,
                actor,
                patient_id=invoice["patient_id"],
                action="create",
                resource="payment",
                purpose="billing",
            )

        try:
            async with ctx.db.uow() as uow:
                applied = await online.confirm(uow, confirmation, also=audited)
        except online.ReplayError as exc:
            raise HTTPException(409, str(exc)) from None
        except handlers.UnknownError as exc:
            raise HTTPException(404, str(exc)) from None
        except BillingError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"status": "applied" if applied else "already_applied", "event_id": confirmation.event_id}

    @r.post("/invoices/{invoice_id}/refunds", status_code=201)
    async def refund(
        invoice_id: uuid.UUID,
        body: MoneyIn,
        request: Request,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Refund money paid on an invoice (BILLING, ADMIN), at most what was paid; with an ``Idempotency-Key``."""
        return await take("refund", invoice_id, body, request, idempotency_key, op=Operation.REFUND)

    @r.get("/claims")
    async def claims(
        request: Request,
        status: ClaimStatus | None = None,
        payer: Annotated[str | None, Query(max_length=32)] = None,
        limit: Limit = 50,
    ) -> dict[str, Any]:
        """Claims for insurers' shares, latest first (BILLING, ADMIN); of one status, of one payer plan."""
        who = await authenticate(request, tokens)
        require(who, *STAFF)
        if payer is not None:
            async with ctx.db.pool.acquire() as conn:
                one_of("payer", payer, [p["code"] for p in await store.plan_rows(conn)])
        async with ctx.db.read() as uow:
            rows = await store.claims(uow.conn, status, payer, limit)
            decision = policy.decide(Operation.ACCOUNTS, who.roles, NONE)
            for pid in sorted({x["patient_id"] for x in rows}):  # each claim names its patient
                audit(uow, who, pid, "read", "claim", decision=decision)
        return {"items": [claim_json(x) for x in rows]}

    @r.get("/claims/{claim_id}")
    async def claim(claim_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """One claim (BILLING, ADMIN)."""
        who = await authenticate(request, tokens)
        row, decision = await claim_for(who, claim_id, "read")
        async with ctx.db.read() as uow:
            audit(uow, who, row["patient_id"], "read", "claim", decision=decision)
        return claim_json(row)

    @r.post("/claims/{claim_id}/{action}")
    async def claim_step(claim_id: uuid.UUID, action: ClaimAction, request: Request) -> dict[str, Any]:
        """Submit, accept, reject or mark paid a claim (BILLING, ADMIN); an invalid transition is 409."""
        who = await authenticate(request, tokens)
        _, decision = await claim_for(who, claim_id, "update")
        try:
            async with ctx.db.uow() as uow:
                row = await handlers.act_on_claim(uow, claim_id, action)
                audit(uow, who, row["patient_id"], "update", "claim", decision=decision)
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
        lines = [
            {
                "charge_id": str(c["id"]),
                "code": c["code"],
                "category": c["category"],
                "quantity": quantity(c["quantity"]),
                "unit_price": str(c["unit_price"]),
                "total": str(c["amount"]),
                "insurer_share": None,
                "patient_share": None,
                "excluded": None,
            }
            for c in await store.active_charges(conn, row["id"])
        ]
        total: str | None = str(sum((Decimal(x["total"]) for x in lines), Decimal("0.00")))
    else:
        lines = [
            {
                "charge_id": str(x["charge_id"]),
                "code": x["code"],
                "category": x["category"],
                "quantity": quantity(x["quantity"]),
                "unit_price": str(x["unit_price"]),
                "total": str(x["total"]),
                "insurer_share": str(x["insurer_share"]),
                "patient_share": str(x["patient_share"]),
                "excluded": x["excluded"],
                "deductible": str(x["deductible"]),
                "copay": str(x["copay"]),
            }
            for x in await store.lines_of(conn, row["id"])
        ]
        total = money(row["total"])
    outstanding = row["patient_share"] - row["paid"] if row["patient_share"] is not None else None
    return {
        "id": str(row["id"]),
        "patient_id": str(row["patient_id"]),
        "kind": row["kind"],
        "status": row["status"],
        "payer": row["payer"],
        "currency": row["currency"],
        "service_date": row["service_date"].isoformat(),
        "total": total,
        "insurer_share": money(row["insurer_share"]),
        "patient_share": money(row["patient_share"]),
        "paid": money(row["paid"]),
        "outstanding": money(outstanding),
        "replaces": str(row["replaces"]) if row["replaces"] else None,
        "encounter": {
            "id": str(enc["id"]),
            "kind": enc["kind"],
            "source_id": str(enc["source_id"]),
            "started_at": enc["started_at"].isoformat(),
            "ended_at": enc["ended_at"].isoformat() if enc["ended_at"] else None,
        },
        "lines": lines,
        "issued_at": row["issued_at"].isoformat() if row["issued_at"] else None,
        "voided_at": row["voided_at"].isoformat() if row["voided_at"] else None,
    }


def charge_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "patient_id": str(row["patient_id"]),
        "source": row["source_kind"],
        "source_id": str(row["source_id"]),
        "code": row["code"],
        "category": row["category"],
        "quantity": quantity(row["quantity"]),
        "unit_price": str(row["unit_price"]),
        "amount": str(row["amount"]),
        "currency": row["currency"],
        "service_date": row["service_date"].isoformat(),
        "status": row["status"],
        "invoice_id": str(row["invoice_id"]) if row["invoice_id"] else None,
    }


def claim_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "invoice_id": str(row["invoice_id"]),
        "patient_id": str(row["patient_id"]),
        "payer": row["payer"],
        "amount": str(row["amount"]),
        "currency": row["currency"],
        "status": row["status"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }
