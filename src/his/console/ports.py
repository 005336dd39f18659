"""The console's repository: its sessions (``his.console.domain.Session``), on PostgreSQL
(``his.console.store``) and in memory (``his.testing.console``)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from his.console.domain import Locale, Session
from his.kernel.ports import Units, Work


class Sessions(Protocol):
    async def add(self, session: Session, tokens: bytes) -> None:
        """Keep a new session with its tokens (encrypted, bound to the session's id)."""

    async def get(self, session_id: bytes) -> tuple[Session, bytes] | None:
        """The session and its encrypted tokens, or None."""

    async def seen(self, session_id: bytes, at: datetime) -> None:
        """A request of the session came ``at`` (never moves back)."""

    async def renew(self, session_id: bytes, tokens: bytes) -> None:
        """Replace the session's tokens (after a refresh)."""

    async def relocale(self, session_id: bytes, locale: Locale) -> None:
        """The session's pages are in ``locale`` from now on."""

    async def remove(self, session_id: bytes) -> bool:
        """End the session; whether there was one."""

    async def remove_ended(self, idle_since: datetime, created_before: datetime) -> int:
        """End every session last seen before ``idle_since`` or created before
        ``created_before``; how many."""


class ConsoleWork(Work, Protocol):
    @property
    def sessions(self) -> Sessions: ...


ConsoleUnits = Units[ConsoleWork]
