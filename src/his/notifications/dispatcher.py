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

from his.kernel import tracing
from his.kernel.db import OUTAGE_ERRORS
from his.kernel.mail import Channel, Outgoing
from his.kernel.resilience import DependencyUnavailableError
from his.notifications.contacts import ContactDirectory
from his.notifications.domain import INVITATION, Due, retry_delay
from his.notifications.ports import NotificationsUnits, NotificationsWork
from his.notifications.templates import Renderer

log = logging.getLogger("his.notifications.dispatcher")
#: After this long without success a delivery is given up (``failed``).
GIVE_UP = timedelta(days=2)


class Dispatcher:
    def __init__(
        self,
        units: NotificationsUnits,
        contacts: ContactDirectory,
        channels: dict[str, Channel],
        renderer: Renderer,
        *,
        poll_seconds: float = 0.2,
        batch: int = 20,
    ) -> None:
        self.units, self.contacts, self.channels, self.renderer = units, contacts, channels, renderer
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
        async with self.units.uow() as uow:
            due = await uow.deliveries.claim_due(self.batch, uow.clock())
            for delivery in due:
                await self._deliver(uow, delivery)
        return len(due)

    async def _deliver(self, uow: NotificationsWork, d: Due) -> None:
        """Send one delivery, in a span of the trace that queued it."""
        attributes = {"his.notification.channel": d.channel, "his.notification.template": d.template}
        with tracing.span("notification deliver", parent=d.traceparent or "", attributes=attributes):
            await self._send(uow, d, uow.clock())

    async def _send(self, uow: NotificationsWork, d: Due, now: datetime) -> None:
        deliveries = uow.deliveries
        requested = d.template == INVITATION  # asked for at the desk, on the channel chosen there
        if not requested and d.channel not in (await uow.preferences.get(d.patient_id)).channels():
            await deliveries.finish(d.id, "suppressed", "the patient does not want messages on this channel", at=now)
            return
        try:
            contact = await self.contacts.contact(d.patient_id)
            if contact is None:
                await deliveries.finish(d.id, "failed", "no such patient", at=now)
                return
            address = contact.address(d.channel)
            if not address:
                await deliveries.finish(d.id, "failed", f"the patient has no {d.channel} address", at=now)
                return
            context = {**d.context, "name": contact.name}
            if requested:
                # The code is asked for now and kept in memory only: never stored here, never logged.
                code = await self.contacts.invitation_code(uuid.UUID(d.context["invitation_id"]))
                if code is None:
                    await deliveries.finish(d.id, "cancelled", "the invitation can no longer be redeemed", at=now)
                    return
                context["code"] = code
            subject, body = self.renderer.render(d.template, context)
            await self.channels[d.channel].send(Outgoing(d.id, d.channel, address, subject, body, now))
        except DependencyUnavailableError as exc:
            await self._later(uow, d, str(exc), now)
            return
        await deliveries.finish(d.id, "sent", at=now)
        self.sent += 1

    async def _later(self, uow: NotificationsWork, d: Due, error: str, now: datetime) -> None:
        created = d.context.get("queued_at")
        if created and now - datetime.fromisoformat(created) > GIVE_UP:
            await uow.deliveries.finish(d.id, "failed", f"gave up: {error}", at=now)
            return
        await uow.deliveries.retry_later(d.id, now + retry_delay(d.attempts), error)
