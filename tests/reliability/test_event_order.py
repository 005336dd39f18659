"""Per-aggregate order, end to end, while the relay and the consumer are killed.

Concurrent writers append events to a few dozen aggregates (a row lock per aggregate gives each
event its ``aggregate_version``, as a service's row version does). The outbox relay runs in its
own process and is SIGKILLed mid-burst, then restarted. The consumer runs in its own process too;
it is SIGKILLed with a fetched batch neither committed nor acknowledged, and a new one takes over
while later events of the same aggregates wait in the stream.

Promise: every committed event is in the stream once and applied once, and within each
aggregate the stream holds, and the consumer applies, the events in version order.

The fault that matters is the consumer's: JetStream redelivers the killed batch only when its
``ack_wait`` runs out, and a new consumer that fetched at once would be handed the later events
first and apply them before the earlier ones of the same aggregate.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from his.kernel.db import Database
from his.reliability.history import History
from tests.conftest import NatsServer
from tests.reliability.harness import STREAM, Procs, RelayProcess, in_stream, running, unpublished
from tests.reliability.procs.order_consumer_proc import APPLIED_DDL, order_consumer
from tests.support.events import TEST_SERVICE, ThingHappened
from tests.support.waiting import wait_for

AGGREGATES = 24
BURST = 500
RELAY_AFTER = 100  # events published after the consumer's kill, before the relay's
STOP_AT_BATCH = 4  # the consumer's batch held in flight when it is killed
DURABLE = "tst_order"
ACK_WAIT = 3.0  # longer than a consumer takes to restart, as the default 30 s is
BATCH = 16


@dataclass
class Appender:
    """Writers appending versioned events to shared aggregates through the unit of work."""

    db: Database
    history: History
    target: int
    aggregates: list[uuid.UUID]
    writers: int = 6
    seed: int = 0
    versions: dict[uuid.UUID, tuple[uuid.UUID, int]] = field(default_factory=dict)

    async def run(self) -> None:
        await asyncio.gather(*(self._writer(i) for i in range(self.writers)))

    async def _writer(self, index: int) -> None:
        rng = random.Random(self.seed * 100 + index)
        while len(self.history.told) < self.target:
            agg = rng.choice(self.aggregates)
            async with self.db.uow() as uow:
                version = int(
                    await uow.conn.fetchval("UPDATE agg SET version = version + 1 WHERE id = $1 RETURNING version", agg)
                )
                env = uow.add(ThingHappened(thing_id=agg, seq=version), aggregate_id=agg, aggregate_version=version)
                if rng.random() < 0.3:
                    await asyncio.sleep(rng.uniform(0.001, 0.01))  # hold the lock: others queue behind it
            self.versions[env.id] = (agg, version)
            self.history.tell(env.id, group=str(agg), version=version)
            await asyncio.sleep(0.02)  # pacing: the burst lasts a few seconds


def overtaking(
    held: list[uuid.UUID], versions: dict[uuid.UUID, tuple[uuid.UUID, int]], others: set[uuid.UUID]
) -> set[uuid.UUID]:
    """The held events with a later version of their aggregate among ``others``."""
    top: dict[uuid.UUID, int] = {}
    for e in others & versions.keys():
        agg, version = versions[e]
        top[agg] = max(version, top.get(agg, 0))
    return {e for e in held if top.get(versions[e][0], 0) > versions[e][1]}


async def stream_in_order(js: JetStreamContext) -> list[uuid.UUID]:
    total = await in_stream(js)
    sub = await js.subscribe(f"his.{TEST_SERVICE}.>", ordered_consumer=True, stream=STREAM)
    out: list[uuid.UUID] = []
    try:
        for _ in range(total):
            msg = await sub.next_msg(timeout=10)
            out.append(uuid.UUID(str(orjson.loads(msg.data)["id"])))
    finally:
        await sub.unsubscribe()
    return out


async def test_per_aggregate_order_holds_through_relay_and_consumer_kills(
    db: Database,
    nc: NATS,
    js: JetStreamContext,
    nats_server: NatsServer,
    procs: Procs,
    rng: random.Random,
    tmp_path: Path,
) -> None:
    await db.pool.execute(APPLIED_DDL)
    await db.pool.execute("CREATE TABLE agg (id uuid PRIMARY KEY, version int NOT NULL DEFAULT 0)")
    aggregates = [uuid.uuid4() for _ in range(AGGREGATES)]
    await db.pool.executemany("INSERT INTO agg (id) VALUES ($1)", [(a,) for a in aggregates])
    history = History()
    work = Appender(db, history, BURST, aggregates, seed=rng.randrange(1 << 30))
    relay = RelayProcess(procs, db.dsn, db.schema, nats_server.url)
    marker = tmp_path / "consumer.marker"
    consumer_args = [
        *("--dsn", db.dsn, "--schema", db.schema, "--nats", nats_server.url),
        *("--durable", DURABLE, "--ack-wait", str(ACK_WAIT), "--batch", str(BATCH)),
    ]
    relay.start()
    first = procs.spawn(
        "consumer",
        "tests.reliability.procs.order_consumer_proc",
        *consumer_args,
        *("--stop-at-batch", str(STOP_AT_BATCH), "--marker", str(marker)),
    )

    async def consumer_bound() -> bool:
        assert first.poll() is None, f"the consumer exited: {first.tail()}"
        return "started" in procs.log_text(first) and DURABLE in [c.name for c in await js.consumers_info(STREAM)]

    await wait_for(consumer_bound, timeout=30, what="the first consumer bound to its durable")
    async with running(work.run()) as (writers,):

        async def consumer_stuck() -> bool:
            assert first.poll() is None, f"the consumer exited: {first.tail()}"
            return marker.exists()

        await wait_for(consumer_stuck, timeout=30, what="the consumer holding a batch in flight")
        held_since = time.monotonic()
        stuck = [uuid.UUID(e) for e in orjson.loads(marker.read_bytes())["events"]]

        async def overtaken() -> bool:
            """Later versions of the held events' aggregates are in the stream, behind them."""
            published = await db.pool.fetch("SELECT event_id FROM outbox WHERE published_at IS NOT NULL")
            return bool(overtaking(stuck, work.versions, {r["event_id"] for r in published}))

        await wait_for(overtaken, timeout=ACK_WAIT / 2, what="later events of the held aggregates in the stream")
        status = procs.sigkill(first)
        killed_after = time.monotonic() - held_since
        later = overtaking(stuck, work.versions, set(work.versions))
        history.note(
            f"consumer pid {first.pid} SIGKILLed (status {status}) {killed_after:.2f}s after fetching a batch of"
            f" {len(stuck)} events it neither applied nor acknowledged; {len(later)} of them have later versions"
            " of their aggregate in the stream"
        )
        assert status == -9 and later, "the kill must leave events whose aggregates have later events"
        assert killed_after < ACK_WAIT / 2, "killed before JetStream could redeliver the batch"
        # The next consumer starts at once (in this process: no interpreter to start), as a
        # supervisor restarting a service would, well within the killed batch's ack_wait.
        second = order_consumer(db, nc, DURABLE, batch=BATCH, ack_wait=ACK_WAIT)
        second_task = asyncio.create_task(second.run())

        kill_relay_at = await in_stream(js) + RELAY_AFTER

        async def relay_mid_burst() -> bool:
            return await in_stream(js) >= kill_relay_at

        await wait_for(relay_mid_burst, timeout=30, what=f"{kill_relay_at} events in the stream")
        status = relay.sigkill()
        at_kill = await in_stream(js)
        history.note(
            f"relay SIGKILLed (status {status}) with {at_kill} events in the stream, {len(history.told)} committed"
        )
        assert status == -9 and not writers.done(), "the relay was killed while events were being committed"
        relay.start()
        await writers
        assert len(history.told) > at_kill, "events were committed after the relay's kill"

        async def drained() -> bool:
            assert not second_task.done(), f"the consumer stopped: {second_task}"
            n = await db.pool.fetchval("SELECT count(DISTINCT event_id) FROM applied")
            return await unpublished(db) == 0 and n >= len(history.told)

        await wait_for(drained, timeout=60, what="every event published and applied")
        second_task.cancel()

    rows = await db.pool.fetch("SELECT event_id, delivered, pid, applied_at FROM applied ORDER BY n")
    redelivered = {r["event_id"] for r in rows if r["delivered"] > 1}
    history.note(f"{len(redelivered & set(stuck))} of the killed batch's events applied on redelivery")
    assert redelivered & set(stuck), "the killed batch must come back as a redelivery"
    history.observe("stream", await stream_in_order(js))
    history.observe("applied", [r["event_id"] for r in rows])
    verdict = history.check(ordered=["stream", "applied"])
    print("\n".join(history.notes), verdict, sep="\n")
    assert verdict.ok, str(verdict)
