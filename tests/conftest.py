"""Shared fixtures: real PostgreSQL and NATS servers, started from the pip wheels.

PostgreSQL (one per test session) listens on a private Unix socket only; NATS (one per test
that asks for it, since it starts in milliseconds) binds a free port on 127.0.0.1 with
JetStream on disk and ``sync_interval: always``.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from his.infra import nats as nats_infra
from his.infra import postgres as pg_infra
from his.infra.procs import ManagedProcess
from his.kernel import streams
from his.kernel.db import Database, kernel_tables_sql
from his.kernel.migrations import ensure_database
from tests.support.events import TEST_SERVICE


class NatsServer:
    """A nats-server the test owns: it can stop and restart it on the same port and store."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc: ManagedProcess | None = None
        self.loc: nats_infra.NatsLocation | None = None

    def start(self) -> None:
        port = self.loc.port if self.loc else None
        self.proc, self.loc = nats_infra.start(self.workdir, port=port, log_file=self.workdir / "nats.log")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    @property
    def url(self) -> str:
        assert self.loc is not None
        return self.loc.url

    @property
    def monitor_url(self) -> str:
        assert self.loc is not None
        return f"http://{self.loc.host}:{self.loc.monitor_port}"


@pytest.fixture(scope="session")
def open_tmp() -> Iterator[Callable[[str], Path]]:
    """Temporary directories the embedded PostgreSQL's system user can traverse.

    pytest keeps its own temporary root private (0700), which the server's user cannot enter.
    """
    made: list[Path] = []

    def make(prefix: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"his-test-{prefix}-"))
        path.chmod(0o755)
        made.append(path)
        return path

    yield make
    # All at once: removing a dozen data directories (some 40,000 files) one after another waits on
    # the disk about 7.5 s at the end of the session, in parallel threads about 3.5 s.
    if made:
        with ThreadPoolExecutor(min(len(made), 16)) as pool:
            list(pool.map(lambda path: shutil.rmtree(path, ignore_errors=True), made))


@pytest.fixture(scope="session")
def pg(open_tmp: Callable[[str], Path]) -> Iterator[pg_infra.PostgresLocation]:
    root = open_tmp("pg")
    proc, loc = pg_infra.start(root / "data", log_file=root / "postgres.log")
    asyncio.run(ensure_database(loc.url()))
    yield loc
    pg_infra.stop(proc, loc)


@pytest.fixture(scope="session")
def admin_dsn(pg: pg_infra.PostgresLocation) -> str:
    return pg.url()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    yield client
    await client.close()


@pytest.fixture
async def js(nc: NATS) -> JetStreamContext:
    """JetStream of ``nc`` with the test stream (``HIS_TST``) and the kernel's own streams declared."""
    js = nc.jetstream(timeout=5.0)
    await streams.declare(js, [TEST_SERVICE])
    return js


@pytest.fixture
async def schema(admin_dsn: str) -> AsyncIterator[str]:
    """A fresh schema holding the kernel tables (outbox, inbox); dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {name}")
        await conn.execute(f"SET search_path TO {name}")
        for stmt in kernel_tables_sql():
            await conn.execute(stmt)
    finally:
        await conn.close()
    yield name
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP SCHEMA {name} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def db(admin_dsn: str, schema: str) -> AsyncIterator[Database]:
    database = Database(admin_dsn, schema=schema, min_size=1, max_size=8)
    await database.open()
    yield database
    await database.close()
