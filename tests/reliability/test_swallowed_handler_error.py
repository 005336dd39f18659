"""A handler that catches a database error without a savepoint must not cost its batch its events.

Such a handler leaves the batch's transaction aborted; PostgreSQL then answers the COMMIT with
ROLLBACK, not an error. If the consumer took that for a commit it would acknowledge every event
of the batch although none of their effects (nor their inbox rows) remain: the good events
before it would be lost without a trace. Promise: the good event is applied exactly once, and
acknowledged only once it is.
"""

from __future__ import annotations

import contextlib
import uuid

import asyncpg
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from his.kernel.consumer import Subscription
from his.kernel.db import Database, UnitOfWork
from his.kernel.events import Envelope, Event
from tests.reliability.harness import RecordingConsumer, applied, running
from tests.support.events import ThingHappened
from tests.support.waiting import wait_for


async def careless(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
    """Writes the effect; on a "poison" event it swallows a statement's error instead."""
    assert isinstance(ev, ThingHappened)
    if ev.poison:
        with contextlib.suppress(asyncpg.DivisionByZeroError):
            await uow.conn.execute("SELECT 1 / 0")
        return
    await uow.conn.execute("INSERT INTO effect (event_id, thing_id, seq) VALUES ($1, $2, $3)", env.id, ev.thing_id, 1)


async def test_a_swallowed_database_error_does_not_lose_the_other_events_of_its_batch(
    effects: Database, nc: NATS, js: JetStreamContext
) -> None:
    good = Envelope.wrap(ThingHappened(thing_id=uuid.uuid4(), seq=1), aggregate_id=uuid.uuid4())
    bad = Envelope.wrap(ThingHappened(thing_id=uuid.uuid4(), seq=2, poison=True), aggregate_id=uuid.uuid4())
    for env in (good, bad):  # both in the stream before the consumer starts: one batch
        await js.publish(env.type, env.to_json(), headers={"Nats-Msg-Id": str(env.id)})
    sub = Subscription("tst_swallow", ThingHappened.type, careless, max_deliver=2, backoff=(0.2,), ack_wait=5.0)
    consumer = RecordingConsumer(effects, nc, js, sub)

    async def good_acked() -> bool:
        return any(d.what == "acked" and d.event_id == str(good.id) for d in consumer.log)

    async with running(consumer.run()):
        await wait_for(good_acked, timeout=20, what="the good event acknowledged")
    counts = await applied(effects)
    assert counts[good.id] == 1, f"the good event was acknowledged but applied {counts[good.id]} times"
    inbox = {r[0] for r in await effects.pool.fetch("SELECT event_id FROM inbox")}
    assert bad.id not in inbox, "the failed event must stay unrecorded, to be retried or replayed"
