"""Write transactions with and without outbox rows, and with and without the relay's wake-up."""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from his.benchmarks.common import (
    PROBE_INSERT,
    PROBE_TABLE,
    Bench,
    NoWakeup,
    ProbeRecorded,
)
from his.benchmarks.harness import (
    BenchmarkError,
    closed_loop,
    make_schema,
    settle,
)
from his.benchmarks.report import WritesCell, WritesResult
from his.kernel.db import Database, OutboxSignal, outbox_channel

WRITE_VARIANTS = ("plain", "outbox", "wake_local", "wake_notify", "notify_in_tx")


async def measure_writes(b: Bench) -> WritesResult:
    cfg = b.cfg
    out: WritesResult = {"seconds_per_cell": cfg.write_seconds, "rounds": cfg.write_rounds}
    for w in cfg.writers:
        out[str(w)] = await writes_at(b, w)
    return out


def write_database(dsn: str, variant: str, writers: int) -> Database:
    schema = f"bench_w{writers}_{variant}"
    signal: OutboxSignal
    if variant in ("plain", "outbox", "notify_in_tx"):
        signal = NoWakeup(outbox_channel(schema))
    else:
        signal = OutboxSignal(outbox_channel(schema))
        signal.local_leader = variant == "wake_local"  # else: a leader elsewhere, woken by NOTIFY
    return Database(dsn, schema=schema, min_size=writers + 2, max_size=writers + 2, signal=signal)


def write_op(db: Database, variant: str) -> Callable[[], Awaitable[None]]:
    async def op() -> None:
        key = uuid.uuid4()
        async with db.uow() as uow:
            await uow.conn.execute(PROBE_INSERT, key, 0)
            if variant != "plain":
                uow.add(ProbeRecorded(probe_id=key, seq=0), aggregate_id=key)
            if variant == "notify_in_tx":
                await uow.conn.execute("SELECT pg_notify($1, '')", db.signal.channel)

    return op


async def writes_at(b: Bench, writers: int) -> WritesCell:
    """Variants take turns in short slices; each ratio is the median of its per-round ratios."""
    cfg = b.cfg
    dbs = {v: write_database(b.dsn, v, writers) for v in WRITE_VARIANTS}
    rates: dict[str, list[float]] = {v: [] for v in WRITE_VARIANTS}
    counts = dict.fromkeys(WRITE_VARIANTS, 0)
    notified = 0

    def on_notify(*_: object) -> None:
        nonlocal notified
        notified += 1

    for db in dbs.values():
        await make_schema(b.dsn, db.schema, PROBE_TABLE)
        await db.open()
    listener = await asyncpg.connect(b.dsn)
    await listener.add_listener(dbs["wake_notify"].signal.channel, on_notify)
    b.say(f"writes: {writers} writers, {len(WRITE_VARIANTS)} variants × {cfg.write_rounds} rounds")
    try:
        for r in range(-1, cfg.write_rounds):  # round -1 warms every pool and statement cache up
            shift = r % len(WRITE_VARIANTS)
            for v in WRITE_VARIANTS[shift:] + WRITE_VARIANTS[:shift]:
                settle()
                result = await closed_loop(writers, cfg.write_seconds if r >= 0 else 0.2, write_op(dbs[v], v))
                if result.failed:
                    raise BenchmarkError(f"writes {v}: {result.failed} transactions failed: {result.errors}")
                counts[v] += result.done
                if r >= 0:
                    rates[v].append(result.per_second)
        for v, db in dbs.items():
            rows = int(await db.pool.fetchval("SELECT count(*) FROM probe"))
            events = int(await db.pool.fetchval("SELECT count(*) FROM outbox"))
            if rows != counts[v] or events != (0 if v == "plain" else counts[v]):
                raise BenchmarkError(f"writes {v}: {rows} rows and {events} outbox rows for {counts[v]} commits")
    finally:
        await listener.close()
        for db in dbs.values():
            await db.close()

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True))

    return {
        "tx_per_s": {v: statistics.median(rates[v]) for v in WRITE_VARIANTS},
        "tx_per_s_rounds": rates,
        "notifications_received": notified,
        "outbox_vs_plain": ratio("outbox", "plain"),
        "wake_local_vs_outbox": ratio("wake_local", "outbox"),
        "wake_notify_vs_outbox": ratio("wake_notify", "outbox"),
        "notify_in_tx_vs_outbox": ratio("notify_in_tx", "outbox"),
    }
