"""Scenario 1: the relay, a separate OS process, is SIGKILLed again and again while 6,000
events from eight concurrent writers drain. Some writer transactions stay open (so commit order
differs from id order) and some roll back.

Promise: every committed event reaches the stream once and is applied once; no event of a
rolled-back transaction is ever seen.

The test proves that its faults hit the windows that matter:

- rows committed after a row with a higher id was already published (held transactions): the
  run must contain some, and each must reach the stream. A relay that remembers a cursor
  (``WHERE id > last_id``) skips exactly these;
- at each kill, measured right after the SIGKILL and before the next relay starts, the rows
  marked published never exceed the messages in the stream, and committed rows the victim never
  published were waiting. A relay that marks rows before their PubAck breaks the first.

Both bugs, seeded into the real relay, make this test fail (``tests/mutation/mutants/relay.toml``).
"""

from __future__ import annotations

import random
import signal
import uuid
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from his.kernel.db import Database
from his.reliability.history import History
from tests.conftest import NatsServer
from tests.reliability.harness import (
    STREAM,
    Ledger,
    Procs,
    RecordingConsumer,
    RelayProcess,
    Workload,
    acked_all,
    commit_order_inversions,
    effect_subscription,
    in_stream,
    marked,
    running,
    stream_keys,
    unpublished,
)
from tests.support.waiting import wait_for

TOTAL = 6_000
KILLS = 3
BACKLOG = 1000  # committed, unpublished rows behind the relay when it dies: the next one's first batch


@dataclass
class Kill:
    at_stream_count: int
    exit_status: int
    pubacks_reported_by_victim: int
    pending_before: int
    still_pending_after: int
    marked: int
    in_stream: int

    @property
    def in_flight(self) -> int:
        """Messages the stream held that the victim had not marked (PubAcks it never recorded)."""
        return self.in_stream - self.marked

    @property
    def landed_mid_drain(self) -> bool:
        """The victim had been publishing, and committed rows it had not published outlived it."""
        return (
            self.exit_status == -signal.SIGKILL and self.pubacks_reported_by_victim > 0 and self.still_pending_after > 0
        )


def next_kill_point(rng: random.Random, kills: list[Kill], stored: int) -> int:
    """The stream count at which to kill the next relay.

    The first dies at a random moment of the drain. Each later one dies inside the backlog it
    found when it started (``stored`` messages in the stream then): part of its first batch is
    in the stream, the rest fetched and not yet acknowledged. That is the window in which a relay
    that marks rows before their PubAck loses them, and in which a correct one holds acknowledged
    rows it has not yet marked.
    """
    if not kills:
        return rng.randrange(TOTAL // 10, TOTAL // 3)
    return stored + rng.randrange(1, BACKLOG)


def pubacks_reported(log: str) -> int:
    counts = [int(line.split()[1]) for line in log.splitlines() if line.startswith("PUBACKS ")]
    return max(counts, default=0)


async def kill_at(db: Database, js: JetStreamContext, relay: RelayProcess, procs: Procs, threshold: int) -> Kill:
    """Kill the relay at a random moment of its drain, leaving committed rows it never published.

    Once the stream holds ``threshold`` events and the relay has reported PubAcks, it is frozen
    with SIGSTOP: that instant, wherever it falls (a batch sent and not acknowledged, acknowledged
    and not marked, ...), is the moment of death, because a stopped process runs no further
    instruction. The writers go on committing until a backlog of ``BACKLOG`` rows stands behind
    it; then the frozen relay is SIGKILLed. A relay that keeps pace with the writers would
    otherwise be killed with nothing pending, and the next one would prove nothing.
    """

    async def reached() -> bool:
        if not relay.alive():
            raise AssertionError(f"relay died on its own: {relay.proc.tail() if relay.proc else ''}")
        assert relay.proc is not None
        return await in_stream(js) >= threshold and pubacks_reported(procs.log_text(relay.proc)) > 0

    async def backlog() -> bool:
        return await unpublished(db) >= BACKLOG

    await wait_for(reached, timeout=90, every=0.005, what=f"{threshold} events in the stream")
    assert relay.proc is not None
    relay.proc.signal(signal.SIGSTOP)
    await wait_for(backlog, timeout=60, what=f"{BACKLOG} committed rows behind the frozen relay")
    pending = [r[0] for r in await db.pool.fetch("SELECT id FROM outbox WHERE published_at IS NULL")]
    status = relay.sigkill()
    still = await db.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE published_at IS NULL AND id = ANY($1::bigint[])", pending
    )
    # Marked first: a mark still on its way to the database when the relay died can only be of a
    # row that was in the stream before, so ``marked <= in_stream`` holds for a correct relay.
    marked_rows = await marked(db)
    stored = await in_stream(js)
    victim_log = procs.log_text(relay.proc)
    return Kill(threshold, status, pubacks_reported(victim_log), len(pending), still, marked_rows, stored)


async def test_relay_sigkilled_mid_drain(
    effects: Database,
    admin_dsn: str,
    nc: NATS,
    js: JetStreamContext,
    nats_server: NatsServer,
    procs: Procs,
    ledger: Ledger,
    rng: random.Random,
) -> None:
    db = effects
    writers_db = Database(admin_dsn, schema=db.schema, min_size=8, max_size=10)
    await writers_db.open()
    work = Workload(
        writers_db,
        ledger,
        TOTAL,
        writers=8,
        hold_probability=0.05,
        hold_until_published=True,
        hold_limit=5.0,
        rollback_probability=0.05,
        seed=rng.randrange(1 << 30),
    )
    consumer = RecordingConsumer(db, nc, js, effect_subscription("tst_relay_kill", ack_wait=10.0))
    relay = RelayProcess(procs, db.dsn, db.schema, nats_server.url)
    kills: list[Kill] = []
    try:
        relay.start()
        async with running(consumer.run(), work.run()) as (_, writers):
            stored = 0
            for _ in range(KILLS):
                kills.append(await kill_at(db, js, relay, procs, next_kill_point(rng, kills, stored)))
                stored = await in_stream(js)
                ledger.note(f"kill {len(kills)}: {kills[-1]}, {kills[-1].in_flight} in flight")
                relay.start()
            await writers
            await _drained(db, work)
            assert relay.proc is not None
            relay.proc.stop()  # gracefully: after this nothing more reaches the stream
            await wait_for(lambda: acked_all(js, STREAM, consumer.sub.name), timeout=60, what="consumer caught up")
    finally:
        await writers_db.close()

    history = History()
    for eid in ledger.commit_order:
        history.tell(eid)
    for eid in ledger.rolled_back:
        history.refuse(eid)
    history.observe("outbox", (r[0] for r in await db.pool.fetch("SELECT event_id FROM outbox ORDER BY id")))
    stream = await stream_keys(js)
    history.observe("stream", (uuid.UUID(k) for k in stream))
    history.observe("applied", (r[0] for r in await db.pool.fetch("SELECT event_id FROM effect ORDER BY applied_at")))
    verdict = history.check()
    ledger.note(f"{verdict}; held transactions {work.held}, rollbacks {work.rollbacks}")

    # The faults really happened, where they matter.
    assert work.held > 0 and work.rollbacks > 0 and ledger.rolled_back
    inversions = await commit_order_inversions(db, ledger)
    ledger.note(
        f"{inversions} events committed after an event with a higher outbox id; {len(work.late)} of them"
        " after a higher id was already published"
    )
    assert work.late, "no row committed after a row with a higher id was published: a cursor relay would pass"
    over = [k for k in kills if k.marked > k.in_stream]
    assert not over, f"rows marked published that the stream does not hold (marked before their PubAck?): {over}"
    assert all(k.landed_mid_drain for k in kills), kills
    assert any(k.in_flight > 0 for k in kills), f"no kill landed between a PubAck and its mark: {kills}"

    missing = work.late - set(map(uuid.UUID, stream))
    assert not missing, f"{len(missing)} rows committed behind a published higher id never reached the stream"
    assert verdict.ok, verdict
    assert consumer.stats.applied == len(ledger.committed)


async def _drained(db: Database, work: Workload) -> None:
    """Wait until every committed row is published; on a timeout, say which rows were left."""

    async def nothing_unpublished() -> bool:
        return await unpublished(db) == 0

    try:
        await wait_for(nothing_unpublished, timeout=30, what="outbox drained")
    except AssertionError:
        rows = await db.pool.fetch("SELECT event_id FROM outbox WHERE published_at IS NULL ORDER BY id")
        left = {r[0] for r in rows}
        raise AssertionError(
            f"{len(left)} committed rows never published, {len(left & work.late)} of them committed after a"
            f" higher id was published: {sorted(map(str, left))[:5]}"
        ) from None
