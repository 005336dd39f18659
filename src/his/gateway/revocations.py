"""Signed-out sessions, refused at the edge.

An access token lives 15 minutes and is checked by its signature alone, so signing out would
leave it usable until it expires. Identity records when a session (a refresh-token family, the
token's ``sid``) is revoked: by a sign-out, or because a rotated refresh token came back. The
gateway asks identity every second which sessions were revoked since it last asked, and refuses
their access tokens until those have expired.

While identity cannot be asked, the revocations already known stay in force and new ones wait;
the outage is logged once. The question overlaps the previous answer by two minutes, so a
sign-out whose transaction began before one answer and committed after it is still seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from pydantic import BaseModel

from his.kernel.json import Json

log = logging.getLogger("his.gateway.revocations")

Fetch = Callable[[str | None], Awaitable[Json]]


class RevokedSession(BaseModel):
    sid: str
    #: Until when its tokens may be presented (their latest expiry), RFC 3339.
    until: str


class RevokedSessions(BaseModel):
    """Identity's answer to ``GET /auth/revoked-sessions``."""

    #: Identity's clock when it answered, RFC 3339: the next poll asks from a little before it.
    now: str
    sessions: list[RevokedSession]


class Revocations:
    def __init__(
        self, fetch: Fetch, *, every: float = 1.0, overlap: float = 120.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._fetch = fetch
        self.every = every
        self.overlap = timedelta(seconds=overlap)
        self._clock = clock
        #: sid → until when its tokens are refused (epoch seconds).
        self._until: dict[str, float] = {}
        self._since: datetime | None = None
        self.answered = False
        self._failing = False

    def __contains__(self, session: object) -> bool:
        until = self._until.get(str(session))
        return until is not None and until > self._clock()

    def __len__(self) -> int:
        return len(self._until)

    def apply(self, answer: Json) -> None:
        """Take identity's answer: remember its sessions, forget expired ones, move the cursor.
        An answer of another shape raises ``pydantic.ValidationError`` and changes nothing."""
        doc = RevokedSessions.model_validate(answer)
        now = datetime.fromisoformat(doc.now)
        for entry in doc.sessions:
            sid, until = entry.sid, datetime.fromisoformat(entry.until).timestamp()
            self._until[sid] = max(until, self._until.get(sid, 0.0))
        t = self._clock()
        self._until = {sid: until for sid, until in self._until.items() if until > t}
        self._since = now - self.overlap
        self.answered = True

    async def poll(self) -> None:
        self.apply(await self._fetch(self._since.isoformat() if self._since else None))

    async def run(self) -> None:
        """Poll for as long as the gateway runs (cancel to stop)."""
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - an unreachable or confused identity: keep what is known
                if not self._failing:
                    log.warning(
                        "cannot learn signed-out sessions from identity (%r); the %d known stay refused",
                        exc,
                        len(self._until),
                    )
                    self._failing = True
            else:
                if self._failing:
                    log.info("learning signed-out sessions from identity again")
                    self._failing = False
            await asyncio.sleep(self.every)
