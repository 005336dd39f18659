"""E-mail that identity sends itself (reset and confirmation links): handed to the channel after
the answer, off the request, so that neither the answer nor its timing says whether a message
was sent. A link never travels on the bus."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from urllib.parse import urlencode

from his.kernel.mail import Channel, Outgoing

log = logging.getLogger("his.identity.mailer")


class Mailer:
    """Messages to accounts through ``channel``, with links into the console at ``public_url``."""

    def __init__(self, channel: Channel, public_url: str) -> None:
        self.channel, self.public_url = channel, public_url.rstrip("/")
        self._sending: set[asyncio.Task[None]] = set()

    def link(self, path: str, token: str) -> str:
        """The console's page at ``path`` for the link's ``token``."""
        return f"{self.public_url}{path}?{urlencode({'token': token})}"

    def send(self, *, to: str, subject: str, body: str, at: datetime) -> None:
        """Hand the message over once the caller has answered (a failure is logged)."""
        message = Outgoing(delivery_id=uuid.uuid4(), channel="email", to=to, subject=subject, body=body, at=at)
        task = asyncio.create_task(self._send(message))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, message: Outgoing) -> None:
        try:
            await self.channel.send(message)
        except Exception:
            log.exception("an e-mail to an account (%s) could not be sent", message.subject)

    async def sent(self) -> None:
        """Wait until every message asked for so far was handed over (tests, and shutdown)."""
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
