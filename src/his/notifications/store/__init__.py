"""Tables and queries of the notifications service."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from his.kernel import tracing
from his.kernel.db import Connection
from his.notifications.domain import Alert, Delivery, Preferences


async def queue(
    conn: Connection,
    *,
    patient_id: uuid.UUID,
    template: str,
    channel: str,
    event_id: uuid.UUID,
    due_at: datetime,
    appointment_id: uuid.UUID | None = None,
    context: dict[str, Any] | None = None,
) -> bool:
    """Queue one message; False if this event already queued it (or the reminder exists).

    The delivery keeps the current trace context: sending it continues the trace that queued it.
    """
    status = await conn.execute(
        """INSERT INTO delivery (id, patient_id, template, channel, status, cause_event_id, due_at, appointment_id,
                                 context, traceparent)
           VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8::jsonb, $9)
           ON CONFLICT DO NOTHING""",
        uuid.uuid4(),
        patient_id,
        template,
        channel,
        event_id,
        due_at,
        appointment_id,
        json.dumps(context or {}),
        tracing.current_traceparent(),
    )
    return bool(status.endswith(" 1"))


async def queue_many(
    conn: Connection,
    *,
    patient_id: uuid.UUID,
    event_id: uuid.UUID,
    appointment_id: uuid.UUID | None,
    messages: list[tuple[str, str, datetime, dict[str, Any]]],
) -> None:
    """Queue the messages (template, channel, due_at, context) one event causes, in one statement;
    each is skipped as in ``queue`` if it already exists."""
    await conn.execute(
        """INSERT INTO delivery (id, patient_id, template, channel, status, cause_event_id, due_at, appointment_id,
                                 context, traceparent)
           SELECT m.id, $2, m.template, m.channel, 'queued', $3, m.due_at, $4, m.context::jsonb, $5
           FROM unnest($1::uuid[], $6::text[], $7::text[], $8::timestamptz[], $9::text[])
                AS m(id, template, channel, due_at, context)
           ON CONFLICT DO NOTHING""",
        [uuid.uuid4() for _ in messages],
        patient_id,
        event_id,
        appointment_id,
        tracing.current_traceparent(),
        [m[0] for m in messages],
        [m[1] for m in messages],
        [m[2] for m in messages],
        [json.dumps(m[3]) for m in messages],
    )


async def cancel_reminders(conn: Connection, appointment_id: uuid.UUID) -> None:
    await conn.execute(
        """UPDATE delivery SET status = 'cancelled'
           WHERE appointment_id = $1 AND template = 'appointment_reminder' AND status = 'queued'""",
        appointment_id,
    )


async def preferences(conn: Connection, patient_id: uuid.UUID) -> Preferences:
    row = await conn.fetchrow("SELECT email, sms, opted_out FROM preference WHERE patient_id = $1", patient_id)
    return Preferences(row["email"], row["sms"], row["opted_out"]) if row else Preferences()


async def set_preferences(conn: Connection, patient_id: uuid.UUID, p: Preferences) -> None:
    await conn.execute(
        """INSERT INTO preference (patient_id, email, sms, opted_out) VALUES ($1, $2, $3, $4)
           ON CONFLICT (patient_id) DO UPDATE
           SET email = $2, sms = $3, opted_out = $4, updated_at = now()""",
        patient_id,
        p.email,
        p.sms,
        p.opted_out,
    )


async def claim_due(conn: Connection, limit: int, now: datetime) -> list[dict[str, Any]]:
    """Deliveries due at ``now``, locked for this transaction; other dispatchers skip them."""
    rows = await conn.fetch(
        """SELECT id, patient_id, template, channel, attempts, context::text AS context, traceparent FROM delivery
           WHERE status = 'queued' AND due_at <= $2
           ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
        now,
    )
    return [dict(r) | {"context": json.loads(r["context"])} for r in rows]


async def finish(
    conn: Connection, delivery_id: uuid.UUID, status: str, error: str | None = None, *, at: datetime
) -> None:
    await conn.execute(
        """UPDATE delivery SET status = $2, last_error = $3, attempts = attempts + 1,
                  sent_at = CASE WHEN $2 = 'sent' THEN $4::timestamptz END
           WHERE id = $1""",
        delivery_id,
        status,
        error,
        at,
    )


async def retry_later(conn: Connection, delivery_id: uuid.UUID, due_at: datetime, error: str) -> None:
    await conn.execute(
        "UPDATE delivery SET attempts = attempts + 1, due_at = $2, last_error = $3 WHERE id = $1",
        delivery_id,
        due_at,
        error,
    )


async def link_account(conn: Connection, patient_id: uuid.UUID, account_id: uuid.UUID) -> None:
    await conn.execute(
        "INSERT INTO patient_account VALUES ($1, $2) ON CONFLICT (patient_id) DO UPDATE SET account_id = $2",
        patient_id,
        account_id,
    )


async def owns(conn: Connection, account_id: uuid.UUID, patient_id: uuid.UUID) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM patient_account WHERE patient_id = $1 AND account_id = $2", patient_id, account_id
    )
    return bool(found)


async def raise_alert(
    conn: Connection,
    *,
    kind: str,
    audience: str,
    patient_id: uuid.UUID | None,
    actor_id: uuid.UUID | None,
    detail: dict[str, Any],
    event_id: uuid.UUID,
) -> None:
    """Record an alert for ``audience``: every member of a role ("ADMIN") or one user
    (``user_audience``); once per causing event (and, for a lab result, once per order)."""
    await conn.execute(
        """INSERT INTO alert (id, kind, audience, patient_id, actor_id, detail, cause_event_id)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7) ON CONFLICT DO NOTHING""",
        uuid.uuid4(),
        kind,
        audience,
        patient_id,
        actor_id,
        json.dumps(detail),
        event_id,
    )


def user_audience(user_id: uuid.UUID) -> str:
    """The audience of an alert for one user."""
    return f"user:{user_id}"


async def alerts(conn: Connection, *, audiences: list[str], limit: int) -> list[Alert]:
    """The newest alerts addressed to any of ``audiences``."""
    rows = await conn.fetch(
        """SELECT id, kind, audience, patient_id, actor_id, detail::text AS detail, created_at FROM alert
           WHERE audience = ANY($1::text[]) ORDER BY created_at DESC, id LIMIT $2""",
        audiences,
        limit,
    )
    return [Alert(**(dict(r) | {"detail": json.loads(r["detail"])})) for r in rows]


async def deliveries(conn: Connection, patient_id: uuid.UUID, *, limit: int) -> list[Delivery]:
    """One patient's messages, newest first."""
    rows = await conn.fetch(
        """SELECT id, template, channel, status, created_at, due_at, sent_at, last_error AS reason FROM delivery
           WHERE patient_id = $1 ORDER BY created_at DESC, due_at DESC LIMIT $2""",
        patient_id,
        limit,
    )
    return [Delivery(**dict(r)) for r in rows]
