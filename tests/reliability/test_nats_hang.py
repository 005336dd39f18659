"""NATS hangs, then resets, under a write burst, seen through a proxy rather than a clean refusal.

The relay and a consumer share one connection, as in a service (``connect_nats``), to a TCP
proxy in front of nats-server (``tests.support.tcp_proxy``). Writers commit events through the
real unit of work the whole time. Two faults in turn:

1. **Hang**: the proxy black-holes every connection (open, bytes read and dropped, nothing
   forwarded) until the client has given the connection up and the relay has timed out on its
   PubAcks; then new connections go through again, the old one stays dead.
2. **Reset**: every connection through the proxy is closed with a TCP RST.

Promise: after each, the relay publishes again within seconds (measured), and in the end nothing
committed is lost, nothing rolled back appears, nothing is applied twice, and the stream holds
each event once. A client that never pings its server sits on a black-holed connection for
minutes: the seeded bug (no client pings) fails the hang phase.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from his.kernel.db import Database
from his.kernel.outbox import OutboxRelay
from his.kernel.service import connect_nats
from his.reliability.history import History
from tests.conftest import NatsServer
from tests.reliability.harness import (
    STREAM,
    Ledger,
    RecordingConsumer,
    Workload,
    applied,
    caught_up,
    effect_subscription,
    in_stream,
    running,
    unpublished,
)
from tests.support.tcp_proxy import FaultyProxy
from tests.support.waiting import wait_for

DURABLE = "tst_hang"
#: The client's ping interval here (the services use ``PING_SECONDS``; shorter keeps CI short).
PING = 1.0
ACK_TIMEOUT = 2.0  # the relay's PubAck deadline
RESUME_WITHIN = 12.0  # seconds from the end of a fault to the relay's next publish


async def test_nats_hang_then_reset_under_a_write_burst(
    effects: Database, js: JetStreamContext, nats_server: NatsServer, ledger: Ledger, rng: random.Random
) -> None:
    db = effects
    assert nats_server.loc is not None
    async with FaultyProxy(nats_server.loc.host, nats_server.loc.port) as proxy:
        conn = await connect_nats(proxy.url, "test-hang", ping_interval=PING)
        conn_js = conn.jetstream(timeout=5.0)
        relay = OutboxRelay(
            db.dsn, conn_js, schema=db.schema, signal=db.signal, poll_seconds=0.2, ack_timeout=ACK_TIMEOUT
        )
        consumer = RecordingConsumer(db, conn, conn_js, effect_subscription(DURABLE))
        work = Workload(
            db,
            ledger,
            10**9,
            writers=2,
            events_per_tx=(1, 2),
            rollback_probability=0.05,
            pace=0.02,
            seed=rng.randrange(1 << 30),
        )
        try:
            async with running(relay.run(), consumer.run(), work.run()) as (_, _, writers):
                await wait_for(_applied_at_least(db, 50), what="events flowing before the faults")

                # 1. The hang.
                reconnects, errors = conn.stats["reconnects"], relay.stats.publish_errors
                proxy.freeze()
                frozen_at, forwarded = time.monotonic(), proxy.stats.forwarded

                async def gave_up() -> bool:
                    return proxy.stats.accepted_frozen >= 1 and relay.stats.publish_errors > errors

                await wait_for(gave_up, timeout=20, what="the client to give up the hung connection")
                hung, forwarded_while_frozen = time.monotonic() - frozen_at, proxy.stats.forwarded - forwarded
                proxy.heal()
                reconnected_after_hang, resumed_after_hang = await _relay_resumed(js, conn, reconnects)
                ledger.note(
                    f"hang: {proxy.stats.open_at['freeze']} connection(s) open when frozen; forwarded"
                    f" {forwarded_while_frozen} bytes, dropped {proxy.stats.dropped} during {hung:.1f}s;"
                    f" relay PubAck failures"
                    f" {relay.stats.publish_errors - errors}; connection attempts into the hang"
                    f" {proxy.stats.accepted_frozen}; after the heal: reconnected in {reconnected_after_hang:.2f}s,"
                    f" relay published again in {resumed_after_hang:.2f}s"
                )
                hang_proof = (proxy.stats.open_at["freeze"], proxy.stats.dropped, forwarded_while_frozen)
                # 2. The reset.
                reconnects = conn.stats["reconnects"]
                proxy.reset()
                reconnected_after_reset, resumed_after_reset = await _relay_resumed(js, conn, reconnects)
                ledger.note(
                    f"reset: {proxy.stats.resets} connection(s) closed with RST ({proxy.stats.open_at['reset']} open);"
                    f" reconnected in {reconnected_after_reset:.2f}s, relay published again in"
                    f" {resumed_after_reset:.2f}s"
                )

                await wait_for(_applied_at_least(db, len(ledger.committed)), what="events flowing at the end")
                work.stop.set()
                await writers
                await wait_for(_nothing_unpublished(db), timeout=30, what="the outbox drained")
                await wait_for(lambda: caught_up(js, STREAM, DURABLE), timeout=30, what="the consumer caught up")
        finally:
            await conn.close()

    history = History()
    for eid in ledger.commit_order:
        history.tell(eid)
    for eid in ledger.rolled_back:
        history.refuse(eid)
    history.observe("applied", [r["event_id"] for r in await db.pool.fetch("SELECT event_id FROM effect")])
    verdict = history.check()
    print("\n".join(ledger.notes), verdict, sep="\n")

    # The faults landed: a live connection was black-holed (bytes kept coming and were dropped,
    # nothing reached the stream), and the client then tried new connections into the hang; the
    # reset cut a live connection and the client reconnected.
    open_when_frozen, dropped, forwarded_while_frozen = hang_proof
    assert open_when_frozen >= 1 and dropped > 0 and forwarded_while_frozen == 0
    assert proxy.stats.accepted_frozen >= 1
    assert proxy.stats.resets >= 1
    # The relay came back within seconds of each fault's end.
    assert resumed_after_hang < RESUME_WITHIN and resumed_after_reset < RESUME_WITHIN
    # Nothing lost, nothing of a rolled-back write, nothing applied twice; each event once in the stream.
    assert ledger.rolled_back, "some writes should have rolled back on purpose"
    assert verdict.ok, verdict
    assert await in_stream(js) == len(ledger.committed)


async def _relay_resumed(js: JetStreamContext, conn: NATS, reconnects: int) -> tuple[float, float]:
    """Seconds until the client reconnected (more than ``reconnects``), and until the stream then
    grew (the relay published on the new connection: nothing in flight on the old one counts)."""
    start = time.monotonic()

    async def reconnected() -> bool:
        return int(conn.stats["reconnects"]) > reconnects

    await wait_for(reconnected, timeout=RESUME_WITHIN * 2, what="the client to reconnect")
    back, before = time.monotonic() - start, await in_stream(js)

    async def grew() -> bool:
        return await in_stream(js) > before

    await wait_for(grew, timeout=RESUME_WITHIN * 2, what="the relay to publish again")
    return back, time.monotonic() - start


def _applied_at_least(db: Database, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return sum((await applied(db)).values()) >= n

    return check


def _nothing_unpublished(db: Database) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await unpublished(db) == 0

    return check
