"""Tables of online payments: intents opened with a payment provider, and the confirmations taken
(billing's ``Intents`` on one connection)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from his.billing.domain import IntentStatus, PaymentIntent
from his.kernel.db import Connection, Record

#: Verified deliveries are remembered this long: older ones are refused as stale anyway.
DELIVERY_MEMORY = "1 hour"


def _intent(row: Record) -> PaymentIntent:
    return PaymentIntent(
        id=row["id"],
        invoice_id=row["invoice_id"],
        patient_id=row["patient_id"],
        amount=row["amount"],
        currency=row["currency"],
        provider=row["provider"],
        provider_ref=row["provider_ref"],
        checkout_url=row["checkout_url"],
        status=IntentStatus(row["status"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        confirmed_at=row["confirmed_at"],
    )


class PgIntents:
    """Billing's ``Intents`` on one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

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
        saved = await self.conn.fetchrow(
            """INSERT INTO payment_intent (id, invoice_id, patient_id, amount, currency, provider, provider_ref,
                                           checkout_url, status, created_by, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10) RETURNING *""",
            intent_id,
            invoice_id,
            patient_id,
            amount,
            currency,
            provider,
            provider_ref,
            checkout_url,
            created_by,
            at,
        )
        assert saved is not None
        return _intent(saved)

    async def by_reference(self, provider: str, reference: str) -> PaymentIntent | None:
        """The intent a provider's reference names, locked for this transaction."""
        row = await self.conn.fetchrow(
            "SELECT * FROM payment_intent WHERE provider = $1 AND provider_ref = $2 FOR UPDATE", provider, reference
        )
        return _intent(row) if row else None

    async def of_invoice(self, invoice_id: uuid.UUID) -> list[PaymentIntent]:
        rows = await self.conn.fetch(
            "SELECT * FROM payment_intent WHERE invoice_id = $1 ORDER BY created_at, id", invoice_id
        )
        return [_intent(r) for r in rows]

    async def mark_succeeded(self, intent_id: uuid.UUID, at: datetime) -> None:
        await self.conn.execute(
            "UPDATE payment_intent SET status = 'succeeded', confirmed_at = $2 WHERE id = $1", intent_id, at
        )

    async def record_delivery(self, provider: str, digest: str, at: datetime) -> bool:
        """Remember a verified signed delivery; False if it was seen before (a replay)."""
        await self.conn.execute(
            f"DELETE FROM provider_delivery WHERE received_at < $1::timestamptz - interval '{DELIVERY_MEMORY}'", at
        )
        taken = await self.conn.fetchval(
            """INSERT INTO provider_delivery (digest, provider, received_at) VALUES ($1, $2, $3)
               ON CONFLICT DO NOTHING RETURNING 1""",
            digest,
            provider,
            at,
        )
        return taken is not None

    async def record_event(self, provider: str, event_id: str, intent_id: uuid.UUID) -> bool:
        """Remember a provider event applied; False if it was applied before (the provider's retry)."""
        taken = await self.conn.fetchval(
            """INSERT INTO provider_event (provider, event_id, intent_id) VALUES ($1, $2, $3)
               ON CONFLICT DO NOTHING RETURNING 1""",
            provider,
            event_id,
            intent_id,
        )
        return taken is not None
