"""Tables and queries of the notifications service."""

from __future__ import annotations

import json
import uuid
from typing import Any

from his.kernel.db import Connection


async def queue_delivery(
    conn: Connection, *, patient_id: uuid.UUID, template: str, channel: str, event_id: uuid.UUID
) -> uuid.UUID:
    delivery_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO delivery (id, patient_id, template, channel, status, cause_event_id)
           VALUES ($1, $2, $3, $4, 'queued', $5)""",
        delivery_id,
        patient_id,
        template,
        channel,
        event_id,
    )
    return delivery_id


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
    """Record an alert for every member of ``audience`` (a role); once per causing event."""
    await conn.execute(
        """INSERT INTO alert (id, kind, audience, patient_id, actor_id, detail, cause_event_id)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7) ON CONFLICT (cause_event_id) DO NOTHING""",
        uuid.uuid4(),
        kind,
        audience,
        patient_id,
        actor_id,
        json.dumps(detail),
        event_id,
    )


async def alerts(conn: Connection, *, audience: str, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT id, kind, patient_id, actor_id, detail::text AS detail, created_at FROM alert
           WHERE audience = $1 ORDER BY created_at DESC, id LIMIT $2""",
        audience,
        limit,
    )
    return [dict(r) | {"detail": json.loads(r["detail"])} for r in rows]
