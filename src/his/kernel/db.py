"""Connection pool and the unit of work: the one place where a transaction commits.

A unit of work collects integration events while the transaction runs and writes them as
outbox rows just before commit, so state and events commit together or not at all. After the
commit it wakes the outbox relay (in-process when the relay is local, else a coalesced NOTIFY).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from his.kernel import tracing
from his.kernel.events import Envelope, Event

log = logging.getLogger("his.db")

if TYPE_CHECKING:
    #: A connection, whether taken from a pool or opened directly.
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
else:
    Connection = asyncpg.Connection | PoolConnectionProxy
    Pool = asyncpg.Pool

OUTBOX_INSERT = """
INSERT INTO outbox (event_id, subject, payload, traceparent)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::text[])
"""


class OutboxSignal:
    """Tells the relay that rows were committed.

    If the relay leader runs in this process, setting an asyncio event is enough. Otherwise
    one NOTIFY is sent on the pool, outside any write transaction, and calls that arrive while
    it is in flight are coalesced into one more.
    """

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.local = asyncio.Event()
        self.local_leader = False
        self._pool: Pool | None = None
        self._notify_task: asyncio.Task[None] | None = None
        self._again = False

    def bind(self, pool: Pool) -> None:
        self._pool = pool

    def committed(self) -> None:
        self.local.set()
        if self.local_leader or self._pool is None:
            return
        if self._notify_task is not None and not self._notify_task.done():
            self._again = True
            return
        self._notify_task = asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        assert self._pool is not None
        while True:
            self._again = False
            try:
                await self._pool.execute("SELECT pg_notify($1, '')", self.channel)
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                return  # the relay's poll fallback picks the rows up
            if not self._again:
                return


class UnitOfWork:
    """One database transaction plus the events it will publish."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.events: list[Envelope] = []
        self.committed: list[Callable[[], object]] = []

    def add(self, ev: Event, *, aggregate_id: str | uuid.UUID, aggregate_version: int = 1) -> Envelope:
        """Queue an integration event; it is written to the outbox in this transaction."""
        env = Envelope.wrap(ev, aggregate_id=aggregate_id, aggregate_version=aggregate_version)
        self.events.append(env)
        return env

    def on_commit(self, fn: Callable[[], object]) -> None:
        """Call ``fn`` once the transaction has committed (never if it rolls back), e.g. to count it."""
        self.committed.append(fn)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[UnitOfWork]:
        """A nested scope: on error its statements, events and commit hooks are undone, the rest stays."""
        mark, hooks = len(self.events), len(self.committed)
        try:
            async with self.conn.transaction():
                yield self
        except BaseException:
            del self.events[mark:]
            del self.committed[hooks:]
            raise

    async def flush_events(self) -> None:
        if not self.events:
            return
        await self.conn.execute(
            OUTBOX_INSERT,
            [e.id for e in self.events],
            [e.type for e in self.events],
            [e.to_json() for e in self.events],
            [e.traceparent for e in self.events],
        )


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Release a pooled connection without asyncpg's reset query.

    asyncpg has already rolled back a transaction left open and dropped its listeners; its reset
    query (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) undoes session state,
    and pooled connections hold none: transactions use transaction-scoped advisory locks, cursors
    live inside transactions, and the relay's LISTEN and session lock are on its own connection.
    Skipping it saves a round trip per release, two per request on the booking path.
    """


class Database:
    """A service's connection pool, bound to its schema.

    Code using it must leave no session state on a pooled connection (no ``SET`` without
    ``LOCAL``, ``LISTEN`` or session advisory locks): connections are not reset on release.
    """

    def __init__(
        self, dsn: str, *, schema: str, min_size: int = 2, max_size: int = 10, signal: OutboxSignal | None = None
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.signal = signal or OutboxSignal(outbox_channel(schema))
        self._pool: Pool | None = None
        self._span_name = f"{schema} transaction"
        self._span_attributes = {"db.system.name": "postgresql", "db.namespace": schema}

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=self.min_size,
            max_size=self.max_size,
            server_settings={"search_path": self.schema, "application_name": f"his-{self.schema}"},
            reset=_keep_session,
        )
        self.signal.bind(self._pool)

    async def close(self, timeout: float = 10.0) -> None:
        """Close the pool, waiting up to ``timeout`` for borrowed connections; then terminate.

        A connection still held by a task that was cancelled mid-release would otherwise make
        shutdown wait forever.
        """
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), timeout)
            except TimeoutError:
                log.warning("database pool of %s did not close within %.0fs; terminating it", self.schema, timeout)
                self._pool.terminate()

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise RuntimeError("Database.open() was not called")
        return self._pool

    @asynccontextmanager
    async def uow(self) -> AsyncIterator[UnitOfWork]:
        """Run a transaction; events added to it are committed with it, then the relay is woken.

        The transaction is a span; the events added in it carry its trace context.
        """
        with tracing.span(self._span_name, attributes=self._span_attributes):
            async with self._transaction() as uow:
                yield uow

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[UnitOfWork]:
        async with self.pool.acquire() as conn:
            uow = UnitOfWork(conn)
            async with conn.transaction():
                yield uow
                await uow.flush_events()
            if uow.events:
                self.signal.committed()  # now, not after the connection's reset round trip
            for fn in uow.committed:
                fn()

    async def run(self, fn: Callable[[UnitOfWork], Awaitable[Any]]) -> Any:
        async with self.uow() as uow:
            return await fn(uow)


def outbox_channel(schema: str) -> str:
    return f"his_outbox_{schema}"


def kernel_tables_sql() -> list[str]:
    """DDL of the outbox and inbox tables, run by each service's first migration."""
    return [
        """CREATE TABLE outbox (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id uuid NOT NULL UNIQUE,
            subject text NOT NULL,
            payload bytea NOT NULL,
            traceparent text,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            published_at timestamptz
        )""",
        "CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL",
        "CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL",
        """CREATE TABLE inbox (
            consumer text NOT NULL,
            event_id uuid NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer, event_id)
        )""",
    ]
