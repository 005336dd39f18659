"""Connection pool and the unit of work: the one place where a transaction commits.

A unit of work collects integration events while the transaction runs and writes them as
outbox rows just before commit, so state and events commit together or not at all. After the
commit it wakes the outbox relay (in-process when the relay is local, else a coalesced NOTIFY).

A read that must leave a record (an audited read of a patient's data) writes nothing of its
own: ``Database.read`` runs it on a read-only session and then commits its records with
those of every other reader waiting at that moment, in one transaction (``GroupCommit``), before
the caller may answer (ADR 0014).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from his.kernel import tracing
from his.kernel.clock import Clock, utc_now
from his.kernel.events import SEQ_FIELD, Envelope, Event

log = logging.getLogger("his.db")

#: What a database that is away raises: refused or lost connections, a server starting up or
#: shutting down (``OperatorInterventionError``: cannot connect now, admin or crash shutdown), and
#: asyncpg's ``InternalClientError`` ("another operation is in progress"), which it raises for a
#: connection the server terminated while it was in use. An outage, never a bug: 503 and retry.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

if TYPE_CHECKING:
    #: A connection, whether taken from a pool or opened directly.
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
else:
    Connection = asyncpg.Connection | PoolConnectionProxy
    Pool = asyncpg.Pool

#: A row as a query returns it.
Record = asyncpg.Record

OUTBOX_INSERT = """
INSERT INTO outbox (event_id, subject, payload, traceparent)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::text[])
"""

#: Each schema's gap-free counter of numbered events (``Envelope.numbers``, ADR 0028): one row,
#: moved on in the statement that writes their outbox rows, so a number is taken by exactly one
#: committed event. A schema whose events are numbered creates it (``producer_seq_sql``).
SEQ_TABLE = "producer_seq"

#: ``OUTBOX_INSERT`` for events some of which are numbered: the counter moves on by $7 and each
#: numbered payload is its part before the number ($3), the number (the base + $4), and the rest ($5).
#: One statement, so a commit of its own outside a transaction. No counter row: no row inserted.
NUMBERED_OUTBOX_INSERT = f"""
WITH n AS (UPDATE {SEQ_TABLE} SET last = last + $7::bigint RETURNING last - $7::bigint AS base)
INSERT INTO outbox (event_id, subject, payload, traceparent)
SELECT u.e, u.s, CASE WHEN u.o IS NULL THEN u.p ELSE u.p || convert_to((n.base + u.o)::text, 'UTF8') || u.q END, u.t
FROM n, unnest($1::uuid[], $2::text[], $3::bytea[], $4::bigint[], $5::bytea[], $6::text[])
     WITH ORDINALITY AS u(e, s, p, o, q, t, i)
ORDER BY u.i
"""

_SLOT = f'"{SEQ_FIELD}":null'.encode()

_savepoint_ids = itertools.count(1)


def producer_seq_sql() -> list[str]:
    """DDL of the counter of numbered events (``SEQ_TABLE``), run by a producer's migration."""
    return [
        f"""CREATE TABLE {SEQ_TABLE} (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            last bigint NOT NULL DEFAULT 0 CHECK (last >= 0)
        )""",
        f"INSERT INTO {SEQ_TABLE} DEFAULT VALUES",
    ]


def numbered_parts(env: Envelope) -> tuple[bytes, bytes]:
    """The event's JSON before and after its number: ``"producer_seq":`` ends the first part.

    The null left in ``data`` is the one place in the JSON with these bytes: a quote inside a
    string is escaped, so no string value can hold them.
    """
    raw = env.to_json()
    head, found, tail = raw.partition(_SLOT)
    if not found or _SLOT in tail:
        raise ValueError(f"{env.type} is numbered but its {SEQ_FIELD} is not null exactly once")
    return head + _SLOT[: -len(b"null")], tail


def _offsets(events: list[Envelope]) -> tuple[list[int | None], int]:
    """Each event's first number counted from the batch's base (None: not numbered), and the total."""
    offsets: list[int | None] = []
    total = 0
    for e in events:
        offsets.append(total + 1 if e.numbers else None)
        total += e.numbers
    return offsets, total


def outbox_insert_sql(events: list[Envelope]) -> str:
    """The outbox rows of ``events`` as one INSERT with literal values, to travel with the COMMIT.

    Every value is spelled in hex (``decode('…', 'hex')``) or is a canonical UUID, so no event
    content can end the literal, whatever the server's string settings. Numbered events take
    their numbers from the schema's counter, moved on by an UPDATE in front of the INSERT (the
    same transaction); without the counter's row their payload is null and the INSERT fails.
    """
    offsets, total = _offsets(events)
    rows = ", ".join(
        f"('{uuid.UUID(str(e.id))}'::uuid, {_text(e.type)}, {_payload(e, offset, total)}, "
        f"{'NULL' if e.traceparent is None else _text(e.traceparent)})"
        for e, offset in zip(events, offsets, strict=True)
    )
    insert = f"INSERT INTO outbox (event_id, subject, payload, traceparent) VALUES {rows}"
    return f"UPDATE {SEQ_TABLE} SET last = last + {total}; {insert}" if total else insert


def _payload(env: Envelope, offset: int | None, total: int) -> str:
    if offset is None:
        return f"decode('{env.to_json().hex()}', 'hex')"
    head, tail = numbered_parts(env)
    number = f"((SELECT last FROM {SEQ_TABLE}) - {total} + {offset})::text"
    return f"decode('{head.hex()}', 'hex') || convert_to({number}, 'UTF8') || decode('{tail.hex()}', 'hex')"


def _text(value: str) -> str:
    return f"convert_from(decode('{value.encode().hex()}', 'hex'), 'UTF8')"


@asynccontextmanager
async def savepoint(conn: Connection) -> AsyncIterator[None]:
    """A savepoint in the unit of work's transaction: on error its statements are undone and the
    transaction goes on.

    Use this, not ``conn.transaction()``, inside a unit of work: the unit of work begins and ends
    its transaction itself (see ``UnitOfWork.commit``), and asyncpg refuses its own transaction
    blocks inside a transaction it did not begin.
    """
    name = f"his_sp_{next(_savepoint_ids)}"
    await conn.execute(f"SAVEPOINT {name}")
    try:
        yield
        # Inside the try: if the block swallowed a statement's error, RELEASE fails on the aborted
        # transaction, and only the ROLLBACK TO below lets the rest of the transaction go on.
        await conn.execute(f"RELEASE SAVEPOINT {name}")
    except BaseException:
        if not conn.is_closed():
            await conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
        raise


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

    def __init__(self, conn: Connection, clock: Clock = utc_now) -> None:
        self.conn = conn
        #: The service's clock (``Database.clock``): what "now" is for the work done in this unit.
        self.clock = clock
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
            async with savepoint(self.conn):
                yield self
        except BaseException:
            del self.events[mark:]
            del self.committed[hooks:]
            raise

    async def commit(self) -> None:
        """Write the outbox rows still queued and COMMIT, in one round trip: one simple-query
        message (``INSERT …; COMMIT``). If the INSERT fails, PostgreSQL skips the COMMIT and the
        transaction is rolled back by the caller; a COMMIT that fails ends the transaction.

        A transaction that an earlier statement's error aborted (code that caught the error
        without a savepoint) is answered ``ROLLBACK``, not an error: that raises here, so
        nothing that was rolled back passes for committed."""
        if not self.events:
            status = await self.conn.execute("COMMIT")
        else:
            status = await self.conn.execute(f"{outbox_insert_sql(self.events)}; COMMIT")
        if status != "COMMIT":
            raise asyncpg.InFailedSQLTransactionError(
                f"the transaction was aborted by an earlier error and rolled back (COMMIT answered {status})"
            )


class Unit:
    """A service's unit of work on PostgreSQL (``his.kernel.ports.Work``): the kernel's
    ``UnitOfWork``, whose connection the service's repositories (set by a subclass) use."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.work = uow
        self.conn = uow.conn

    @property
    def clock(self) -> Clock:
        return self.work.clock

    def add(self, ev: Event, *, aggregate_id: str | uuid.UUID, aggregate_version: int = 1) -> Envelope:
        return self.work.add(ev, aggregate_id=aggregate_id, aggregate_version=aggregate_version)

    def on_commit(self, fn: Callable[[], object]) -> None:
        self.work.on_commit(fn)


async def commit_settings(conn: Connection) -> tuple[str, str]:
    """``synchronous_commit`` and ``fsync`` as they are now on ``conn`` (inside a transaction:
    as that transaction would commit)."""
    row = await conn.fetchrow("SELECT current_setting('synchronous_commit'), current_setting('fsync')")
    assert row is not None
    return str(row[0]), str(row[1])


async def write_outbox(conn: Connection, events: list[Envelope]) -> None:
    """Insert the outbox rows of ``events`` in one statement (outside a transaction, one atomic
    statement is a transaction of its own); numbered events take their numbers in it."""
    if not events:
        return
    offsets, total = _offsets(events)
    if not total:
        await conn.execute(
            OUTBOX_INSERT,
            [e.id for e in events],
            [e.type for e in events],
            [e.to_json() for e in events],
            [e.traceparent for e in events],
        )
        return
    parts = [numbered_parts(e) if e.numbers else (e.to_json(), None) for e in events]
    status = await conn.execute(
        NUMBERED_OUTBOX_INSERT,
        [e.id for e in events],
        [e.type for e in events],
        [head for head, _ in parts],
        offsets,
        [tail for _, tail in parts],
        [e.traceparent for e in events],
        total,
    )
    if status != f"INSERT 0 {len(events)}":
        raise RuntimeError(f"the outbox took no rows ({status}): the schema has no {SEQ_TABLE} row")


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Release a pooled connection without asyncpg's reset query.

    asyncpg has already rolled back a transaction left open and dropped its listeners; its reset
    query (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) undoes session state,
    and pooled connections hold none: transactions use transaction-scoped advisory locks, cursors
    live inside transactions, and the relay's LISTEN and session lock are on its own connection.
    Skipping it saves a round trip per release, two per request on the booking path.
    """


#: Merges the events of readers committed together into fewer (e.g. one batched access event).
Combine: TypeAlias = Callable[[list[Envelope]], list[Envelope]]


class GroupCommit:
    """Outbox rows that callers must see committed before they answer, committed together.

    A caller's rows wait for the transaction in flight, if any, and then go in the next one
    with those of every caller that arrived meanwhile: alone, a caller's rows commit at once;
    under load one commit (one WAL flush) serves many callers. If that transaction fails, each
    of its callers gets the error, so none answers without its rows.
    """

    def __init__(
        self,
        pool: Callable[[], Pool],
        signal: OutboxSignal,
        *,
        combine: Combine | None = None,
        max_rows: int = 500,
    ) -> None:
        self._pool = pool
        self._signal = signal
        self._combine = combine
        self._max_rows = max_rows
        self._waiting: list[tuple[list[Envelope], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def write(self, events: list[Envelope]) -> None:
        """Return once ``events`` are committed to the outbox; raise if their transaction failed."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((events, done))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="group-commit")
        await done

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """The connection a batch commits on."""
        async with self._pool().acquire() as conn:
            yield conn

    async def commit_settings(self) -> tuple[str, str]:
        """``synchronous_commit`` and ``fsync`` as a batch would commit with them (on the
        connection it would take), for the durability guard (``his.kernel.safety``)."""
        async with self._connection() as conn:
            return await commit_settings(conn)

    def _take(self) -> list[tuple[list[Envelope], asyncio.Future[None]]]:
        rows = n = 0
        while n < len(self._waiting) and (n == 0 or rows + len(self._waiting[n][0]) <= self._max_rows):
            rows += len(self._waiting[n][0])
            n += 1
        batch, self._waiting = self._waiting[:n], self._waiting[n:]
        return batch

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._take()
                events = [e for evs, done in batch if not done.cancelled() for e in evs]
                try:
                    if self._combine is not None:
                        events = self._combine(events)
                    if events:  # one INSERT on its own is one transaction: one round trip
                        async with self._connection() as conn:
                            await write_outbox(conn, events)
                except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch, who raises it
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                self._signal.committed()
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._task = None


class Database:
    """A service's connection pool, bound to its schema.

    Code using it must leave no session state on a pooled connection (no ``SET`` without
    ``LOCAL``, ``LISTEN`` or session advisory locks): connections are not reset on release.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str,
        min_size: int = 2,
        max_size: int = 10,
        signal: OutboxSignal | None = None,
        combine_reads: Combine | None = None,
        timeout: float = 30.0,
        clock: Clock = utc_now,
    ) -> None:
        self.dsn = dsn
        #: The service's clock: handlers decide by it, and pass its moments to SQL as parameters
        #: rather than the server's ``now()`` (``his.kernel.clock``).
        self.clock = clock
        #: Deadline of each statement (asyncpg's ``command_timeout``), and of opening a connection.
        self.timeout = timeout
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.signal = signal or OutboxSignal(outbox_channel(schema))
        self._pool: Pool | None = None
        #: Connections for ``read``, opened at its first use: their sessions are read-only.
        self._read_pool: Pool | None = None
        self._read_pool_opening = asyncio.Lock()
        self._group = GroupCommit(lambda: self.pool, self.signal, combine=combine_reads)
        self._span_name = f"{schema} transaction"
        self._span_attributes = {"db.system.name": "postgresql", "db.namespace": schema}

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=self.min_size,
            max_size=self.max_size,
            server_settings={"search_path": self.schema, "application_name": f"his-{self.schema}"},
            reset=_keep_session,
            command_timeout=self.timeout,
            timeout=self.timeout,
        )
        self.signal.bind(self._pool)

    async def close(self, timeout: float = 10.0) -> None:
        """Close the pool, waiting up to ``timeout`` for borrowed connections; then terminate.

        A connection still held by a task that was cancelled mid-release would otherwise make
        shutdown wait forever.
        """
        for pool in (self._read_pool, self._pool):
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), timeout)
                except TimeoutError:
                    log.warning("database pool of %s did not close within %.0fs; terminating it", self.schema, timeout)
                    pool.terminate()

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise RuntimeError("Database.open() was not called")
        return self._pool

    @asynccontextmanager
    async def uow(self) -> AsyncIterator[UnitOfWork]:
        """Run a transaction; events added to it are committed with it, then the relay is woken.

        The transaction is a span; the events added in it carry its trace context. Inside it, use
        ``savepoint`` (or ``UnitOfWork.savepoint``), not ``conn.transaction()`` (ADR 0015).
        """
        with tracing.span(self._span_name, attributes=self._span_attributes):
            async with self._transaction() as uow:
                yield uow

    @asynccontextmanager
    async def read(self) -> AsyncIterator[UnitOfWork]:
        """Run reads on a read-only session; the events added to the unit of work (the access
        records of what it read) are committed after it, grouped with other readers', before
        the block exits.

        If they cannot be committed the block raises, so the caller answers an error, not the
        data (fail-closed). A statement that writes fails. The statements run without BEGIN
        and COMMIT (two round trips less): under READ COMMITTED each statement of a
        transaction takes its own snapshot anyway, so a transaction would add nothing.
        """
        with tracing.span(self._span_name, attributes=self._span_attributes):
            pool = self._read_pool or await self.read_pool()
            async with pool.acquire() as conn:
                uow = UnitOfWork(conn, self.clock)
                yield uow
            if uow.events:
                await self._group.write(uow.events)
            for fn in uow.committed:
                fn()

    def opened_read_pool(self) -> Pool | None:
        """The pool of ``read`` if a read has opened it."""
        return self._read_pool

    async def read_pool(self) -> Pool:
        """The pool of ``read``, opened now if it is not open yet."""
        async with self._read_pool_opening:
            if self._read_pool is None:
                self._read_pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=1,
                    max_size=max(2, self.max_size // 2),
                    server_settings={
                        "search_path": self.schema,
                        "application_name": f"his-{self.schema}-read",
                        "default_transaction_read_only": "on",
                    },
                    reset=_keep_session,
                    command_timeout=self.timeout,
                    timeout=self.timeout,
                )
            return self._read_pool

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[UnitOfWork]:
        async with self.pool.acquire() as conn:
            uow = UnitOfWork(conn, self.clock)
            # BEGIN and COMMIT by hand rather than with conn.transaction(): the outbox rows travel
            # with the COMMIT, a round trip less per transaction (docs/performance.md).
            await conn.execute("BEGIN")
            try:
                yield uow
                await uow.commit()
            except BaseException:
                if not conn.is_closed() and conn.is_in_transaction():
                    await conn.execute("ROLLBACK")
                raise
            if uow.events:
                self.signal.committed()  # now, not after the connection's reset round trip
            for fn in uow.committed:
                fn()

    async def commit_settings(self) -> dict[str, tuple[str, str]]:
        """``synchronous_commit`` and ``fsync`` as this database's writes commit with them, read
        where they commit: inside a real unit of work (``uow``), and on the connection of the
        grouped writer of ``read``'s access records. A server setting, a role's or a pool's
        session setting and a ``SET LOCAL`` in the unit of work all show here."""
        async with self.uow() as uow:
            in_uow = await commit_settings(uow.conn)
        return {"a unit of work": in_uow, "the grouped writer of access records": await self._group.commit_settings()}

    async def run(self, fn: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        async with self.uow() as uow:
            return await fn(uow)


T = TypeVar("T")


async def retry_aborted(attempt: Callable[[], Awaitable[T]], *, tries: int = 3) -> T:
    """Run ``attempt`` (a whole transaction) again when PostgreSQL aborted it for a concurrent one.

    Two inserts that an exclusion constraint sets against each other (overlapping shifts or
    appointments) can each wait for the other: PostgreSQL then aborts one with a deadlock error
    (40P01), as it does a serializable transaction that lost a race (40001). Run again, the
    aborted one finds the other's row committed (or gone), so the caller gets the answer a
    sequential run would give: its conflict, or its success. ``attempt`` must have no effect
    outside its transaction.
    """
    for n in range(1, tries + 1):
        try:
            return await attempt()
        except asyncpg.TransactionRollbackError as exc:
            if n == tries:
                raise
            log.info("transaction aborted for a concurrent one (%s); running it again", exc.sqlstate)
            await asyncio.sleep(random.uniform(0, 0.005 * 2**n))  # noqa: S311 - jitter, not a secret
    raise AssertionError("unreachable")


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


U = TypeVar("U", bound=Unit)


@dataclass(frozen=True)
class UnitsOn(Generic[U]):
    """A service's units of work on its database (``his.kernel.ports.Units``): ``uow()`` a
    transaction, ``read()`` reads, each wrapped in the service's unit (``unit``)."""

    db: Database

    def unit(self, uow: UnitOfWork) -> U:
        """The service's unit over the kernel's unit of work."""
        raise NotImplementedError

    @asynccontextmanager
    async def uow(self) -> AsyncIterator[U]:
        async with self.db.uow() as uow:
            yield self.unit(uow)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[U]:
        async with self.db.read() as uow:
            yield self.unit(uow)
