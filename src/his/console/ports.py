"""The console's ports: its sessions (``his.console.domain.Session``), on PostgreSQL
(``his.console.store``) and in memory (``his.testing.console``); and the public API it calls."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from his.console.domain import Answer, Locale, Method, Params, Session
from his.kernel.json import Json, JsonObject
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


class PublicApi(Protocol):
    """The public API as the console calls it: through the gateway (``his.console.api.Api``),
    or in memory (``his.testing.console.FakeApi``)."""

    async def call(
        self,
        method: Method,
        path: str,
        *,
        client_ip: str,
        token: str | None = None,
        body: JsonObject | None = None,
        params: Params = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One call for the browser at ``client_ip``; ``ApiUnavailableError`` if it cannot be made."""
        ...

    async def jwks(self) -> Json:
        """The signing keys of the users' tokens."""
        ...


class ConsoleWork(Work, Protocol):
    @property
    def sessions(self) -> Sessions: ...


ConsoleUnits = Units[ConsoleWork]
