"""Scenario 2: the consumer, a separate OS process, is SIGKILLed between its commit and its ack.

Promise: the broker redelivers what was never acknowledged, the inbox recognises it, and the
effect exists once. The broken variant acknowledges before it commits; killed between the two,
its effects are lost, and the check must say so.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from his.kernel.db import Database
from his.kernel.outbox import OutboxRelay
from tests.conftest import NatsServer
from tests.reliability.harness import (
    STREAM,
    Ledger,
    Procs,
    RecordingConsumer,
    Workload,
    applied,
    caught_up,
    check,
    effect_subscription,
    in_stream,
    running,
)
from tests.support.waiting import wait_for

DURABLE = "tst_consumer_kill"
FIRST, SECOND = 20, 10


@pytest.mark.parametrize("variant", ["correct", "ack-before-commit"])
async def test_consumer_sigkilled_between_commit_and_ack(
    variant: str,
    effects: Database,
    nc: NATS,
    js: JetStreamContext,
    nats_server: NatsServer,
    procs: Procs,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    db = effects
    relay = OutboxRelay(db.dsn, js, schema=db.schema, signal=db.signal, poll_seconds=0.1)
    work = Workload(db, ledger, FIRST, writers=1, events_per_tx=(1, 1))
    marker = tmp_path / "consumer.marker"
    async with running(relay.run()):
        await work.run()

        async def first_in_stream() -> bool:
            return await in_stream(js) == FIRST

        await wait_for(first_in_stream, what=f"{FIRST} events in the stream")
        victim = procs.spawn(
            "consumer",
            "tests.reliability.procs.consumer_proc",
            *("--dsn", db.dsn, "--schema", db.schema, "--nats", nats_server.url),
            *("--durable", DURABLE, "--marker", str(marker), "--variant", variant),
        )

        async def stopped_at_the_fault() -> bool:
            assert victim.poll() is None, f"the consumer process exited: {victim.tail()}"
            return marker.exists()

        await wait_for(stopped_at_the_fault, timeout=30, what="the consumer to reach its fault point")
        stuck = orjson.loads(marker.read_bytes())
        batch = set(stuck["events"])
        info = await js.consumer_info(STREAM, DURABLE)
        effects_at_kill = sum(n for eid, n in (await applied(db)).items() if str(eid) in batch)
        status = procs.sigkill(victim)
        ledger.note(
            f"killed consumer pid {victim.pid} (status {status}) at {stuck['step']} with {len(batch)} events;"
            f" effects committed {effects_at_kill}, unacknowledged {info.num_ack_pending}"
        )
        assert status == -9
        assert batch and all(n == 1 for n in stuck["num_delivered"])

        consumer = RecordingConsumer(db, nc, js, effect_subscription(DURABLE))
        async with running(consumer.run()):
            work.target = FIRST + SECOND
            await work.run()

            async def all_acknowledged() -> bool:
                info = await js.consumer_info(STREAM, DURABLE)
                last = (await js.stream_info(STREAM)).state.last_seq
                return await caught_up(js, STREAM, DURABLE) and info.ack_floor.stream_seq == last

            await wait_for(all_acknowledged, timeout=30, what="every message acknowledged")

    verdict = await check(db, ledger)
    redelivered = consumer.redelivered()
    ledger.note(f"after restart: redelivered {len(redelivered)}, inbox duplicates {consumer.stats.duplicates}")
    if variant == "correct":
        # The kill landed after the commit and before the ack.
        assert stuck["step"] == "committed-not-acked"
        assert effects_at_kill == len(batch) and info.num_ack_pending == len(batch)
        # JetStream redelivered them (num_delivered >= 2) and the inbox recognised every one.
        assert set(redelivered) == batch and min(redelivered.values()) >= 2
        assert consumer.stats.duplicates == len(batch)
        assert verdict.ok, verdict
    else:
        # The kill landed after the ack and before the commit.
        assert stuck["step"] == "acked-not-committed"
        assert effects_at_kill == 0 and info.num_ack_pending == 0
        assert not redelivered
        assert {str(e) for e in verdict.lost} == batch, f"the check missed the lost batch: {verdict}"
        assert not verdict.duplicated and not verdict.unexpected
