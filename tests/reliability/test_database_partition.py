"""A database that goes silent must not stall the outbox relay for ever.

A network partition between a service and PostgreSQL looks, from the service, like a server that
stopped answering: the connection stays open and no reply comes. PostgreSQL notices first (its
TCP keepalive) and ends the session, which frees the relay's leader lock; the relay never hears
of it. With no deadline on its statements the relay waits on that dead connection for ever, holds
no lock, and nothing it should publish is published.

The partition is real at the socket level: the relay reaches PostgreSQL through a Unix-socket
proxy that, when the test cuts it, stops forwarding in both directions on every open connection
(the sockets stay open, as in a partition). New connections pass, as after the network heals. The
session is then ended on the server side with ``pg_terminate_backend``, as keepalive would.

Promise: the relay gives up the silent connection at its statement deadline (``HIS_DB_TIMEOUT``),
takes the lock again on a new connection, and publishes every committed row.
Broken variant: no deadline; after the same wait nothing written since the cut is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from nats.js.client import JetStreamContext

from his.infra import postgres as pg_infra
from his.kernel.db import Database
from his.kernel.outbox import OutboxRelay
from tests.reliability.harness import running, unpublished
from tests.support.events import ThingHappened
from tests.support.waiting import wait_for

DEADLINE = 1.0  # the relay's statement deadline in the promised variant
AFTER_CUT = 40  # events committed after the partition
BROKEN_WAIT = 8.0  # how long the broken variant is watched: the deadline, the close, the backoff, twice over


@dataclass
class Link:
    """One client connection through the proxy; ``silent`` drops what either side sends."""

    silent: bool = False
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


class PartitionProxy:
    """A Unix-socket proxy in front of PostgreSQL's socket that can cut every open connection."""

    def __init__(self, upstream: Path, port: int) -> None:
        self.upstream = upstream
        self.dir = Path(tempfile.mkdtemp(prefix="his-part-"))  # short: a socket path has ~100 bytes
        self.path = self.dir / f".s.PGSQL.{port}"
        self.links: list[Link] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._accept, path=str(self.path))

    def cut(self) -> int:
        """Silence every open connection, both ways; returns how many there were."""
        for link in self.links:
            link.silent = True
        return len(self.links)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for link in self.links:
            for w in link.writers:
                w.close()
        self.path.unlink(missing_ok=True)
        self.dir.rmdir()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_unix_connection(str(self.upstream))
        link = Link(writers=[client_w, server_w])
        self.links.append(link)
        for src, dst in ((client_r, server_w), (server_r, client_w)):
            task = asyncio.create_task(self._pump(link, src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _pump(link: Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                if not link.silent:
                    dst.write(data)
                    await dst.drain()
            if not link.silent:
                dst.close()


@pytest.fixture
async def proxy(pg: pg_infra.PostgresLocation) -> AsyncIterator[PartitionProxy]:
    p = PartitionProxy(Path(pg.socket_dir) / f".s.PGSQL.{pg.port}", pg.port)
    await p.start()
    try:
        yield p
    finally:
        await p.close()


async def write(db: Database, n: int) -> None:
    for i in range(n):
        async with db.uow() as uow:
            uow.add(ThingHappened(thing_id=uuid.uuid4(), seq=i), aggregate_id=uuid.uuid4())


async def relay_sessions(admin: asyncpg.Connection, schema: str) -> list[int]:
    rows = await admin.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", f"his-relay-{schema}")
    return [r["pid"] for r in rows]


@pytest.mark.parametrize("variant", ["deadline", "no-deadline-broken"])
async def test_a_relay_cut_off_from_its_database_reconnects_at_its_deadline(
    variant: str,
    db: Database,
    js: JetStreamContext,
    admin_dsn: str,
    pg: pg_infra.PostgresLocation,
    proxy: PartitionProxy,
) -> None:
    through_proxy = db.dsn.replace(f"host={pg.socket_dir}", f"host={proxy.dir}")
    assert through_proxy != db.dsn
    deadline = DEADLINE if variant == "deadline" else 3600.0
    relay = OutboxRelay(
        through_proxy, js, schema=db.schema, signal=db.signal, poll_seconds=0.2, standby_retry=0.2, db_timeout=deadline
    )
    admin = await asyncpg.connect(admin_dsn)
    try:
        async with running(relay.run()):
            await write(db, 10)
            await wait_for(lambda: _drained(db), timeout=15, what="the relay publishing before the cut")
            assert relay.stats.leader

            assert proxy.cut() >= 1
            sessions = await relay_sessions(admin, db.schema)
            assert len(sessions) == 1, sessions
            await admin.execute("SELECT pg_terminate_backend($1)", sessions[0])  # the server's keepalive gave up
            await write(db, AFTER_CUT)

            if variant == "no-deadline-broken":
                await asyncio.sleep(BROKEN_WAIT)
                assert await unpublished(db) == AFTER_CUT, "a relay with no deadline waits on the dead connection"
                assert not await relay_sessions(admin, db.schema)
                return

            await wait_for(lambda: _drained(db), timeout=15, what="the relay publishing after the cut")
            assert relay.stats.leader
            assert len(await relay_sessions(admin, db.schema)) == 1  # a new session, through the healed network
            assert "TimeoutError" in (relay.stats.last_error or "")
    finally:
        await admin.close()


async def _drained(db: Database) -> bool:
    return await unpublished(db) == 0
