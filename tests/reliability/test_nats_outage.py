"""Scenario 5: NATS is stopped for 10 seconds while writers keep writing.

Promise: writes keep succeeding (the unit of work never touches NATS), the relay's backlog grows
while the broker is away and drains once it is back (same port, same store); nothing is lost,
nothing of a rolled-back write appears, each effect happens once.

Seeded in the real relay by the mutation check (`relay-marks-rows-whose-publish-failed`): rows
whose publish failed while NATS was away are marked published anyway, and this test must see them
lost.
"""

from __future__ import annotations

import asyncio
import random
import time

from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from his.kernel.db import Database
from his.kernel.outbox import OutboxRelay
from his.kernel.service import connect_nats
from tests.conftest import NatsServer
from tests.reliability.harness import (
    STREAM,
    Ledger,
    RecordingConsumer,
    Workload,
    applied,
    caught_up,
    check,
    effect_subscription,
    in_stream,
    running,
    unpublished,
)
from tests.support.waiting import wait_for

#: Twice the relay's PubAck deadline (``OutboxRelay.ack_timeout``, 5 s): batch after batch is
#: sent into the outage and times out unacknowledged (the rows the seeded bug marks anyway), and
#: the writers commit well over the 1,000 events asserted below (about 2,000 at their pace). The
#: backlog only grows for as long as the broker is away; longer outages (30 s, then 15 s) repeated
#: the same timeouts for more of the suite's time.
OUTAGE_SECONDS = 10.0
DURABLE = "tst_outage"


async def test_nats_down_for_10s_while_writes_continue(
    effects: Database,
    admin_dsn: str,
    js: JetStreamContext,
    nats_server: NatsServer,
    ledger: Ledger,
    rng: random.Random,
) -> None:
    db = effects
    conn = await connect_nats(nats_server.url, "test-outage")  # the services' connection settings
    conn_js = conn.jetstream(timeout=5.0)
    writers_db = Database(admin_dsn, schema=db.schema, min_size=4, max_size=6)
    await writers_db.open()
    relay = OutboxRelay(writers_db.dsn, conn_js, schema=db.schema, signal=writers_db.signal, poll_seconds=0.2)
    consumer = RecordingConsumer(db, conn, conn_js, effect_subscription(DURABLE, ack_wait=10.0))
    work = Workload(
        writers_db,
        ledger,
        10**9,
        writers=4,
        events_per_tx=(1, 2),
        rollback_probability=0.05,
        pace=0.02,
        seed=rng.randrange(1 << 30),
    )
    try:
        async with running(relay.run(), consumer.run(), work.run()) as (_, _, writers):
            await wait_for(lambda: _applied_at_least(db, 300), what="events flowing before the outage")

            backlog_before = await unpublished(db)
            await asyncio.to_thread(nats_server.stop)
            await wait_for(lambda: _disconnected(conn), what="client noticed the outage")
            down_at = time.monotonic()
            # From here on no PubAck can arrive: whatever commits now must stay unpublished.
            committed_before = len(ledger.committed)
            failures_before, errors_before = ledger.write_failures, relay.stats.publish_errors
            samples = []
            while time.monotonic() - down_at < OUTAGE_SECONDS:
                await asyncio.sleep(1.0)  # the outage's length is the fault itself, not a synchronisation
                samples.append(await unpublished(db))
            committed_during = len(ledger.committed) - committed_before
            failures_during = ledger.write_failures - failures_before
            backlog_after = await unpublished(db)
            await asyncio.to_thread(nats_server.start)
            ledger.note(
                f"NATS down {time.monotonic() - down_at:.1f}s: committed {committed_during}, write failures"
                f" {failures_during}, relay publish errors {relay.stats.publish_errors - errors_before},"
                f" backlog {backlog_before} -> {backlog_after} (samples {samples[::5]})"
            )

            await wait_for(lambda: _connected(conn), what="client reconnected")
            resumed_at = len(ledger.committed)
            await wait_for(lambda: _committed_at_least(ledger, resumed_at + 300), what="writes after the outage")
            work.stop.set()
            await writers
            await wait_for(lambda: _nothing_unpublished(db), timeout=60, what="backlog drained")
            await wait_for(lambda: caught_up(js, STREAM, DURABLE), timeout=60, what="consumer caught up")
    finally:
        await conn.close()
        await writers_db.close()

    verdict = await check(db, ledger)
    assert ledger.rolled_back, "some writes should have rolled back on purpose"
    assert failures_during == 0, "writes must keep succeeding while NATS is down"
    assert committed_during >= 1000, f"only {committed_during} events were written during the outage"
    # Nothing could be published while NATS was down: the backlog grew by every write.
    assert backlog_after >= committed_during and backlog_after > backlog_before
    assert samples == sorted(samples), f"the backlog should only grow during the outage: {samples}"
    assert verdict.ok, verdict
    assert await in_stream(js) == len(ledger.committed)


async def _applied_at_least(db: Database, n: int) -> bool:
    return sum((await applied(db)).values()) >= n


async def _committed_at_least(ledger: Ledger, n: int) -> bool:
    return len(ledger.committed) >= n


async def _disconnected(conn: NATS) -> bool:
    return not conn.is_connected


async def _connected(conn: NATS) -> bool:
    return conn.is_connected


async def _nothing_unpublished(db: Database) -> bool:
    return await unpublished(db) == 0
