"""Scenario 4: poison events.

Promise: an event that keeps failing is retried up to ``max_deliver`` times and then lands in
the DLQ with its reason and delivery count, while good events keep flowing; after the fix a
replay (through ``his.kernel.dlq.replay`` and through ``his dlq replay``) applies each exactly
once. A dead letter is captured even when the DLQ mover was down at the time: the advisory
waits in the ``HIS_ADVISORIES`` stream until the mover starts.

Broken variants: a consumer that acknowledges a failed message (the poison is neither retried
nor dead-lettered) and a DLQ mover that reads only advisories emitted after it started. Both
lose the poison events, and the check must say so.

A dead letter that the DLQ stream refuses while the mover is up is not lost either: the mover
leaves its advisory unacknowledged and stores it once the DLQ accepts again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from his.kernel import dlq, streams
from his.kernel.db import Database
from his.kernel.dlq import DlqMover
from his.kernel.outbox import OutboxRelay
from his.kernel.streams import ADVISORY_STREAM, DLQ_STREAM, dlq_subject, replay_subject
from his.reliability.history import History
from tests.conftest import NatsServer
from tests.reliability.broken import NewOnlyDlqMover, SwallowFailuresConsumer
from tests.reliability.harness import (
    STREAM,
    Ledger,
    Recording,
    RecordingConsumer,
    acked_all,
    applied,
    check,
    effect_subscription,
    running,
)
from tests.support.events import ThingHappened
from tests.support.waiting import wait_for

DURABLE = "tst_poison"
MAX_DELIVER = 3
REASON = "cannot apply it yet"


class RecordingSwallow(Recording, SwallowFailuresConsumer):
    """The broken consumer, recording."""


class Hospital:
    """Relay, consumer and the fix switch of one poison test."""

    def __init__(
        self,
        db: Database,
        nc: NATS,
        js: JetStreamContext,
        ledger: Ledger,
        consumer_variant: str,
        backoff: tuple[float, ...] = (1.0, 2.0),
    ) -> None:
        self.db, self.js, self.ledger = db, js, ledger
        self.healed = False
        sub = effect_subscription(
            DURABLE, max_deliver=MAX_DELIVER, backoff=backoff, ack_wait=10.0, healed=lambda: self.healed
        )
        cls: type[Recording] = RecordingSwallow if consumer_variant == "swallow-failures" else RecordingConsumer
        self.consumer = cls(db, nc, js, sub)
        self.relay = OutboxRelay(db.dsn, js, schema=db.schema, signal=db.signal, poll_seconds=0.1)
        self.poison: set[str] = set()
        self.good: set[str] = set()

    async def write(self, *, good: int = 0, poison: int = 0) -> None:
        for kind, count in (("poison", poison), ("good", good)):
            for _ in range(count):
                before = set(self.ledger.committed)
                async with self.db.uow() as uow:
                    tid = uuid.uuid4()
                    env = uow.add(
                        ThingHappened(thing_id=tid, seq=len(before), poison=kind == "poison"), aggregate_id=tid
                    )
                self.ledger.committed_tx([env])
                (self.poison if kind == "poison" else self.good).add(str(env.id))

    async def good_applied(self) -> bool:
        return {str(e) for e in await applied(self.db)} >= self.good

    def delivered(self, event_id: str) -> list[int]:
        return [d.step for d in self.consumer.log if d.what == "delivered" and d.event_id == event_id]

    def poison_seqs(self) -> dict[str, int]:
        return {d.event_id: d.stream_seq for d in self.consumer.log if d.event_id in self.poison}

    async def poison_settled(self) -> bool:
        """Each poison event was either acknowledged or announced by an exhaustion advisory."""
        acked = {d.event_id for d in self.consumer.log if d.what == "acked"}
        announced = {a["stream_seq"] for a in await advisories(self.js, DURABLE)}
        seqs = self.poison_seqs()
        return len(seqs) == len(self.poison) and all(e in acked or seqs[e] in announced for e in self.poison)

    def acks(self, event_id: str) -> int:
        """How many deliveries of ``event_id`` the consumer has acknowledged (on any feed)."""
        return sum(1 for d in self.consumer.log if d.what == "acked" and d.event_id == event_id)

    async def replayed(self, acked_before: dict[str, int]) -> None:
        """Wait until the consumer acknowledged one more delivery of each of these events.

        Not "its consumer has nothing pending": JetStream acknowledges a publish a moment before
        it counts the message as pending for the stream's consumers, so that can be true of a
        replay just published and not yet delivered.
        """

        async def done() -> bool:
            return all(self.acks(e) > n for e, n in acked_before.items())

        await wait_for(done, what=f"the replays of {sorted(acked_before)} handled")


async def advisories(js: JetStreamContext, durable: str) -> list[dict[str, object]]:
    """Exhaustion advisories about ``durable`` kept in the advisory stream."""
    out: list[dict[str, object]] = []
    seq = 1
    while True:
        try:
            raw = await js.get_msg(ADVISORY_STREAM, seq, next=True)
        except NotFoundError:
            return out
        assert raw.seq is not None
        doc = orjson.loads(raw.data or b"{}")
        if doc.get("consumer") == durable:
            out.append(doc)
        seq = raw.seq + 1


async def mover_caught_up(js: JetStreamContext, name: str) -> bool:
    """The mover acknowledged every advisory kept (each one's dead letter is stored by then)."""
    return await acked_all(js, ADVISORY_STREAM, name)


async def cli_replay(nats_url: str, tmp_path: Path, *args: str) -> str:
    """``his dlq replay ARGS`` as an operator runs it, pointed at the test server."""
    data_dir = tmp_path / "his-data"  # no run-state file here: the CLI falls back to HIS_NATS_URL
    env = dict(os.environ, HIS_NATS_URL=nats_url, HIS_DATA_DIR=str(data_dir))
    his = str(Path(sys.executable).parent / "his")
    proc = await asyncio.create_subprocess_exec(
        his,
        "dlq",
        "replay",
        *args,
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, f"his dlq replay failed ({proc.returncode}): {text}"
    return text


@pytest.mark.parametrize("variant", ["correct", "swallow-failures"])
async def test_poison_is_dead_lettered_while_good_events_flow_and_replays_once(
    variant: str,
    effects: Database,
    nc: NATS,
    js: JetStreamContext,
    nats_server: NatsServer,
    ledger: Ledger,
    tmp_path: Path,
) -> None:
    h = Hospital(effects, nc, js, ledger, variant)
    mover = DlqMover(js, name="dlq_tst", durables=[DURABLE, h.consumer.sub.replay_name])
    async with running(h.relay.run(), h.consumer.run(), mover.run()):
        for _ in range(3):
            await h.write(poison=1, good=5)

        async def poison_failed_once() -> bool:
            return all(h.delivered(p) for p in h.poison)

        await wait_for(poison_failed_once, what="each poison event delivered once")
        await h.write(good=20)  # these must not wait behind the poison
        await wait_for(h.good_applied, what="good events applied")
        await wait_for(h.poison_settled, timeout=30, what="each poison event settled")
        await wait_for(lambda: mover_caught_up(js, mover.name), what="DLQ mover caught up")

        dead = await dlq.list_dead_letters(js, consumer=DURABLE)
        ledger.note(f"dead letters: {[(d.id, d.event_id[:8], d.kind, d.deliveries, d.error) for d in dead]}")
        assert not {str(e) for e in await applied(effects)} & h.poison
        if variant == "correct":
            assert {d.event_id for d in dead} == h.poison
            for d in dead:
                assert d.kind == "max_deliveries" and d.deliveries == MAX_DELIVER and REASON in d.error, d
                assert d.target == DURABLE and d.stream == STREAM
            # Good events were acknowledged between a poison event's first and last delivery.
            acks = [d.step for d in h.consumer.log if d.what == "acked" and d.event_id in h.good]
            for p in h.poison:
                steps = h.delivered(p)
                assert len(steps) == MAX_DELIVER
                assert any(steps[0] < a < steps[-1] for a in acks), f"no good event flowed while {p} was retried"

        h.healed = True  # the fix is deployed
        ids = [d.id for d in dead]
        replayed = dead[0] if dead else None
        acked = {d.event_id: h.acks(d.event_id) for d in dead}
        for i in ids[:-1]:
            assert await dlq.replay(js, i) is not None
        if ids:
            assert await dlq.replay(js, ids[0]) is None, "a replayed dead letter leaves the DLQ"
            out = await cli_replay(nats_server.url, tmp_path, str(ids[-1]))
            assert f"{ids[-1]}: replayed to {DURABLE}" in out, out
            ledger.note(f"replayed {ids[:-1]} through dlq.replay and {ids[-1:]} through the CLI: {out.strip()}")
        await h.replayed(acked)
        if replayed is not None:
            # A replay repeated after the dedupe window reaches the consumer again: the inbox drops it.
            before = h.consumer.stats.duplicates
            await js.publish(replay_subject(DURABLE), replayed.data)
            await h.replayed({replayed.event_id: h.acks(replayed.event_id)})
            assert h.consumer.stats.duplicates == before + 1

    verdict = await check(effects, ledger)
    assert await dlq.list_dead_letters(js, consumer=DURABLE) == []
    if variant == "correct":
        assert verdict.ok, verdict
    else:
        assert {str(e) for e in verdict.lost} == h.poison, f"the check missed the swallowed poison: {verdict}"
        assert not verdict.duplicated and not verdict.unexpected


@pytest.mark.parametrize("variant", ["correct", "new-only-mover"])
async def test_poison_is_captured_when_the_mover_starts_later(
    variant: str,
    effects: Database,
    nc: NATS,
    js: JetStreamContext,
    ledger: Ledger,
) -> None:
    h = Hospital(effects, nc, js, ledger, "correct")
    async with running(h.relay.run(), h.consumer.run()):
        await h.write(poison=2, good=10)
        await wait_for(h.good_applied, what="good events applied")
        await wait_for(h.poison_settled, timeout=30, what="exhaustion advisories stored")
        # The mover is down: the dead letters exist only as advisories in their stream.
        kept = await advisories(js, DURABLE)
        ledger.note(f"mover down; advisories kept: {[(a['stream_seq'], a['deliveries']) for a in kept]}")
        assert {a["stream_seq"] for a in kept} == set(h.poison_seqs().values())
        assert all(a["deliveries"] == MAX_DELIVER for a in kept)
        assert await dlq.depth(js) == 0

        cls: type[DlqMover] = NewOnlyDlqMover if variant == "new-only-mover" else DlqMover
        mover = cls(js, name="dlq_tst_late", durables=[DURABLE, h.consumer.sub.replay_name])
        async with running(mover.run()):
            await wait_for(lambda: mover_caught_up(js, mover.name), what="late DLQ mover caught up")
            dead = await dlq.list_dead_letters(js, consumer=DURABLE)
            ledger.note(f"the late mover captured {len(dead)} dead letters")
            h.healed = True
            acked = {d.event_id: h.acks(d.event_id) for d in dead}
            for d in dead:
                assert await dlq.replay(js, d.id) is not None
            await h.replayed(acked)

    verdict = await check(effects, ledger)
    if variant == "correct":
        assert {d.event_id for d in dead} == h.poison
        assert all(REASON in d.error and d.deliveries == MAX_DELIVER for d in dead)
        assert verdict.ok, verdict
    else:
        assert not dead
        assert {str(e) for e in verdict.lost} == h.poison, f"the check missed the missed dead letters: {verdict}"


async def test_a_dead_letter_the_dlq_refuses_is_stored_once_it_accepts_again(
    effects: Database, nc: NATS, js: JetStreamContext, ledger: Ledger
) -> None:
    """The DLQ stream refuses new entries while the mover is up (an operator capped it at its size,
    discarding new messages): the advisory must wait, not be acknowledged, so that once the cap is
    lifted the dead letter is stored, exactly once."""
    h = Hospital(effects, nc, js, ledger, "correct", backoff=(0.2, 0.3))
    mover = DlqMover(js, name="dlq_tst_refused", durables=[DURABLE, h.consumer.sub.replay_name])
    kernel_dlq = next(c for c in streams.stream_configs([]) if c.name == DLQ_STREAM)
    async with running(h.relay.run(), h.consumer.run(), mover.run()):
        await js.publish(dlq_subject("tst_other"), b"{}", headers={"Nats-Msg-Id": "an older dead letter"})
        await js.update_stream(dataclasses.replace(kernel_dlq, max_msgs=1, discard=DiscardPolicy.NEW))
        await h.write(poison=1, good=3)
        await wait_for(h.poison_settled, timeout=30, what="the exhaustion advisory stored")
        advisory_seq = (await js.stream_info(ADVISORY_STREAM)).state.last_seq

        async def attempted() -> bool:
            """The mover was handed the advisory and finished an attempt to store it (it let it be
            redelivered, or acknowledged it)."""
            info = await js.consumer_info(ADVISORY_STREAM, mover.name)
            return info.delivered.stream_seq >= advisory_seq and (
                (info.num_redelivered or 0) > 0 or info.ack_floor.stream_seq >= advisory_seq
            )

        await wait_for(attempted, what="the mover's attempt to store the dead letter")
        # The fault landed: the DLQ still refuses, and holds only the older dead letter.
        with pytest.raises(APIError, match="maximum messages"):
            await js.publish(dlq_subject("tst_other"), b"{}")
        assert await dlq.depth(js) == 1, "the DLQ took more than the older dead letter"
        info = await js.consumer_info(ADVISORY_STREAM, mover.name)
        ledger.note(f"DLQ full; the mover's advisory consumer: redelivered {info.num_redelivered}")

        await js.update_stream(kernel_dlq)  # the cap is lifted: the kernel's own configuration again
        await wait_for(lambda: mover_caught_up(js, mover.name), what="the DLQ mover caught up")

    history = History()
    for event_id in h.poison:
        history.tell(event_id)
    history.observe("dlq", (d.event_id for d in await dlq.list_dead_letters(js, consumer=DURABLE)))
    verdict = history.check()
    ledger.note(f"dead letters after the DLQ accepts again: {verdict}")
    assert verdict.ok, f"an advisory acknowledged although its dead letter was not stored? {verdict}"
