"""A long NATS outage must not stall the relay for good once NATS is back.

nats-py's ``publish_async`` takes one of its pending slots (``publish_async_max_pending``, 4,000
by default) and registers the PubAck future before it sends. When the send raises (the
reconnect buffer is full: ``OutboundBufferLimitError``; or the message is too large), that
future is never handed back nor resolved, so the slot is never released. The relay retries
every half second; once every slot has leaked, each ``publish_async`` waits for a slot that
never comes, and the relay publishes nothing more although NATS is up again, while it keeps its
leadership so no standby takes over.

In a service the reconnect buffer is 64 MiB and there are 4,000 slots: about 45 minutes of
outage with a backlog. The test shrinks both (a 1-byte buffer, 4 slots) so the same sequence
takes seconds.
"""

from __future__ import annotations

import asyncio
import uuid

import nats
from nats.js.client import JetStreamContext

from his.kernel.db import Database
from his.kernel.outbox import OutboxRelay
from tests.conftest import NatsServer
from tests.reliability.harness import running, unpublished
from tests.support.events import ThingHappened
from tests.support.waiting import wait_for

SLOTS = 4


async def _write(db: Database) -> None:
    async with db.uow() as uow:
        tid = uuid.uuid4()
        uow.add(ThingHappened(thing_id=tid, seq=1), aggregate_id=tid)


async def test_relay_publishes_again_after_an_outage_longer_than_its_pending_slots(
    db: Database, js: JetStreamContext, nats_server: NatsServer
) -> None:
    conn = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, pending_size=1)
    relay_js = conn.jetstream(timeout=5.0, publish_async_max_pending=SLOTS)
    relay = OutboxRelay(db.dsn, relay_js, schema=db.schema, signal=db.signal, poll_seconds=0.1, ack_timeout=2.0)

    async def drained() -> bool:
        return await unpublished(db) == 0

    try:
        async with running(relay.run()):
            await _write(db)
            await wait_for(drained, what="the first event published")

            await asyncio.to_thread(nats_server.stop)
            await wait_for(lambda: _true(not conn.is_connected), what="the client noticed the outage")
            errors = relay.stats.publish_errors
            await _write(db)
            # Each failed attempt (one every half second) costs a slot on the current code.
            await wait_for(
                lambda: _true(relay.stats.publish_errors >= errors + 2 * SLOTS),
                what=f"more failed publish attempts than the {SLOTS} slots",
            )
            await asyncio.to_thread(nats_server.start)
            await wait_for(lambda: _true(conn.is_connected), what="the client reconnected")

            await wait_for(drained, timeout=20, what=f"the backlog drained (last error: {relay.stats.last_error})")
    finally:
        await conn.close()


async def _true(value: bool) -> bool:
    return value
