"""Signed-out sessions, refused at the edge and by every service.

An access token lives 15 minutes and is checked by its signature alone, so signing out would
leave it usable until it expires. Identity records when a session (a refresh-token family, the
token's ``sid``) is revoked: by a sign-out, because a rotated refresh token came back, or because
an administrator disabled the account or changed its roles. Its verifiers ask identity which
sessions were revoked since they last asked, and refuse their access tokens until those expire.

The gateway asks every second (``run``). A service asks only when a token arrives and its last
answer is older than half a second (``fresh``, ``his.kernel.auth.FRESH_FOR``): a token sent to a
service directly, past the gateway, is refused within about a second of the sign-out too, and an
idle service asks nothing.

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

log = logging.getLogger("his.revocations")

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
        self,
        fetch: Fetch,
        *,
        every: float = 1.0,
        overlap: float = 120.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.every = every
        self.overlap = timedelta(seconds=overlap)
        self._clock = clock
        self._monotonic = monotonic
        #: When the last question was asked (answered or not), on ``monotonic``'s scale.
        self._asked_at: float | None = None
        self._asking: asyncio.Future[None] | None = None
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
        self._asked_at = self._monotonic()
        self.apply(await self._fetch(self._since.isoformat() if self._since else None))

    async def fresh(self) -> None:
        """Ask identity unless it was asked less than ``every`` seconds ago (answered or not):
        one question at a time, which every caller arriving meanwhile waits for. A failure keeps
        what is known (logged once) and is not asked again before ``every`` has passed."""
        if self._asking is None:
            if self._asked_at is not None and self._monotonic() - self._asked_at < self.every:
                return
            self._asking = asyncio.ensure_future(self._ask())
        await asyncio.shield(self._asking)

    async def _ask(self) -> None:
        try:
            await self.poll()
        except Exception as exc:  # noqa: BLE001 - an unreachable or confused identity: keep what is known
            self._failed(exc)
        else:
            self._recovered()
        finally:
            self._asking = None

    def _failed(self, exc: Exception) -> None:
        if not self._failing:
            log.warning(
                "cannot learn signed-out sessions from identity (%r); the %d known stay refused", exc, len(self._until)
            )
            self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("learning signed-out sessions from identity again")
            self._failing = False

    async def run(self) -> None:
        """Poll for as long as the gateway runs (cancel to stop)."""
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - an unreachable or confused identity: keep what is known
                self._failed(exc)
            else:
                self._recovered()
            await asyncio.sleep(self.every)
