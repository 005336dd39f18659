"""The dispatcher: sends due deliveries, one small batch per transaction.

A batch's rows are locked (``FOR UPDATE SKIP LOCKED``) while their messages go out, so two
dispatchers never send the same message; a message is recorded as sent in the same transaction
that held it. If the patient directory or a channel does not answer, the delivery stays queued
and is tried again later with backoff; a patient without an address for the channel gets no
message (``failed``, with the reason), never a guessed one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from his.kernel import tracing
from his.kernel.db import OUTAGE_ERRORS, Connection, Database, UnitOfWork
from his.kernel.resilience import DependencyUnavailableError
from his.notifications import store
from his.notifications.channels import Channel, Outgoing
from his.notifications.contacts import ContactDirectory
from his.notifications.domain import INVITATION, retry_delay
from his.notifications.templates import Renderer

log = logging.getLogger("his.notifications.dispatcher")
#: After this long without success a delivery is given up (``failed``).
GIVE_UP = timedelta(days=2)


class Dispatcher:
    def __init__(
        self,
        db: Database,
        contacts: ContactDirectory,
        channels: dict[str, Channel],
        renderer: Renderer,
        *,
        poll_seconds: float = 0.2,
        batch: int = 20,
    ) -> None:
        self.db, self.contacts, self.channels, self.renderer = db, contacts, channels, renderer
        self.poll, self.batch = poll_seconds, batch
        self.sent = 0

    async def run(self) -> None:
        while True:
            try:
                done = await self.tick()
            except OUTAGE_ERRORS as exc:  # the database is away (or restarting): wait, then go on
                log.warning("dispatcher cannot reach the database: %r", exc)
                done = 0
            if done < self.batch:
                await asyncio.sleep(self.poll)

    async def tick(self) -> int:
        """Send what is due, once; returns how many deliveries were handled."""
        async with self.db.uow() as uow:
            rows = await store.claim_due(uow.conn, self.batch, uow.clock())
            for row in rows:
                await self._deliver(uow, row)
        return len(rows)

    async def _deliver(self, uow: UnitOfWork, row: dict[str, Any]) -> None:
        """Send one delivery, in a span of the trace that queued it."""
        attributes = {"his.notification.channel": row["channel"], "his.notification.template": row["template"]}
        with tracing.span("notification deliver", parent=row.get("traceparent") or "", attributes=attributes):
            await self._send(uow.conn, row, uow.clock())

    async def _send(self, conn: Connection, row: dict[str, Any], now: datetime) -> None:
        did: uuid.UUID = row["id"]
        requested = row["template"] == INVITATION  # asked for at the desk, on the channel chosen there
        if not requested and row["channel"] not in (await store.preferences(conn, row["patient_id"])).channels():
            await store.finish(conn, did, "suppressed", "the patient does not want messages on this channel", at=now)
            return
        try:
            contact = await self.contacts.contact(row["patient_id"])
            if contact is None:
                await store.finish(conn, did, "failed", "no such patient", at=now)
                return
            address = contact.address(row["channel"])
            if not address:
                await store.finish(conn, did, "failed", f"the patient has no {row['channel']} address", at=now)
                return
            context = {**row["context"], "name": contact.name}
            if requested:
                # The code is asked for now and kept in memory only: never stored here, never logged.
                code = await self.contacts.invitation_code(uuid.UUID(row["context"]["invitation_id"]))
                if code is None:
                    await store.finish(conn, did, "cancelled", "the invitation can no longer be redeemed", at=now)
                    return
                context["code"] = code
            subject, body = self.renderer.render(row["template"], context)
            await self.channels[row["channel"]].send(Outgoing(did, row["channel"], address, subject, body, now))
        except DependencyUnavailableError as exc:
            await self._later(conn, row, str(exc), now)
            return
        await store.finish(conn, did, "sent", at=now)
        self.sent += 1

    async def _later(self, conn: Connection, row: dict[str, Any], error: str, now: datetime) -> None:
        created = row["context"].get("queued_at")
        if created and now - datetime.fromisoformat(created) > GIVE_UP:
            await store.finish(conn, row["id"], "failed", f"gave up: {error}", at=now)
            return
        await store.retry_later(conn, row["id"], now + retry_delay(row["attempts"]), error)
