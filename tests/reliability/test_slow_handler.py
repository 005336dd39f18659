"""A handler three times slower than ``ack_wait``, with a second replica of its consumer waiting.

Promise: a slow but healthy handler is not redelivered mid-flight. The consumer reports its
batch in progress while the handler runs, so JetStream neither hands the event to the other
replica nor counts a second delivery towards ``max_deliver`` (which would dead-letter it); the
event is delivered once and applied once, and the other replica applies the events written
meanwhile.

The fault is the handler's own sleep (3 x ``ack_wait``); with ``max_deliver = 2`` a single
unneeded redelivery is already visible in JetStream's metadata (``num_delivered``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

from his.kernel.consumer import Subscription
from his.kernel.db import Database, UnitOfWork
from his.kernel.events import Envelope, Event
from his.kernel.outbox import OutboxRelay
from his.reliability.history import History
from tests.reliability.harness import (
    STREAM,
    Ledger,
    RecordingConsumer,
    Workload,
    caught_up,
    effect_handler,
    running,
)
from tests.support.events import ThingHappened
from tests.support.waiting import wait_for

DURABLE = "tst_slow"
ACK_WAIT = 1.0
SLOW_SEQ = 7
SLOW_SECONDS = 3 * ACK_WAIT
FAST = 20


class SlowOnce:
    """The effect handler, three times slower than ``ack_wait`` on the event with ``SLOW_SEQ``."""

    def __init__(self) -> None:
        self.effect = effect_handler()
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self.took = 0.0

    async def __call__(self, uow: UnitOfWork, env: Envelope, ev: Event) -> None:
        assert isinstance(ev, ThingHappened)
        if ev.seq == SLOW_SEQ:
            self.started.set()
            begun = time.monotonic()
            await asyncio.sleep(SLOW_SECONDS)  # the fault: a healthy handler that is slow
            self.took = time.monotonic() - begun
        await self.effect(uow, env, ev)
        if ev.seq == SLOW_SEQ:
            self.finished.set()


async def test_handler_slower_than_ack_wait_is_delivered_and_applied_once(
    effects: Database, nc: NATS, js: JetStreamContext, ledger: Ledger
) -> None:
    db = effects
    slow = SlowOnce()
    sub = Subscription(DURABLE, ThingHappened.type, slow, max_deliver=2, backoff=(0.2,), ack_wait=ACK_WAIT)
    replicas = [RecordingConsumer(db, nc, js, sub) for _ in range(2)]
    await replicas[0].ensure(sub.stream, sub.name, sub.subjects)
    exhausted: list[Msg] = []

    async def on_exhausted(m: Msg) -> None:
        exhausted.append(m)

    advisories = await nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{STREAM}.{DURABLE}", cb=on_exhausted)
    relay = OutboxRelay(db.dsn, js, schema=db.schema, signal=db.signal, poll_seconds=0.1)
    work = Workload(db, ledger, 0)
    async with running(relay.run(), *(r.run() for r in replicas)):
        await work.transaction(SLOW_SEQ, 1)
        await wait_for(_is_set(slow.started), what="the slow handler to start")
        for n in range(FAST):
            await work.transaction(1000 + 10 * n, 1)

        async def fast_applied() -> bool:
            return int(await db.pool.fetchval("SELECT count(*) FROM effect WHERE seq <> $1", SLOW_SEQ)) == FAST

        await wait_for(fast_applied, timeout=10, what="the other replica to apply the events written meanwhile")
        flowed_meanwhile = not slow.finished.is_set()
        await wait_for(_is_set(slow.finished), timeout=10, what="the slow handler to finish")

        async def settled() -> bool:
            return await caught_up(js, STREAM, DURABLE)

        await wait_for(settled, timeout=10, what="nothing pending or unacknowledged")
        info = await js.consumer_info(STREAM, DURABLE)
        last = (await js.stream_info(STREAM)).state.last_seq
    await advisories.unsubscribe()

    history = History()
    for eid in ledger.commit_order:
        history.tell(eid)
    history.observe("applied", [r["event_id"] for r in await db.pool.fetch("SELECT event_id FROM effect")])
    deliveries = [d for r in replicas for d in r.log if d.what == "delivered"]
    delivered = Counter(uuid.UUID(d.event_id) for d in deliveries)
    reports = sum(r.stats.in_progress for r in replicas)
    history.note(
        f"slow handler took {slow.took:.2f}s (ack_wait {ACK_WAIT}s); in-progress reports {reports};"
        f" deliveries {len(deliveries)} of {len(ledger.committed)} events; redelivered {info.num_redelivered};"
        f" max-deliveries advisories {len(exhausted)}; per replica applied {[r.stats.applied for r in replicas]}"
    )
    print(history.notes[-1])
    verdict = history.check()

    # The fault landed: the handler ran well past ack_wait.
    assert slow.took >= SLOW_SECONDS > 2 * ACK_WAIT
    # Delivered once, applied once, never on its way to the DLQ.
    again = [(d.event_id, d.num_delivered) for d in deliveries if d.num_delivered > 1]
    assert not again, f"redelivered mid-flight (event, num_delivered): {again}"
    assert set(delivered.values()) == {1} and set(delivered) == ledger.committed
    assert info.num_redelivered == 0 and not exhausted
    assert info.ack_floor.stream_seq == last, "every message acknowledged"
    assert all(r.stats.terminated == r.stats.failed == r.stats.duplicates == 0 for r in replicas)
    assert verdict.ok, verdict
    # The other replica kept applying while the slow handler was still running.
    assert flowed_meanwhile
    # What kept it from being redelivered: the batch was reported in progress meanwhile.
    assert reports >= 1


def _is_set(event: asyncio.Event) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return event.is_set()

    return check
