"""What the backbone benchmarks share: configuration, benchmark event types, small helpers."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

from nats.aio.client import Client as NATS

from his.benchmarks.harness import (
    BenchmarkError,
    TimedJetStream,
)
from his.kernel.db import Database, OutboxSignal
from his.kernel.events import Envelope, Event, registry, stream_name

SERVICE = "bench"
STREAM = stream_name(SERVICE)
PROBE_TABLE = "CREATE TABLE probe (id uuid PRIMARY KEY, seq int NOT NULL, at timestamptz NOT NULL DEFAULT now())"
PROBE_INSERT = "INSERT INTO probe (id, seq) VALUES ($1, $2)"


class ProbeRecorded(Event):
    """Benchmark event written through the outbox (registered only while a benchmark runs)."""

    type = "his.bench.probe.recorded.v1"
    probe_id: uuid.UUID
    seq: int


class WorkQueued(Event):
    """Benchmark event consumed through the inbox (registered only while a benchmark runs)."""

    type = "his.bench.work.queued.v1"
    work_id: uuid.UUID
    seq: int


@dataclass(frozen=True)
class BenchConfig:
    rate: float = 1000.0
    latency_seconds: float = 10.0
    latency_slices: int = 4
    warmup_seconds: float = 1.0
    drain_events: int = 20_000
    consume_events: int = 5_000
    consume_rounds: int = 4
    write_seconds: float = 0.5
    write_rounds: int = 8
    writers: tuple[int, ...] = (8, 32)

    @classmethod
    def quick(cls) -> BenchConfig:
        """A smoke run of about 30 s: the same paths, smaller sizes, noisier figures."""
        return cls(
            latency_seconds=2.0,
            warmup_seconds=0.5,
            drain_events=4000,
            consume_events=2000,
            consume_rounds=2,
            write_seconds=0.3,
            write_rounds=3,
        )

    @classmethod
    def tiny(cls) -> BenchConfig:
        """For the smoke test: every code path, minimal sizes."""
        return cls(
            rate=200.0,
            latency_seconds=0.5,
            warmup_seconds=0.1,
            drain_events=300,
            consume_events=200,
            consume_rounds=1,
            latency_slices=1,
            write_seconds=0.1,
            write_rounds=1,
            writers=(2, 4),
        )


@dataclass
class Bench:
    """What every measurement gets: the servers' addresses and a JetStream context."""

    dsn: str
    nc: NATS
    js: TimedJetStream
    cfg: BenchConfig
    say: Callable[[str], None]


#: When the current task's last unit of work committed (set by ``CommitClock``).
COMMITTED_AT: contextvars.ContextVar[float] = contextvars.ContextVar("his_bench_committed_at", default=math.nan)


class CommitClock(OutboxSignal):
    """The system's wake-up, noting the moment the commit returned (before the pool release)."""

    def committed(self) -> None:
        COMMITTED_AT.set(time.perf_counter())
        super().committed()


class NoWakeup(OutboxSignal):
    """A signal that wakes nobody: the 'no wake-up' baseline of the write benchmark."""

    def committed(self) -> None:
        return None


@contextlib.contextmanager
def bench_events() -> Iterator[None]:
    """Register the benchmark's event types for the run only (they never reach the catalogue)."""
    added = [cls for cls in (ProbeRecorded, WorkQueued) if cls.type not in registry.types]
    for cls in added:
        registry.register(cls)
    try:
        yield
    finally:
        for cls in added:
            registry.types.pop(cls.type, None)


@contextlib.asynccontextmanager
async def opened(db: Database) -> AsyncIterator[Database]:
    await db.open()
    try:
        yield db
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def running(coro: Awaitable[None]) -> AsyncIterator[asyncio.Task[None]]:
    task: asyncio.Task[None] = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def envelopes(event: Callable[[uuid.UUID, int], Event], n: int) -> list[Envelope]:
    out = []
    for i in range(n):
        key = uuid.uuid4()
        out.append(Envelope.wrap(event(key, i), aggregate_id=key))
    return out


def headers_of(env: Envelope) -> dict[str, str]:
    """The headers the relay sends (message id for deduplication, trace context)."""
    return {"Nats-Msg-Id": str(env.id), "traceparent": env.traceparent}


async def publish_pipelined(js: TimedJetStream, envs: list[Envelope]) -> float:
    """Raw baseline: ``publish_async`` every envelope, then wait for every PubAck; returns seconds."""
    payloads = [(e.type, e.to_json(), headers_of(e)) for e in envs]
    with js.record() as acked:
        start = time.perf_counter()
        futures = [await js.publish_async(s, p, headers=h) for s, p, h in payloads]
        await asyncio.gather(*futures, return_exceptions=True)
        await asyncio.sleep(0)  # let the PubAck callbacks run
        elapsed = (max(acked.values()) if acked else time.perf_counter()) - start
    check_acked(js, [str(e.id) for e in envs], "raw publish")
    return elapsed


def check_acked(js: TimedJetStream, ids: list[str], what: str) -> None:
    missing = [i for i in ids if i not in js.acked]
    if js.failures or missing:
        raise BenchmarkError(f"{what}: {len(missing)} PubAcks missing, {len(js.failures)} bad: {js.failures[:3]}")


async def unpublished(db: Database) -> int:
    return int(await db.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


async def wait_marked(db: Database, timeout: float = 30.0) -> None:
    deadline = time.perf_counter() + timeout
    while await unpublished(db):
        if time.perf_counter() > deadline:
            raise BenchmarkError("the relay left outbox rows unmarked")
        await asyncio.sleep(0.01)


def all_acked(acked: dict[str, float], ids: Iterable[str]) -> Callable[[], bool]:
    return lambda: all(i in acked for i in ids)


def probe_event(key: uuid.UUID, i: int) -> Event:
    return ProbeRecorded(probe_id=key, seq=i)


def work_event(key: uuid.UUID, i: int) -> Event:
    return WorkQueued(work_id=key, seq=i)
