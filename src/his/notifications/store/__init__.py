"""Tables and queries of the notifications service: the ports of ``his.notifications.ports`` on
PostgreSQL, over one connection of a unit of work."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

from his.kernel import tracing
from his.kernel.db import Connection, Unit, UnitOfWork, UnitsOn
from his.notifications.domain import REMINDER, Alert, Context, Delivery, Due, Message, Preferences


class PgDeliveries:
    """The notifications service's ``Deliveries`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def queue(
        self,
        *,
        patient_id: uuid.UUID,
        template: str,
        channel: str,
        event_id: uuid.UUID,
        due_at: datetime,
        at: datetime,
        appointment_id: uuid.UUID | None = None,
        context: Context | None = None,
    ) -> bool:
        """Queue one message; False if this event already queued it (or the reminder exists).

        The delivery keeps the current trace context: sending it continues the trace that queued it.
        """
        status = await self.conn.execute(
            """INSERT INTO delivery (id, patient_id, template, channel, status, cause_event_id, due_at, appointment_id,
                                     context, traceparent, created_at)
               VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8::jsonb, $9, $10)
               ON CONFLICT DO NOTHING""",
            uuid.uuid4(),
            patient_id,
            template,
            channel,
            event_id,
            due_at,
            appointment_id,
            json.dumps(dict(context or {})),
            tracing.current_traceparent(),
            at,
        )
        return bool(status.endswith(" 1"))

    async def queue_many(
        self,
        *,
        patient_id: uuid.UUID,
        event_id: uuid.UUID,
        appointment_id: uuid.UUID | None,
        messages: Sequence[Message],
        at: datetime,
    ) -> None:
        """Queue the messages one event causes, in one statement; each is skipped as in ``queue``
        if it already exists."""
        await self.conn.execute(
            """INSERT INTO delivery (id, patient_id, template, channel, status, cause_event_id, due_at, appointment_id,
                                     context, traceparent, created_at)
               SELECT m.id, $2, m.template, m.channel, 'queued', $3, m.due_at, $4, m.context::jsonb, $5, $10
               FROM unnest($1::uuid[], $6::text[], $7::text[], $8::timestamptz[], $9::text[])
                    AS m(id, template, channel, due_at, context)
               ON CONFLICT DO NOTHING""",
            [uuid.uuid4() for _ in messages],
            patient_id,
            event_id,
            appointment_id,
            tracing.current_traceparent(),
            [m.template for m in messages],
            [m.channel for m in messages],
            [m.due_at for m in messages],
            [json.dumps(dict(m.context)) for m in messages],
            at,
        )

    async def cancel_reminders(self, appointment_id: uuid.UUID) -> None:
        await self.conn.execute(
            """UPDATE delivery SET status = 'cancelled'
               WHERE appointment_id = $1 AND template = $2 AND status = 'queued'""",
            appointment_id,
            REMINDER,
        )

    async def claim_due(self, limit: int, now: datetime) -> list[Due]:
        """Deliveries due at ``now``, locked for this transaction; other dispatchers skip them."""
        rows = await self.conn.fetch(
            """SELECT id, patient_id, template, channel, attempts, context::text AS context, traceparent
               FROM delivery
               WHERE status = 'queued' AND due_at <= $2
               ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
            limit,
            now,
        )
        return [
            Due(
                id=r["id"],
                patient_id=r["patient_id"],
                template=r["template"],
                channel=r["channel"],
                attempts=r["attempts"],
                context=json.loads(r["context"]),
                traceparent=r["traceparent"],
            )
            for r in rows
        ]

    async def finish(self, delivery_id: uuid.UUID, status: str, error: str | None = None, *, at: datetime) -> None:
        await self.conn.execute(
            """UPDATE delivery SET status = $2, last_error = $3, attempts = attempts + 1,
                      sent_at = CASE WHEN $2 = 'sent' THEN $4::timestamptz END
               WHERE id = $1""",
            delivery_id,
            status,
            error,
            at,
        )

    async def retry_later(self, delivery_id: uuid.UUID, due_at: datetime, error: str) -> None:
        await self.conn.execute(
            "UPDATE delivery SET attempts = attempts + 1, due_at = $2, last_error = $3 WHERE id = $1",
            delivery_id,
            due_at,
            error,
        )

    async def of(self, patient_id: uuid.UUID, *, limit: int) -> list[Delivery]:
        """One patient's messages, newest first."""
        rows = await self.conn.fetch(
            """SELECT id, template, channel, status, created_at, due_at, sent_at, last_error AS reason FROM delivery
               WHERE patient_id = $1 ORDER BY created_at DESC, due_at DESC, id LIMIT $2""",
            patient_id,
            limit,
        )
        return [Delivery(**dict(r)) for r in rows]


class PgPreferences:
    """The notifications service's ``PatientPreferences`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def get(self, patient_id: uuid.UUID) -> Preferences:
        row = await self.conn.fetchrow("SELECT email, sms, opted_out FROM preference WHERE patient_id = $1", patient_id)
        return Preferences(row["email"], row["sms"], row["opted_out"]) if row else Preferences()

    async def set(self, patient_id: uuid.UUID, chosen: Preferences, at: datetime) -> None:
        await self.conn.execute(
            """INSERT INTO preference (patient_id, email, sms, opted_out, updated_at) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (patient_id) DO UPDATE
               SET email = $2, sms = $3, opted_out = $4, updated_at = $5""",
            patient_id,
            chosen.email,
            chosen.sms,
            chosen.opted_out,
            at,
        )


class PgAccountLinks:
    """The notifications service's ``AccountLinks`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def link(self, patient_id: uuid.UUID, account_id: uuid.UUID) -> None:
        await self.conn.execute(
            "INSERT INTO patient_account VALUES ($1, $2) ON CONFLICT (patient_id) DO UPDATE SET account_id = $2",
            patient_id,
            account_id,
        )

    async def owns(self, account_id: uuid.UUID, patient_id: uuid.UUID) -> bool:
        found = await self.conn.fetchval(
            "SELECT 1 FROM patient_account WHERE patient_id = $1 AND account_id = $2", patient_id, account_id
        )
        return bool(found)


class PgAlerts:
    """The notifications service's ``Alerts`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(
        self,
        *,
        kind: str,
        audience: str,
        patient_id: uuid.UUID | None,
        actor_id: uuid.UUID | None,
        detail: Mapping[str, object],
        event_id: uuid.UUID,
        at: datetime,
    ) -> bool:
        """Record an alert for ``audience``: every member of a role ("ADMIN") or one user
        (``user_audience``); once per causing event (and, for a lab result, once per order)."""
        status = await self.conn.execute(
            """INSERT INTO alert (id, kind, audience, patient_id, actor_id, detail, cause_event_id, created_at)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8) ON CONFLICT DO NOTHING""",
            uuid.uuid4(),
            kind,
            audience,
            patient_id,
            actor_id,
            json.dumps(dict(detail)),
            event_id,
            at,
        )
        return bool(status.endswith(" 1"))

    async def addressed_to(self, audiences: Sequence[str], *, limit: int) -> list[Alert]:
        """The newest alerts addressed to any of ``audiences``."""
        rows = await self.conn.fetch(
            """SELECT id, kind, audience, patient_id, actor_id, detail::text AS detail, created_at FROM alert
               WHERE audience = ANY($1::text[]) ORDER BY created_at DESC, id LIMIT $2""",
            list(audiences),
            limit,
        )
        return [Alert(**(dict(r) | {"detail": json.loads(r["detail"])})) for r in rows]


class NotificationsUnit(Unit):
    """A unit of work of the notifications service on PostgreSQL."""

    def __init__(self, uow: UnitOfWork) -> None:
        super().__init__(uow)
        self.deliveries = PgDeliveries(self.conn)
        self.preferences = PgPreferences(self.conn)
        self.accounts = PgAccountLinks(self.conn)
        self.alerts = PgAlerts(self.conn)


class NotificationsStore(UnitsOn[NotificationsUnit]):
    """The notifications service's units of work (``his.notifications.ports.NotificationsUnits``)
    on its database."""

    def unit(self, uow: UnitOfWork) -> NotificationsUnit:
        return NotificationsUnit(uow)
