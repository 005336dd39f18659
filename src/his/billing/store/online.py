"""Tables of online payments: intents opened with a payment provider, and the confirmations taken."""

from __future__ import annotations

import uuid
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


async def insert_intent(
    conn: Connection,
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
) -> PaymentIntent:
    """A pending online payment, opened with ``provider`` under its reference ``provider_ref``."""
    saved = await conn.fetchrow(
        """INSERT INTO payment_intent (id, invoice_id, patient_id, amount, currency, provider, provider_ref,
                                       checkout_url, status, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9) RETURNING *""",
        intent_id,
        invoice_id,
        patient_id,
        amount,
        currency,
        provider,
        provider_ref,
        checkout_url,
        created_by,
    )
    assert saved is not None
    return _intent(saved)


async def intent_by_reference(conn: Connection, provider: str, reference: str) -> PaymentIntent | None:
    """The intent a provider's reference names, locked for this transaction."""
    row = await conn.fetchrow(
        "SELECT * FROM payment_intent WHERE provider = $1 AND provider_ref = $2 FOR UPDATE", provider, reference
    )
    return _intent(row) if row else None


async def intents_of(conn: Connection, invoice_id: uuid.UUID) -> list[PaymentIntent]:
    rows = await conn.fetch("SELECT * FROM payment_intent WHERE invoice_id = $1 ORDER BY created_at, id", invoice_id)
    return [_intent(r) for r in rows]


async def mark_succeeded(conn: Connection, intent_id: uuid.UUID) -> None:
    await conn.execute("UPDATE payment_intent SET status = 'succeeded', confirmed_at = now() WHERE id = $1", intent_id)


async def record_delivery(conn: Connection, provider: str, digest: str) -> bool:
    """Remember a verified signed delivery; False if it was seen before (a replay)."""
    await conn.execute(f"DELETE FROM provider_delivery WHERE received_at < now() - interval '{DELIVERY_MEMORY}'")
    taken = await conn.fetchval(
        "INSERT INTO provider_delivery (digest, provider) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
        digest,
        provider,
    )
    return taken is not None


async def record_event(conn: Connection, provider: str, event_id: str, intent_id: uuid.UUID) -> bool:
    """Remember a provider event applied; False if it was applied before (the provider's retry)."""
    taken = await conn.fetchval(
        """INSERT INTO provider_event (provider, event_id, intent_id) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING 1""",
        provider,
        event_id,
        intent_id,
    )
    return taken is not None
