"""The console's sessions on PostgreSQL (its ``console`` schema)."""

from __future__ import annotations

from datetime import datetime

from his.console.domain import Locale, Session
from his.kernel.db import Connection, Record, Unit, UnitOfWork, UnitsOn


def _session(r: Record) -> Session:
    return Session(
        id=bytes(r["id"]),
        user_id=r["user_id"],
        roles=tuple(r["roles"]),
        csrf=r["csrf"],
        locale=Locale(r["locale"]),
        created_at=r["created_at"],
        seen_at=r["seen_at"],
    )


class PgSessions:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(self, session: Session, tokens: bytes) -> None:
        await self.conn.execute(
            """INSERT INTO session (id, user_id, roles, csrf, locale, tokens, created_at, seen_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            session.id,
            session.user_id,
            list(session.roles),
            session.csrf,
            session.locale.value,
            tokens,
            session.created_at,
            session.seen_at,
        )

    async def get(self, session_id: bytes) -> tuple[Session, bytes] | None:
        r = await self.conn.fetchrow("SELECT * FROM session WHERE id = $1", session_id)
        return None if r is None else (_session(r), bytes(r["tokens"]))

    async def seen(self, session_id: bytes, at: datetime) -> None:
        await self.conn.execute("UPDATE session SET seen_at = greatest(seen_at, $2) WHERE id = $1", session_id, at)

    async def renew(self, session_id: bytes, tokens: bytes) -> None:
        await self.conn.execute("UPDATE session SET tokens = $2 WHERE id = $1", session_id, tokens)

    async def relocale(self, session_id: bytes, locale: Locale) -> None:
        await self.conn.execute("UPDATE session SET locale = $2 WHERE id = $1", session_id, locale.value)

    async def remove(self, session_id: bytes) -> bool:
        status: str = await self.conn.execute("DELETE FROM session WHERE id = $1", session_id)
        return status == "DELETE 1"

    async def remove_ended(self, idle_since: datetime, created_before: datetime) -> int:
        status: str = await self.conn.execute(
            "DELETE FROM session WHERE seen_at < $1 OR created_at < $2", idle_since, created_before
        )
        return int(status.rsplit(maxsplit=1)[-1])


class ConsoleUnit(Unit):
    def __init__(self, uow: UnitOfWork) -> None:
        super().__init__(uow)
        self.sessions = PgSessions(self.conn)


class ConsoleStore(UnitsOn[ConsoleUnit]):
    """The console's units of work (``his.console.ports.ConsoleUnits``) on its database."""

    def unit(self, uow: UnitOfWork) -> ConsoleUnit:
        return ConsoleUnit(uow)


__all__ = ["ConsoleStore", "ConsoleUnit", "PgSessions"]
