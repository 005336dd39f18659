"""Tables and queries of the notifications service."""

from __future__ import annotations

import uuid

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
