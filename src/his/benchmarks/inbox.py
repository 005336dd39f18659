"""Consumer with its inbox against a raw pull consumer doing the same INSERTs and acks."""

from __future__ import annotations

import contextlib
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import nats
import orjson
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from his.benchmarks.common import (
    STREAM,
    Bench,
    WorkQueued,
    envelopes,
    opened,
    publish_pipelined,
    running,
    work_event,
)
from his.benchmarks.harness import (
    BenchmarkError,
    make_schema,
    settle,
    wait_until,
)
from his.benchmarks.report import ConsumerResult
from his.kernel import streams
from his.kernel.consumer import ConsumerLoop, Subscription
from his.kernel.db import Database, UnitOfWork
from his.kernel.events import Envelope, Event
from his.kernel.json import Json, object_of

EFFECT_TABLE = "CREATE TABLE {name} (event_id uuid PRIMARY KEY, work_id uuid NOT NULL, seq int NOT NULL)"
EFFECT_INSERT = "INSERT INTO {name} (event_id, work_id, seq) VALUES ($1, $2, $3)"


def consumer_config(sub: Subscription, durable: str) -> ConsumerConfig:
    """The same consumer settings ``ConsumerLoop.ensure`` uses."""
    return ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject=sub.event_type,
        max_deliver=sub.max_deliver,
        ack_wait=sub.ack_wait,
        max_ack_pending=max(1000, sub.batch * 4),
    )


async def raw_consume(b: Bench, db: Database, sub: Subscription, table: str, n: int) -> float:
    insert = EFFECT_INSERT.format(name=table)
    start = time.perf_counter()
    await b.js.add_consumer(STREAM, consumer_config(sub, sub.name))
    psub = await b.js.pull_subscribe_bind(sub.name, stream=STREAM)
    done = 0
    while done < n:
        try:
            msgs: list[Msg] = await psub.fetch(sub.batch, timeout=1.0)
        except (nats.errors.TimeoutError, TimeoutError):
            continue
        async with db.pool.acquire() as conn, conn.transaction():
            for m in msgs:
                await conn.execute(insert, *effect_of(orjson.loads(m.data)))
        for m in msgs:
            await m.ack()
        done += len(msgs)
    elapsed = time.perf_counter() - start
    await psub.unsubscribe()
    return elapsed


def effect_of(doc: Json) -> tuple[uuid.UUID, uuid.UUID, int]:
    """The effect row of a ``WorkQueued`` envelope as JetStream delivered it: (event id, work id, seq)."""
    envelope = object_of(doc)
    data = object_of(envelope["data"])
    event_id, work_id, seq = envelope["id"], data["work_id"], data["seq"]
    if not (isinstance(event_id, str) and isinstance(work_id, str) and isinstance(seq, int)):
        raise BenchmarkError(f"raw consumer: not a {WorkQueued.type} envelope: {doc!r:.200}")
    return uuid.UUID(event_id), uuid.UUID(work_id), seq


async def loop_consume(b: Bench, db: Database, sub: Subscription, n: int) -> float:
    loop = ConsumerLoop(db, b.nc, b.js, sub)
    start = time.perf_counter()
    async with running(loop.run()):
        end = await wait_until(
            lambda: loop.stats.applied + loop.stats.failed + loop.stats.terminated >= n, 300, "consumer", every=0.002
        )
    if loop.stats.failed or loop.stats.terminated:
        raise BenchmarkError(f"consumer: {loop.stats.failed} failed, {loop.stats.terminated} terminated")
    return end - start


def effect_handler(table: str) -> Callable[[UnitOfWork, Envelope, Event], Awaitable[None]]:
    insert = EFFECT_INSERT.format(name=table)

    async def apply(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
        assert isinstance(ev, WorkQueued)
        await uow.conn.execute(insert, env.id, ev.work_id, ev.seq)

    return apply


async def measure_consumer(b: Bench) -> ConsumerResult:
    """Raw and loop consumers take turns (raw, loop, loop, raw, ...), each a new durable over all events.

    The ratio is the median of the rounds' ratios, each round a raw run next to a loop run.
    """
    n, rounds = b.cfg.consume_events, b.cfg.consume_rounds
    schema = "bench_consume"
    order = [kind for r in range(rounds) for kind in (("raw", "loop") if r % 2 == 0 else ("loop", "raw"))]
    tables = [f"effect_{kind}_{i}" for i, kind in enumerate(order)]
    await make_schema(b.dsn, schema, *(EFFECT_TABLE.format(name=t) for t in tables))
    b.say(f"consumer: publishing {n} events")
    await publish_pipelined(b.js, envelopes(work_event, n))
    rates: dict[str, list[float]] = {"raw": [], "loop": []}
    async with opened(Database(b.dsn, schema=schema, min_size=2, max_size=16)) as db:
        for i, (kind, table) in enumerate(zip(order, tables, strict=True)):
            sub = Subscription(f"bench_{kind}_{i}", WorkQueued.type, effect_handler(table))
            b.say(f"consumer: {'raw consume + INSERT + ack' if kind == 'raw' else 'ConsumerLoop'} over {n} events")
            settle()
            if kind == "raw":
                rates[kind].append(n / await raw_consume(b, db, sub, table, n))
            else:
                rates[kind].append(n / await loop_consume(b, db, sub, n))
            for stream, name in ((STREAM, sub.name), (streams.REPLAY_STREAM, sub.replay_name)):
                with contextlib.suppress(nats.errors.Error):
                    await b.js.delete_consumer(stream, name)
        for t in tables:
            rows = int(await db.pool.fetchval(f"SELECT count(*) FROM {t}"))
            if rows != n:
                raise BenchmarkError(f"consumer: {t} holds {rows} effect rows, expected {n}")
        inbox = int(await db.pool.fetchval("SELECT count(*) FROM inbox"))
        if inbox != n * rounds:
            raise BenchmarkError(f"consumer: inbox holds {inbox} rows, expected {n * rounds}")
    return {
        "events": n,
        "rounds": rounds,
        "batch": Subscription.batch,
        "loop_per_s": statistics.median(rates["loop"]),
        "raw_per_s": statistics.median(rates["raw"]),
        "rounds_per_s": rates,
        "ratio": statistics.median(a / b for a, b in zip(rates["loop"], rates["raw"], strict=True)),
    }
