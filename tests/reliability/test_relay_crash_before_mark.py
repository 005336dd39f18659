"""Scenario 3: the relay dies after its PubAcks arrived and before it marked the rows.

Promise: the restarted relay publishes the rows again and JetStream drops the copies
(``Nats-Msg-Id`` = event id), so the stream does not grow; and copies that arrive after the
dedupe window (simulated by publishing the stored payloads again without a message id) are
dropped by the consumer's inbox, so each effect still happens once.

Broken variants: a relay that publishes without ``Nats-Msg-Id`` (the stream grows: the dedupe
check must see it) and a consumer without the inbox (effects applied twice: the invariant check
must see it).
"""

from __future__ import annotations

import signal

import pytest
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from his.kernel.consumer import ConsumerLoop
from his.kernel.db import Database
from tests.conftest import NatsServer
from tests.reliability.broken import NoInboxConsumer
from tests.reliability.harness import (
    STREAM,
    Ledger,
    Procs,
    Recording,
    RecordingConsumer,
    RelayProcess,
    Workload,
    caught_up,
    check,
    effect_subscription,
    in_stream,
    running,
    unpublished,
)
from tests.support.waiting import wait_for

N = 300
DURABLE = "tst_crash_before_mark"


class RecordingNoInbox(Recording, NoInboxConsumer):
    """The broken consumer, recording."""


@pytest.mark.parametrize(
    ("relay_variant", "consumer_variant"),
    [("correct", "correct"), ("no-msg-id", "correct"), ("correct", "no-inbox")],
)
async def test_relay_crash_after_puback_before_mark(
    relay_variant: str,
    consumer_variant: str,
    effects: Database,
    nc: NATS,
    js: JetStreamContext,
    nats_server: NatsServer,
    procs: Procs,
    ledger: Ledger,
) -> None:
    db = effects
    await Workload(db, ledger, N, writers=4).run()
    n = len(ledger.committed)  # writers may overshoot N by a transaction or two

    # The first relay publishes the whole backlog, gets every PubAck, and dies before marking.
    first = RelayProcess(procs, db.dsn, db.schema, nats_server.url)
    proc = first.start("--crash-before-mark")
    status = await procs.exited(proc)
    first_stored, first_last = await _stream_state(js)
    crash_line = next((x for x in procs.log_text(proc).splitlines() if x.startswith("CRASH-BEFORE-MARK")), "")
    ledger.note(
        f"first relay exited {status} ({crash_line}); stream holds {first_stored}, unmarked {await unpublished(db)}"
    )
    assert status == -signal.SIGKILL and crash_line
    assert first_stored == n and await unpublished(db) == n, "the crash did not land between PubAck and mark"

    cls: type[ConsumerLoop] = RecordingNoInbox if consumer_variant == "no-inbox" else RecordingConsumer
    consumer = cls(db, nc, js, effect_subscription(DURABLE))
    async with running(consumer.run()):
        # The restarted relay publishes all N rows again and marks them.
        second = RelayProcess(procs, db.dsn, db.schema, nats_server.url, variant=relay_variant)
        second.start()
        await wait_for(lambda: _unpublished_zero(db), timeout=30, what="the restarted relay to mark every row")
        assert second.proc is not None
        second.proc.stop()
        republished, duplicate_acks = _republished_count(procs.log_text(second.proc))
        stored, last = await _stream_state(js)
        await wait_for(lambda: caught_up(js, STREAM, DURABLE), timeout=30, what="consumer caught up")
        dupes_inside_window = consumer.stats.duplicates
        ledger.note(
            f"restarted relay got {republished} PubAcks again ({duplicate_acks} flagged duplicate);"
            f" stream {first_stored} -> {stored} messages (last seq {first_last} -> {last});"
            f" consumer duplicates {dupes_inside_window}"
        )

        # Past the dedupe window: the stored payloads arrive again, without a message id.
        for row in await db.pool.fetch("SELECT subject, payload FROM outbox ORDER BY id"):
            await js.publish(row["subject"], bytes(row["payload"]))
        assert await in_stream(js) == stored + n, "copies past the window must reach the stream"
        await wait_for(lambda: caught_up(js, STREAM, DURABLE), timeout=30, what="consumer caught up on copies")

    verdict = await check(db, ledger)
    deduplicated_by_jetstream = stored == n and last == first_last
    assert republished == n, "the restarted relay should have published every unmarked row again"
    if relay_variant == "no-msg-id":
        assert not deduplicated_by_jetstream, "the dedupe check missed a relay without Nats-Msg-Id"
        assert stored == 2 * n and duplicate_acks == 0
        assert verdict.ok, verdict  # the inbox still saves the effects
    elif consumer_variant == "no-inbox":
        assert deduplicated_by_jetstream and duplicate_acks == n
        assert len(verdict.duplicated) == n, f"the check missed effects applied twice: {verdict}"
    else:
        assert deduplicated_by_jetstream, f"JetStream kept republished copies: {stored} messages, last seq {last}"
        assert duplicate_acks == n, "every republished row's PubAck should say duplicate"
        assert dupes_inside_window == 0
        assert consumer.stats.duplicates == n, "every copy past the window should hit the inbox"
        assert verdict.ok, verdict


async def _stream_state(js: JetStreamContext) -> tuple[int, int]:
    state = (await js.stream_info(STREAM)).state
    return int(state.messages), int(state.last_seq)


async def _unpublished_zero(db: Database) -> bool:
    return await unpublished(db) == 0


def _republished_count(log: str) -> tuple[int, int]:
    """(PubAcks received, of which flagged duplicate) as the relay process reported them."""
    for line in log.splitlines():
        if line.startswith("relay stopping: published "):
            words = line.split()
            return int(words[3]), int(words[5])
    raise AssertionError(f"the relay did not report what it published: {log[-500:]}")
