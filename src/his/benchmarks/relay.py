"""Outbox relay: commit → PubAck latency at a constant rate, and the drain rate of a full outbox."""

from __future__ import annotations

import math
import time
import uuid

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from his.benchmarks.common import (
    COMMITTED_AT,
    PROBE_INSERT,
    PROBE_TABLE,
    STREAM,
    Bench,
    CommitClock,
    NoWakeup,
    ProbeRecorded,
    all_acked,
    check_acked,
    envelopes,
    headers_of,
    opened,
    probe_event,
    publish_pipelined,
    running,
    wait_marked,
)
from his.benchmarks.harness import (
    BenchmarkError,
    Latencies,
    make_schema,
    open_loop,
    settle,
    wait_until,
)
from his.benchmarks.report import AckLatencies, DrainResult, LatencyResult
from his.kernel.db import Database, outbox_channel
from his.kernel.outbox import OutboxRelay

# -- commit → PubAck latency at a constant rate ------------------------------------------------


async def measure_latency(b: Bench) -> LatencyResult:
    """Three ways to get an event into JetStream at a constant rate, taking turns in slices.

    - relay: the unit of work writes a row and its outbox row; the relay publishes it;
    - direct (the raw baseline): the same write without an outbox row, then ``publish_async``
      right after the commit (a dual write: what the outbox replaces), on the same disk load;
    - bare: ``publish_async`` alone (the floor set by JetStream with ``sync_interval: always``).
    """
    cfg = b.cfg
    schema = "bench_latency"
    await make_schema(b.dsn, schema, PROBE_TABLE)
    per_slice = round(cfg.rate * cfg.latency_seconds / cfg.latency_slices)
    total = per_slice * cfg.latency_slices
    size = total + round(cfg.rate * cfg.warmup_seconds)  # the warm-up uses the last ones
    prepared = {k: [(e.type, e.to_json(), headers_of(e)) for e in envelopes(probe_event, size)] for k in ("d", "b")}
    relay_t: dict[str, tuple[float, float]] = {}  # event id → (intended start, commit)
    direct_t: dict[str, tuple[float, float]] = {}
    bare_t: dict[str, tuple[float, float]] = {}

    async def relayed(i: int, intended: float) -> None:
        key = uuid.uuid4()
        async with db.uow() as uow:
            await uow.conn.execute(PROBE_INSERT, key, i)
            env = uow.add(ProbeRecorded(probe_id=key, seq=i), aggregate_id=key)
        committed = COMMITTED_AT.get()
        if math.isnan(committed):
            raise BenchmarkError("latency: a write returned without its commit time")
        relay_t[str(env.id)] = (intended, committed)

    async def direct(i: int, intended: float) -> None:
        key = uuid.uuid4()
        async with db.uow() as uow:
            await uow.conn.execute(PROBE_INSERT, key, i)
        subject, payload, headers = prepared["d"][i]
        direct_t[headers["Nats-Msg-Id"]] = (intended, time.perf_counter())
        await (await b.js.publish_async(subject, payload, headers=headers))

    async def bare(i: int, intended: float) -> None:
        subject, payload, headers = prepared["b"][i]
        bare_t[headers["Nats-Msg-Id"]] = (intended, intended)
        await (await b.js.publish_async(subject, payload, headers=headers))

    b.say(
        f"latency: relay, write + direct publish, and bare publish take turns at {cfg.rate:g} events/s, "
        f"{cfg.latency_seconds:g}s each in {cfg.latency_slices} slices"
    )
    lag = 0.0
    clock = CommitClock(outbox_channel(schema))
    async with opened(Database(b.dsn, schema=schema, min_size=16, max_size=16, signal=clock)) as db:
        relay = OutboxRelay(b.dsn, b.js, schema=schema, signal=db.signal)  # the services' defaults
        async with running(relay.run()):
            await wait_until(lambda: relay.stats.leader, timeout=10, what="relay leadership")
            with b.js.record() as acked:
                for op in (relayed, direct, bare):
                    await open_loop(cfg.rate, cfg.warmup_seconds, op, first=total)  # warm-up, not kept
                    await wait_until(all_acked(acked, [*relay_t, *direct_t, *bare_t]), 30, "warm-up PubAcks")
                for t in (relay_t, direct_t, bare_t):
                    t.clear()
                ways = (("relay", relayed, relay_t), ("direct", direct, direct_t), ("bare", bare, bare_t))
                for k in range(cfg.latency_slices):
                    for kind, op, times in ways:
                        settle()
                        load = await open_loop(cfg.rate, per_slice / cfg.rate, op, first=k * per_slice)
                        if load.failed:
                            raise BenchmarkError(f"latency {kind}: {load.failed} operations failed: {load.errors}")
                        lag = max(lag, load.lag_max_ms)
                        await wait_until(all_acked(acked, times), 30, "PubAcks")
                check_acked(b.js, [*relay_t, *direct_t, *bare_t], "latency")
            await wait_marked(db)
            batches, publish_errors = relay.stats.batches, relay.stats.publish_errors
    return {
        "rate_per_s": cfg.rate,
        "seconds": cfg.latency_seconds,
        "slices": cfg.latency_slices,
        "events": len(relay_t),
        "scheduler_lag_max_ms": lag,
        "relay": {
            **latencies(relay_t, acked),
            "commit_to_stored": (await stored_latency(b, relay_t)).summary(),
            "batches": batches,
            "publish_errors": publish_errors,
        },
        "direct": latencies(direct_t, acked),
        "bare": {"publish_to_ack": latencies(bare_t, acked)["intended_start_to_ack"]},
    }


def latencies(times: dict[str, tuple[float, float]], acked: dict[str, float]) -> AckLatencies:
    commit, intended = Latencies(), Latencies()
    for msg_id, (start, committed) in times.items():
        commit.add(acked[msg_id] - committed)
        intended.add(acked[msg_id] - start)
    return {"commit_to_ack": commit.summary(), "intended_start_to_ack": intended.summary()}


async def stored_latency(b: Bench, commits: dict[str, tuple[float, float]]) -> Latencies:
    """Commit → the timestamp JetStream stored with the message (server clock, same machine)."""
    wall_offset = time.time() - time.perf_counter()
    seqs = [b.js.seqs[k] for k in commits]
    first = min(seqs)
    sub = await b.js.pull_subscribe(
        ProbeRecorded.type,
        stream=STREAM,
        config=ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=first
        ),
    )
    stored: dict[str, float] = {}
    try:
        while len(stored) < len(commits):
            for m in await sub.fetch(1000, timeout=5.0):
                msg_id = (m.headers or {}).get("Nats-Msg-Id", "")
                if msg_id in commits:
                    stored[msg_id] = m.metadata.timestamp.timestamp()
    finally:
        await sub.unsubscribe()
    out = Latencies()
    for msg_id, (_, committed) in commits.items():
        out.add(stored[msg_id] - (committed + wall_offset))
    return out


# -- drain rate against raw pipelined publishing ------------------------------------------------


async def measure_drain(b: Bench) -> DrainResult:
    """Raw publishing runs half before and half after the relay drain, to cancel drift."""
    n = b.cfg.drain_events
    schema = "bench_drain"
    await make_schema(b.dsn, schema)
    raw_envs = envelopes(probe_event, n)
    b.say(f"drain: raw publish_async of {n // 2} events")
    settle()
    raw_seconds = await publish_pipelined(b.js, raw_envs[: n // 2])
    async with opened(Database(b.dsn, schema=schema, min_size=1, max_size=2, signal=NoWakeup("x"))) as db:
        ids = await fill_outbox(db, n)
        b.say(f"drain: the relay draining {n} outbox rows")
        relay = OutboxRelay(b.dsn, b.js, schema=schema, signal=db.signal)
        settle()
        with b.js.record() as acked:
            start = time.perf_counter()
            async with running(relay.run()):
                await wait_until(lambda: relay.stats.published >= n, 300, "drain", every=0.01)
                await wait_marked(db)
        check_acked(b.js, ids, "drain relay")
        end = max(acked[i] for i in ids)  # the last PubAck, as for the raw baseline
        if relay.stats.publish_errors:
            raise BenchmarkError(f"drain: relay reported {relay.stats.publish_errors} publish errors")
    b.say(f"drain: raw publish_async of {n - n // 2} events")
    settle()
    raw_seconds += await publish_pipelined(b.js, raw_envs[n // 2 :])
    relay_rate, raw_rate = n / (end - start), n / raw_seconds
    return {
        "events": n,
        "relay_per_s": relay_rate,
        "raw_per_s": raw_rate,
        "ratio": relay_rate / raw_rate,
        "relay_batches": relay.stats.batches,
    }


async def fill_outbox(db: Database, n: int) -> list[str]:
    """``n`` outbox rows written through units of work, 1,000 per transaction."""
    ids: list[str] = []
    for chunk in range(0, n, 1000):
        async with db.uow() as uow:
            for i in range(chunk, min(n, chunk + 1000)):
                key = uuid.uuid4()
                ids.append(str(uow.add(ProbeRecorded(probe_id=key, seq=i), aggregate_id=key).id))
    await db.pool.execute("VACUUM ANALYZE outbox")
    return ids
