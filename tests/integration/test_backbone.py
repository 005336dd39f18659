"""Outbox → relay → JetStream → consumer with inbox, on real PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Coroutine
from collections.abc import Set as AbstractSet
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from his.kernel import dlq
from his.kernel.consumer import ConsumerLoop, PermanentError, Subscription
from his.kernel.db import Database, UnitOfWork
from his.kernel.dlq import DlqMover
from his.kernel.events import Envelope, Event
from his.kernel.outbox import OutboxRelay
from tests.support.events import ThingHappened
from tests.support.waiting import wait_for


@contextlib.asynccontextmanager
async def running(*coros: Coroutine[Any, Any, None]) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield tasks
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def effects_table(db: Database) -> None:
    await db.pool.execute("CREATE TABLE effect (event_id uuid NOT NULL, thing_id uuid NOT NULL, seq int NOT NULL)")


async def record_effect(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
    assert isinstance(ev, ThingHappened)
    if ev.poison:
        raise RuntimeError("poison pill")
    await uow.conn.execute("INSERT INTO effect VALUES ($1, $2, $3)", env.id, ev.thing_id, ev.seq)


async def write(db: Database, n: int, *, poison: AbstractSet[int] = frozenset()) -> list[uuid.UUID]:
    ids = []
    for i in range(n):
        async with db.uow() as uow:
            tid = uuid.uuid4()
            env = uow.add(ThingHappened(thing_id=tid, seq=i, poison=i in poison), aggregate_id=tid)
            ids.append(env.id)
    return ids


async def test_committed_events_reach_the_consumer_once_and_rolled_back_ones_never(
    db: Database, nc: NATS, js: JetStreamContext
) -> None:
    await effects_table(db)
    relay = OutboxRelay(db.dsn, js, schema=db.schema, signal=db.signal, poll_seconds=0.2)
    sub = Subscription("tst_effects", ThingHappened.type, record_effect, ack_wait=5)
    consumer = ConsumerLoop(db, nc, js, sub)
    async with running(relay.run(), consumer.run()):
        ids = await write(db, 50)
        with contextlib.suppress(RuntimeError):
            async with db.uow() as uow:
                uow.add(ThingHappened(thing_id=uuid.uuid4(), seq=999), aggregate_id=uuid.uuid4())
                raise RuntimeError("roll back")

        async def all_applied() -> bool:
            return int(await db.pool.fetchval("SELECT count(*) FROM effect")) >= 50

        await wait_for(all_applied, what="50 effects")
        # Republish everything (as after a relay crash): JetStream drops the copies...
        await db.pool.execute("UPDATE outbox SET published_at = NULL")
        db.signal.committed()
        await wait_for(lambda: _unpublished_zero(db), what="republish")
        info = await js.stream_info("HIS_TST")
        assert info.state.messages == 50
        # ...and past the dedupe window copies do arrive: the inbox keeps effects single.
        for payload in await db.pool.fetch("SELECT payload FROM outbox ORDER BY id LIMIT 5"):
            await js.publish(ThingHappened.type, bytes(payload[0]))
        await wait_for(lambda: _consumer_saw(consumer, 5), what="duplicates seen")
    rows = await db.pool.fetch("SELECT event_id, seq FROM effect ORDER BY seq")
    assert [r["seq"] for r in rows] == list(range(50))
    assert {r["event_id"] for r in rows} == set(ids)


async def _unpublished_zero(db: Database) -> bool:
    return int(await db.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")) == 0


async def _consumer_saw(consumer: ConsumerLoop, dupes: int) -> bool:
    return consumer.stats.duplicates >= dupes


async def test_poison_goes_to_the_dlq_and_replay_applies_it_once(db: Database, nc: NATS, js: JetStreamContext) -> None:
    await effects_table(db)
    relay = OutboxRelay(db.dsn, js, schema=db.schema, signal=db.signal, poll_seconds=0.2)
    healed = asyncio.Event()

    async def handler(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
        assert isinstance(ev, ThingHappened)
        if ev.poison and not healed.is_set():
            raise RuntimeError("cannot handle this yet")
        if ev.seq == 7:
            raise PermanentError("seq 7 is never valid")
        await uow.conn.execute("INSERT INTO effect VALUES ($1, $2, $3)", env.id, ev.thing_id, ev.seq)

    sub = Subscription("tst_poison", ThingHappened.type, handler, max_deliver=3, backoff=(0.1,), ack_wait=5)
    consumer = ConsumerLoop(db, nc, js, sub)
    mover = DlqMover(js, name="dlq_tst", durables=[sub.name, sub.replay_name])
    async with running(relay.run(), consumer.run(), mover.run()):
        await write(db, 10, poison={3})

        async def two_dead() -> bool:
            return len(await dlq.list_dead_letters(js)) == 2

        await wait_for(two_dead, what="two dead letters")
        assert await db.pool.fetchval("SELECT count(*) FROM effect") == 8
        dead = {d.kind: d for d in await dlq.list_dead_letters(js)}
        assert "poison" not in dead["max_deliveries"].error or "cannot handle" in dead["max_deliveries"].error
        assert "cannot handle this yet" in dead["max_deliveries"].error
        assert dead["max_deliveries"].deliveries == 3
        assert "seq 7 is never valid" in dead["terminated"].error
        healed.set()
        # Two operators replay the same entry at once: both succeed, the event is applied once...
        replayed = await asyncio.gather(*(dlq.replay(js, dead["max_deliveries"].id) for _ in range(2)))
        assert all(d is not None and d.id == dead["max_deliveries"].id for d in replayed)
        assert await dlq.replay(js, dead["max_deliveries"].id) is None  # ...and later it is gone
        assert await dlq.discard(js, dead["max_deliveries"].id) is False  # "not found", not an error

        async def nine() -> bool:
            return int(await db.pool.fetchval("SELECT count(*) FROM effect")) == 9

        await wait_for(nine, what="replayed effect")
        remaining = await dlq.list_dead_letters(js)
        assert [d.kind for d in remaining] == ["terminated"]
    seqs = [r[0] for r in await db.pool.fetch("SELECT seq FROM effect ORDER BY seq")]
    assert seqs == [0, 1, 2, 3, 4, 5, 6, 8, 9]


async def test_trace_context_travels_from_producer_through_consumer_to_its_events(
    db: Database, nc: NATS, js: JetStreamContext
) -> None:
    """Unit of work → outbox row → relay publish (NATS header) → consumer → its own event: one
    trace, each hop a child of the one before, as recorded spans show."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from his.kernel import tracing

    seen: list[str] = []

    async def handler(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
        seen.append(env.traceparent)
        assert isinstance(ev, ThingHappened)
        if ev.seq == 0:  # the consumer's own event continues the same trace
            uow.add(ThingHappened(thing_id=ev.thing_id, seq=1), aggregate_id=ev.thing_id, aggregate_version=2)

    spans = InMemorySpanExporter()
    tracing.setup("test", None, exporter=spans)
    relay = OutboxRelay(db.dsn, js, schema=db.schema, signal=db.signal, poll_seconds=0.2)
    consumer = ConsumerLoop(db, nc, js, Subscription("tst_trace", ThingHappened.type, handler))
    try:
        async with running(relay.run(), consumer.run()):
            with tracing.span("request", tracing.SpanKind.SERVER):
                trace_id = tracing.current_trace_id()
                async with db.uow() as uow:
                    tid = uuid.uuid4()
                    uow.add(ThingHappened(thing_id=tid, seq=0), aggregate_id=tid)

            async def both() -> bool:
                return len(seen) == 2

            await wait_for(both, what="the event and the consumer's follow-up")
    finally:
        tracing.setup("test", None)
    assert [tracing.parse(t) for t in seen] == [trace_id, trace_id]
    assert seen[0] != seen[1]  # new span, same trace
    msg = await js.get_msg("HIS_TST", 1)
    assert msg.headers is not None and msg.data is not None
    assert msg.headers["Nats-Msg-Id"] == str(Envelope.from_json(msg.data).id)
    recorded = [s for s in spans.get_finished_spans() if s.context.trace_id == int(str(trace_id), 16)]
    by_id = {s.context.span_id: s for s in recorded}
    publish = next(s for s in recorded if s.kind is tracing.SpanKind.PRODUCER)
    assert msg.headers["traceparent"].startswith(f"00-{trace_id}-{publish.context.span_id:016x}-")
    process = next(s for s in recorded if s.kind is tracing.SpanKind.CONSUMER)
    assert process.parent is not None and by_id[process.parent.span_id] is publish
    assert publish.parent is not None and by_id[publish.parent.span_id].name == f"{db.schema} transaction"
    assert seen[1].startswith(f"00-{trace_id}-{process.context.span_id:016x}-")  # the follow-up's parent


async def test_published_rows_are_pruned_after_retention(db: Database, js: JetStreamContext) -> None:
    relay = OutboxRelay(
        db.dsn,
        js,
        schema=db.schema,
        signal=db.signal,
        poll_seconds=0.1,
        retention_seconds=0.0,
    )
    await write(db, 5)
    async with running(relay.run()):

        async def pruned() -> bool:
            return int(await db.pool.fetchval("SELECT count(*) FROM outbox")) == 0

        await wait_for(pruned, what="published rows to be pruned")
    info = await js.stream_info("HIS_TST")
    assert info.state.messages == 5  # pruned only after they were published


async def test_one_relay_leads_and_a_standby_takes_over(db: Database, js: JetStreamContext) -> None:
    first = OutboxRelay(
        db.dsn,
        js,
        schema=db.schema,
        signal=db.signal,
        poll_seconds=0.1,
        standby_retry=0.1,
    )
    from his.kernel.db import OutboxSignal, outbox_channel

    second = OutboxRelay(
        db.dsn,
        js,
        schema=db.schema,
        signal=OutboxSignal(outbox_channel(db.schema)),
        poll_seconds=0.1,
        standby_retry=0.1,
    )
    leader_task = asyncio.create_task(first.run())

    async def first_leads() -> bool:
        return first.stats.leader

    await wait_for(first_leads, what="the first relay to lead")
    async with running(second.run()):
        await write(db, 20)
        await wait_for(lambda: _unpublished_zero(db), what="the leader to drain")
        assert first.stats.published == 20 and second.stats.published == 0 and not second.stats.leader
        leader_task.cancel()  # the leader goes away: its connection and advisory lock with it
        await asyncio.gather(leader_task, return_exceptions=True)

        async def second_leads() -> bool:
            return second.stats.leader

        await wait_for(second_leads, what="the standby to take over")
        await write(db, 20)
        await wait_for(lambda: _unpublished_zero(db), what="the new leader to drain")
    assert second.stats.published == 20
    info = await js.stream_info("HIS_TST")
    assert info.state.messages == 40


async def test_each_aggregates_events_reach_the_stream_in_version_order_without_gaps(
    db: Database, js: JetStreamContext
) -> None:
    """Eight writers change five aggregates at once; some hold their transaction open, some roll
    back. Writes to one aggregate serialise on its row, so in the stream each aggregate's events
    carry versions 1, 2, 3, … in order, whatever the interleaving with the others."""
    await db.pool.execute("CREATE TABLE aggregate (id uuid PRIMARY KEY, version int NOT NULL DEFAULT 0)")
    things = [uuid.uuid4() for _ in range(5)]
    await db.pool.executemany("INSERT INTO aggregate (id) VALUES ($1)", [(t,) for t in things])
    rng = random.Random(7)

    async def writer(n: int) -> None:
        for _ in range(n):
            thing, hold, rollback = rng.choice(things), rng.random() < 0.3, rng.random() < 0.1
            with contextlib.suppress(RuntimeError):
                async with db.uow() as uow:
                    version = await uow.conn.fetchval(
                        "UPDATE aggregate SET version = version + 1 WHERE id = $1 RETURNING version", thing
                    )
                    uow.add(ThingHappened(thing_id=thing, seq=version), aggregate_id=thing, aggregate_version=version)
                    if hold:  # others commit meanwhile: their outbox rows and this one's interleave
                        await asyncio.sleep(rng.uniform(0.001, 0.02))
                    if rollback:
                        raise RuntimeError("roll back")

    relay = OutboxRelay(db.dsn, js, schema=db.schema, signal=db.signal, poll_seconds=0.2)
    async with running(relay.run()):
        await asyncio.gather(*(writer(40) for _ in range(8)))
        await wait_for(lambda: _unpublished_zero(db), what="all published")
    final = {r["id"]: r["version"] for r in await db.pool.fetch("SELECT id, version FROM aggregate")}
    count = (await js.stream_info("HIS_TST")).state.messages
    assert count == sum(final.values())
    seen: dict[uuid.UUID, list[int]] = {t: [] for t in things}
    for seq in range(1, count + 1):
        env = Envelope.from_json((await js.get_msg("HIS_TST", seq)).data or b"")
        seen[uuid.UUID(str(env.aggregate_id))].append(env.aggregate_version)
    assert all(versions == list(range(1, final[t] + 1)) for t, versions in seen.items()), seen
