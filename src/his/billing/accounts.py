"""The use cases billing's routes call: price lists, charges, invoices, payments, claims.

Each takes its caller, decides through ``his.billing.policy``, opens its own unit of work and
records the decision in the access log (charges, invoices, claims and payments are a patient's
data), allowed or denied; a refusal is recorded before it is raised. Money taken at a desk and
online payments are idempotent under the caller's ``Idempotency-Key``: the first request stores
its answer, the same request again gets it back (``Answer.replayed``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

from his.access import NONE, Decision, Relationship, Role
from his.billing import handlers, online, policy
from his.billing.domain import (
    BillingError,
    Charge,
    Claim,
    ClaimAction,
    ClaimStatus,
    DuplicateVersionError,
    InvalidTransitionError,
    Invoice,
    InvoiceDetail,
    InvoiceStatus,
    Payer,
    Payment,
    PaymentKind,
    PriceEntry,
    PriceList,
)
from his.billing.handlers import Answer
from his.billing.payments import MalformedConfirmationError, PaymentProvider, SignatureError
from his.billing.policy import STAFF, Operation
from his.billing.ports import BillingUnits
from his.clients.audited import AccessLog
from his.events.audit import Action as AuditAction
from his.events.audit import BillingRecordAccessed, record_workload_access
from his.kernel import faults
from his.kernel.params import one_of
from his.kernel.problems import ProblemError
from his.kernel.security import Principal

#: How money is taken at a desk (card: the desk's terminal). Online money comes only from the
#: payment provider's confirmation.
DESK_METHODS = ("cash", "card", "bank_transfer")
#: Test-only fault point (``his.kernel.faults``): a desk payment or refund committed, its answer not sent.
MONEY_COMMITTED = faults.point("billing.payment.after_commit", "a desk payment or refund committed, not yet answered")


class Accounts:
    """Billing's use cases over its units of work and (when configured) a payment provider."""

    def __init__(
        self,
        units: BillingUnits,
        provider: PaymentProvider | None = None,
        *,
        clock: Callable[[], float] = time.time,
        zone: ZoneInfo | None = None,
    ) -> None:
        self.units, self.provider, self.clock = units, provider, clock
        #: The hospital's time zone: what today is for a price list (the process settings' by default).
        self.zone = zone or handlers.zone()
        self.log = AccessLog(units, BillingRecordAccessed, "invoice")

    # --- prices ----------------------------------------------------------------------------------

    async def plans(self) -> list[Payer]:
        """Payer plans (not patient data: any signed-in user)."""
        async with self.units.read() as unit:
            return await unit.prices.payers()

    async def price_list(self, on: date | None) -> PriceList:
        """The price list in effect on ``on`` (default today): the day, its version, its lines."""
        async with self.units.read() as unit:
            day = on or unit.clock().astimezone(self.zone).date()
            version = await unit.prices.version_on(day)
            lines = await unit.prices.lines(version.id) if version else []
        if version is None:
            raise ProblemError(404, f"no price list in effect on {day.isoformat()}")
        return PriceList(day, version, tuple(lines))

    async def new_price_list(self, who: Principal, effective_from: date, lines: Sequence[PriceEntry]) -> uuid.UUID:
        """A new price list version (ADMIN), in effect from today or later; 409 if one starts that day."""
        if not who.has_any(Role.ADMIN):
            raise ProblemError(403, "not allowed for your role")
        async with self.units.read() as unit:
            today = unit.clock().astimezone(self.zone).date()
        if effective_from < today:
            raise ProblemError(422, "effective_from cannot be in the past")
        codes = [x.code for x in lines]
        if len(set(codes)) != len(codes):
            raise ProblemError(422, "each code appears once in a price list")
        vid = uuid.uuid4()
        try:
            async with self.units.uow() as uow:
                await uow.prices.add_version(vid, effective_from, lines, uuid.UUID(who.subject), uow.clock())
        except DuplicateVersionError:
            raise ProblemError(409, "a price list version starts on that date already") from None
        return vid

    # --- charges and invoices --------------------------------------------------------------------

    async def charges(self, who: Principal, patient_id: uuid.UUID, limit: int) -> list[Charge]:
        """A patient's charges, latest first (BILLING, ADMIN)."""
        decision = policy.decide(Operation.ACCOUNTS, who.roles, NONE)
        if not decision.allowed:
            raise await self.log.refuse(who, patient_id, decision, "read", resource="charge")
        async with self.units.read() as uow:
            rows = await uow.charges.of_patient(patient_id, limit)
            self.log.record(uow, who, patient_id, "read", decision, resource="charge")
        return rows

    async def invoices(
        self, who: Principal, patient_id: uuid.UUID | None, status: InvoiceStatus | None, limit: int
    ) -> list[InvoiceDetail]:
        """Invoices, latest first, each with its lines and encounter: of one patient (the patient,
        BILLING, ADMIN); a patient without ``patient_id`` gets their own, staff everyone's."""
        if patient_id is not None:
            decision = await self.decide(who, Operation.READ_INVOICES, patient_id)
            if not decision.allowed:
                raise await self.log.refuse(who, patient_id, decision, "read")
            ids: list[uuid.UUID] | None = [patient_id]
        elif who.has_any(*STAFF):
            decision, ids = policy.decide(Operation.READ_INVOICES, who.roles, NONE), None
        elif who.has_any(Role.PATIENT):
            decision = policy.decide(Operation.READ_INVOICES, who.roles, Relationship(owner=True))
            async with self.units.read() as unit:
                ids = await unit.holders.patients_of(uuid.UUID(who.subject))
        else:
            raise ProblemError(403, "not allowed for your role")
        async with self.units.read() as uow:
            rows = await uow.invoices.find(ids, status, limit)
            found = [await uow.invoices.detailed(x) for x in rows]
            for pid in sorted({x.patient_id for x in rows}):
                self.log.record(uow, who, pid, "read", decision)
        return found

    async def invoice(self, who: Principal, invoice_id: uuid.UUID) -> InvoiceDetail:
        """One invoice with its lines, shares, payer and encounter."""
        invoice, decision = await self.opened(who, invoice_id)
        async with self.units.read() as uow:
            found = await uow.invoices.detailed(invoice)
            self.log.record(uow, who, invoice.patient_id, "read", decision)
        return found

    # --- money -----------------------------------------------------------------------------------

    async def payments(self, who: Principal, invoice_id: uuid.UUID) -> list[Payment]:
        """Payments and refunds of an invoice."""
        invoice, decision = await self.opened(who, invoice_id, resource="payment")
        async with self.units.read() as uow:
            found = await uow.payments.of_invoice(invoice_id)
            self.log.record(uow, who, invoice.patient_id, "read", decision, resource="payment")
        return found

    async def take(self, who: Principal, key: str | None, m: handlers.Money) -> Answer:
        """Money taken at a desk (BILLING) or refunded (BILLING, ADMIN), once per idempotency key:
        422 for an amount that cannot be taken, 409 for the key reused on another request."""
        op = Operation.PAY if m.kind is PaymentKind.PAYMENT else Operation.REFUND
        try:
            invoice, decision = await self.opened(who, m.invoice_id, op, "create", m.kind.value)
        except ProblemError as exc:
            if op is Operation.PAY and exc.status == 403 and who.has_any(Role.PATIENT):
                raise ProblemError(
                    403, f"patients pay online: POST /api/invoices/{m.invoice_id}/online-payments"
                ) from None
            raise
        key = idempotency(key)
        if m.kind is PaymentKind.PAYMENT and m.method not in DESK_METHODS:
            raise ProblemError(
                422,
                f"a desk payment is one of {', '.join(DESK_METHODS)}; online payments are "
                "recorded by the payment provider's confirmation",
            )
        try:
            async with self.units.uow() as uow:
                answer = await handlers.take(uow, uuid.UUID(who.subject), key, m)
                if not answer.replayed:
                    self.log.record(uow, who, invoice.patient_id, "create", decision, resource=m.kind.value)
        except BillingError as exc:
            raise ProblemError(422, str(exc)) from None
        except handlers.ConflictError as exc:
            raise ProblemError(409, str(exc)) from None
        if not answer.replayed:
            faults.hit(MONEY_COMMITTED)  # test-only: the answer may never leave
        return answer

    async def pay_online(
        self, who: Principal, key: str | None, invoice_id: uuid.UUID, amount: Decimal, currency: str
    ) -> Answer:
        """Open an online payment with the provider (the patient themself): the pending payment
        and where to pay; the invoice is paid only when the provider confirms."""
        _, decision = await self.opened(who, invoice_id, Operation.PAY_ONLINE, "create", INTENT)
        key = idempotency(key)
        if self.provider is None:
            raise ProblemError(503, "no payment provider is configured")
        actor = uuid.UUID(who.subject)
        p = online.OnlinePayment(invoice_id, amount, currency, self.provider.name)
        try:
            if (answer := await online.replayed_or_payable(self.units, actor, key, p)) is not None:
                return answer
            opened = await online.checkout(self.provider, actor, key, p)
            async with self.units.uow() as uow:
                answer, patient_id = await online.record_intent(uow, actor, key, p, opened)
                if patient_id is not None:
                    self.log.record(uow, who, patient_id, "create", decision, resource=INTENT)
        except BillingError as exc:
            raise ProblemError(422, str(exc)) from None
        except handlers.ConflictError as exc:
            raise ProblemError(409, str(exc)) from None
        return answer

    async def online_payments(self, who: Principal, invoice_id: uuid.UUID) -> list[online.IntentView]:
        """The online payments opened on an invoice, each with whether it was the TEST provider's."""
        invoice, decision = await self.opened(who, invoice_id, resource=INTENT)
        async with self.units.read() as uow:
            intents = await uow.intents.of_invoice(invoice_id)
            self.log.record(uow, who, invoice.patient_id, "read", decision, resource=INTENT)
        testing = self.provider.name if self.provider is not None and self.provider.test_mode else None
        return [online.IntentView(x, test_mode=x.provider == testing) for x in intents]

    async def confirmed(self, provider_name: str, body: bytes, headers: Mapping[str, str]) -> tuple[bool, str]:
        """Apply the provider's signed confirmation (the provider acts, not a user): whether it
        was applied now, and its event id. 401 for a bad signature, 409 for a replayed delivery."""
        provider = self.provider
        if provider is None or provider_name != provider.name:
            raise ProblemError(404, "no such payment provider")
        try:
            confirmation = provider.verify(body, headers, self.clock())
        except SignatureError as exc:
            raise ProblemError(401, str(exc)) from None
        except MalformedConfirmationError as exc:
            raise ProblemError(422, str(exc)) from None
        actor = f"spiffe://his.local/payment-provider/{provider.name}"
        try:
            async with self.units.uow() as uow:
                patient_id = await online.confirm(uow, confirmation)
                if patient_id is not None:
                    record_workload_access(
                        uow,
                        BillingRecordAccessed,
                        actor,
                        patient_id=patient_id,
                        action="create",
                        resource="payment",
                        purpose="billing",
                    )
        except online.ReplayError as exc:
            raise ProblemError(409, str(exc)) from None
        except handlers.UnknownError as exc:
            raise ProblemError(404, str(exc)) from None
        except BillingError as exc:
            raise ProblemError(422, str(exc)) from None
        return patient_id is not None, confirmation.event_id

    # --- claims ----------------------------------------------------------------------------------

    async def claims(self, who: Principal, status: ClaimStatus | None, payer: str | None, limit: int) -> list[Claim]:
        """Claims for insurers' shares, latest first (BILLING, ADMIN)."""
        if not who.has_any(*STAFF):
            raise ProblemError(403, "not allowed for your role")
        if payer is not None:
            async with self.units.read() as unit:
                one_of("payer", payer, [p.code for p in await unit.prices.payers()])
        decision = policy.decide(Operation.ACCOUNTS, who.roles, NONE)
        async with self.units.read() as uow:
            found = await uow.claims.find(status, payer, limit)
            for pid in sorted({x.patient_id for x in found}):  # each claim names its patient
                self.log.record(uow, who, pid, "read", decision, resource="claim")
        return found

    async def claim(self, who: Principal, claim_id: uuid.UUID) -> Claim:
        claim, decision = await self.claim_for(who, claim_id, "read")
        async with self.units.read() as uow:
            self.log.record(uow, who, claim.patient_id, "read", decision, resource="claim")
        return claim

    async def claim_step(self, who: Principal, claim_id: uuid.UUID, action: ClaimAction) -> Claim:
        """Submit, accept, reject or mark paid a claim; 409 for a step its state does not allow."""
        _, decision = await self.claim_for(who, claim_id, "update")
        try:
            async with self.units.uow() as uow:
                claim = await handlers.act_on_claim(uow, claim_id, action)
                self.log.record(uow, who, claim.patient_id, "update", decision, resource="claim")
        except handlers.UnknownError:
            raise ProblemError(404, "claim not found") from None
        except InvalidTransitionError as exc:
            raise ProblemError(409, str(exc)) from None
        return claim

    # --- access ----------------------------------------------------------------------------------

    async def decide(self, who: Principal, op: Operation, patient_id: uuid.UUID) -> Decision:
        """The policy's decision on ``op`` for this patient (not yet recorded); the patient's own
        account is known here from patients' events."""
        rel = NONE
        if policy.RULES[op].needs_relationship(who.roles):
            async with self.units.read() as unit:
                ref = await unit.patients.find(patient_id)
            account = ref.account_id if ref is not None else None
            rel = Relationship(owner=account is not None and str(account) == who.subject)
        return policy.decide(op, who.roles, rel)

    async def opened(
        self,
        who: Principal,
        invoice_id: uuid.UUID,
        op: Operation = Operation.READ_INVOICES,
        action: AuditAction = "read",
        resource: str = "invoice",
    ) -> tuple[Invoice, Decision]:
        """The invoice and the policy's decision on ``op``; a refusal is recorded and raised."""
        async with self.units.read() as unit:
            found = await unit.invoices.get(invoice_id)
        return await self.log.admit(
            who,
            found,
            lambda invoice: self.decide(who, op, invoice.patient_id),
            missing=policy.not_found(op, who.roles),
            action=action,
            resource=resource,
            what="invoice",
        )

    async def claim_for(self, who: Principal, claim_id: uuid.UUID, action: AuditAction) -> tuple[Claim, Decision]:
        async with self.units.read() as unit:
            found = await unit.claims.get(claim_id)

        async def decide(_: Claim) -> Decision:
            return policy.decide(Operation.ACCOUNTS, who.roles, NONE)

        return await self.log.admit(
            who,
            found,
            decide,
            missing=policy.not_found(Operation.ACCOUNTS, who.roles),
            action=action,
            resource="claim",
            what="claim",
        )


INTENT = "payment_intent"


def idempotency(key: str | None) -> str:
    """The request's ``Idempotency-Key``: required, at most 255 characters (else 400)."""
    if key is None or not key.strip():
        raise ProblemError(400, "the Idempotency-Key header is required")
    if len(key) > 255:
        raise ProblemError(400, "the Idempotency-Key is at most 255 characters")
    return key
