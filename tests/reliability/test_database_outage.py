"""A consumer's database outage must not turn the events in flight into dead letters.

While PostgreSQL refuses the consumer, every batch it fetches fails before any handler runs and
is negatively acknowledged. Each redelivery counts against ``max_deliver``: a consumer that goes
on fetching burns every delivery of every pending event within a few backoff delays, and after
the outage those events sit in the DLQ, to be replayed by hand, instead of being applied.
Promise: after an outage longer than all its backoff delays together, every event is applied
exactly once and none is exhausted.

The outage is real: PostgreSQL refuses the consumer's role (``NOLOGIN``) and its sessions are
terminated; the test's own connections stay up. The test proves it landed where it matters: a
new session of the role is refused, the consumer was handed the outage's events and failed on
them, none was applied during it, and after it they were delivered again and applied.

Second promise: a consumer whose connections PostgreSQL terminates again and again (a restart, a
failover, an administrator) keeps consuming. asyncpg can report a connection terminated while
it was being used as ``InternalClientError`` ("another operation is in progress"), which is
neither a ``PostgresError`` nor an ``InterfaceError``: the consumer must not die of it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from his.infra import postgres as pg_infra
from his.kernel.db import Database
from his.kernel.events import Envelope
from his.reliability.history import History, Verdict
from tests.reliability.harness import RecordingConsumer, applied, effect_subscription, running
from tests.support.events import ThingHappened
from tests.support.waiting import wait_for

ROLE = "tst_outage_consumer"
DURABLE = "tst_db_outage"
BACKOFF = (0.2, 0.5)
MAX_DELIVER = 4
OUTAGE_SECONDS = 4.0  # longer than every backoff delay of MAX_DELIVER deliveries together
CUTS = 300


async def publish(js: JetStreamContext, n: int) -> list[uuid.UUID]:
    ids = []
    for i in range(n):
        env = Envelope.wrap(ThingHappened(thing_id=uuid.uuid4(), seq=i), aggregate_id=uuid.uuid4())
        await js.publish(env.type, env.to_json(), headers={"Nats-Msg-Id": str(env.id)})
        ids.append(env.id)
    return ids


@dataclass
class ConsumerRole:
    """A role of its own for the consumer's database, so the test can refuse or cut it alone."""

    admin: asyncpg.Connection
    db: Database

    async def refuse(self) -> None:
        await self.admin.execute(f"ALTER ROLE {ROLE} NOLOGIN")
        await self.cut()

    async def refused(self) -> bool:
        """Whether PostgreSQL now refuses a new session of the role."""
        try:
            conn = await asyncpg.connect(self.db.dsn)
        except asyncpg.InvalidAuthorizationSpecificationError:
            return True
        await conn.close()
        return False

    async def admit(self) -> None:
        await self.admin.execute(f"ALTER ROLE {ROLE} LOGIN")

    async def cut(self) -> int:
        """Terminate the role's sessions; returns how many there were."""
        rows = await self.admin.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", ROLE)
        return len(rows)


@pytest.fixture
async def role(pg: pg_infra.PostgresLocation, admin_dsn: str, effects: Database) -> AsyncIterator[ConsumerRole]:
    admin = await asyncpg.connect(admin_dsn)
    password = uuid.uuid4().hex
    await admin.execute(f"CREATE ROLE {ROLE} LOGIN SUPERUSER PASSWORD '{password}'")
    db = Database(pg.url(user=ROLE, password=password), schema=effects.schema, min_size=1, max_size=2)
    await db.open()
    try:
        yield ConsumerRole(admin, db)
    finally:
        await db.close()
        await admin.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", ROLE)
        await admin.execute(f"DROP ROLE IF EXISTS {ROLE}")
        await admin.close()


async def all_applied(effects: Database, ids: list[uuid.UUID]) -> bool:
    counts = await applied(effects)
    return all(counts[i] >= 1 for i in ids)


async def test_a_database_outage_does_not_exhaust_the_events_in_flight(
    role: ConsumerRole, effects: Database, nc: NATS, js: JetStreamContext
) -> None:
    sub = effect_subscription(DURABLE, max_deliver=MAX_DELIVER, backoff=BACKOFF, ack_wait=5.0)
    consumer = RecordingConsumer(role.db, nc, js, sub)
    async with running(consumer.run()):
        before = await publish(js, 5)
        await wait_for(lambda: all_applied(effects, before), what="events applied before the outage")

        await role.refuse()
        assert await role.refused(), "PostgreSQL still lets the consumer's role in"
        during = await publish(js, 20)
        await asyncio.sleep(OUTAGE_SECONDS)  # the outage's length is the fault itself, not a synchronisation
        failed = consumer.stats.failed
        assert await role.refused(), "the outage ended before its time"
        handed = {uuid.UUID(d.event_id) for d in consumer.log if d.what == "delivered"} & set(during)
        applied_during = set(await applied(effects)) & set(during)
        await role.admit()

        await wait_for(
            lambda: all_applied(effects, during),
            timeout=20,
            what=f"the events of the outage applied (failed attempts {failed},"
            f" highest delivery count {max(consumer.redelivered().values(), default=1)} of {MAX_DELIVER})",
        )
    redelivered = {uuid.UUID(e): n for e, n in consumer.redelivered().items()}
    print(f"[outage] failed attempts {failed}, {len(handed)} events handed over during it, redelivered {redelivered}")
    # The fault landed: the consumer got the outage's events and failed on them, applying none.
    assert failed > 0 and handed, "the consumer never tried to apply an event during the outage"
    assert not applied_during, "events were applied while the database refused the consumer"
    # And recovery happened: those events came again and were applied, each once.
    assert set(redelivered) & handed, "no event of the outage was delivered again after it"
    verdict = applied_once(before + during, await applied(effects))
    assert verdict.ok, verdict


async def test_a_consumer_whose_connections_are_terminated_again_and_again_keeps_consuming(
    role: ConsumerRole, effects: Database, nc: NATS, js: JetStreamContext
) -> None:
    sub = effect_subscription("tst_db_cuts", max_deliver=50, backoff=(0.05,), ack_wait=5.0, batch=8)
    consumer = RecordingConsumer(role.db, nc, js, sub)
    ids: list[uuid.UUID] = []
    cuts = 0
    async with running(consumer.run()) as (task,):
        for _ in range(CUTS):
            ids += await publish(js, 3)
            cuts += await role.cut()
            assert not task.done(), f"the consumer died after {cuts} terminated sessions: {task.exception()!r}"
        await wait_for(
            lambda: all_applied(effects, ids),
            timeout=30,
            what=f"every event applied (consumer alive: {not task.done()})",
        )
        assert not task.done(), f"the consumer died: {task.exception()!r}"
    print(f"[cuts] {cuts} sessions terminated, {consumer.stats.failed} failed attempts")
    assert cuts > 0, "no session of the consumer was ever terminated"
    verdict = applied_once(ids, await applied(effects))
    assert verdict.ok, verdict


def applied_once(published: list[uuid.UUID], counts: Counter[uuid.UUID]) -> Verdict:
    """Every published event applied exactly once, and nothing else (the shared checker)."""
    history = History()
    for event_id in published:
        history.tell(event_id)
    history.observe("applied", counts.elements())
    return history.check()
