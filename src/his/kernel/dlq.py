"""Dead letters: captured from JetStream advisories, listed, replayed and discarded.

JetStream announces a message that exhausted ``max_deliver`` or was terminated with an
advisory. The advisories are kept in a stream, so a dead letter is captured even when its
mover was down at the time. Each service runs a mover for its own consumers: it reads the
advisory, fetches the original event from its stream and the last error from the errors
bucket, and stores all of it in the DLQ stream. Replay republishes the original event on the
consumer's replay subject only (other consumers are not disturbed); the consumer's inbox makes
a replay idempotent for as long as it remembers the event (``HIS_INBOX_RETENTION_DAYS``): a dead
letter whose event is older than that is replayed only when the operator forces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import nats.errors
import orjson
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from his.kernel.consumer import error_key
from his.kernel.streams import (
    ADVISORY_STREAM,
    DLQ_STREAM,
    ERRORS_BUCKET,
    MAX_DELIVERIES_ADVISORY,
    TERMINATED_ADVISORY,
    dlq_subject,
    replay_subject,
)

log = logging.getLogger("his.dlq")
H = "His-Dlq-"


@dataclass(frozen=True)
class DeadLetter:
    """One entry of the DLQ stream."""

    id: int
    consumer: str
    target: str
    stream: str
    stream_seq: int
    subject: str
    kind: str
    error: str
    deliveries: int
    captured_at: str
    data: bytes

    @property
    def event_id(self) -> str:
        try:
            return str(orjson.loads(self.data).get("id", ""))
        except (orjson.JSONDecodeError, AttributeError):
            return ""

    def as_dict(self, *, with_data: bool = False) -> dict[str, object]:
        doc: dict[str, object] = {
            "id": self.id,
            "consumer": self.target,
            "event_id": self.event_id,
            "subject": self.subject,
            "stream": self.stream,
            "stream_seq": self.stream_seq,
            "kind": self.kind,
            "error": self.error,
            "deliveries": self.deliveries,
            "captured_at": self.captured_at,
        }
        if with_data:
            try:
                doc["event"] = orjson.loads(self.data)
            except orjson.JSONDecodeError:
                doc["event"] = self.data.decode(errors="replace")
        return doc


def base_consumer(durable: str) -> str:
    """The consumer a dead letter belongs to (replay feeds report under their own name)."""
    return durable.removesuffix("_replay")


class DlqMover:
    """Turns advisories about the given durable consumers into dead letters."""

    def __init__(self, js: JetStreamContext, *, name: str, durables: Iterable[str]) -> None:
        self.js = js
        self.name = name
        self.durables = sorted(set(durables))
        self.moved = 0

    def filters(self) -> list[str]:
        return [f"{adv}.*.{d}" for d in self.durables for adv in (MAX_DELIVERIES_ADVISORY, TERMINATED_ADVISORY)]

    async def run(self) -> None:
        if not self.durables:
            return
        while True:
            try:
                await self.js.add_consumer(
                    ADVISORY_STREAM,
                    ConsumerConfig(
                        durable_name=self.name,
                        ack_policy=AckPolicy.EXPLICIT,
                        deliver_policy=DeliverPolicy.ALL,
                        filter_subjects=self.filters(),
                        ack_wait=30.0,
                    ),
                )
                psub = await self.js.pull_subscribe_bind(self.name, stream=ADVISORY_STREAM)
                break
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                log.warning("DLQ mover %s cannot bind yet: %r", self.name, exc)
                await asyncio.sleep(1.0)
        while True:
            try:
                msgs = await psub.fetch(32, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except nats.errors.Error as exc:
                log.warning("DLQ mover %s fetch failed: %r", self.name, exc)
                await asyncio.sleep(0.5)
                continue
            for m in msgs:
                try:
                    await self.move(m)
                    await m.ack()
                except (nats.errors.Error, TimeoutError) as exc:
                    log.warning("DLQ mover %s will retry an advisory: %r", self.name, exc)
                    with contextlib.suppress(nats.errors.Error):
                        await m.nak(delay=1.0)

    async def move(self, advisory: Msg) -> None:
        adv = orjson.loads(advisory.data)
        stream, durable, seq = str(adv["stream"]), str(adv["consumer"]), int(adv["stream_seq"])
        kind = "terminated" if advisory.subject.startswith(TERMINATED_ADVISORY) else "max_deliveries"
        try:
            original = await self.js.get_msg(stream, seq)
            data, subject = original.data or b"", original.subject or ""
        except NotFoundError:
            data, subject = b"", ""
        error = str(adv.get("reason") or "")
        deliveries = int(adv.get("deliveries") or 0)
        with contextlib.suppress(Exception):
            kv = await self.js.key_value(ERRORS_BUCKET)
            entry = await kv.get(error_key(durable, stream, seq))
            if entry.value:
                doc = orjson.loads(entry.value)
                error = error or str(doc.get("error", ""))
        if not data:
            error = (error + " | " if error else "") + "original event no longer in its stream"
        target = base_consumer(durable)
        headers = {
            "Nats-Msg-Id": f"dlq:{stream}:{seq}:{durable}:{adv.get('id', '')}",
            H + "Consumer": durable,
            H + "Target": target,
            H + "Stream": stream,
            H + "Stream-Seq": str(seq),
            H + "Subject": subject,
            H + "Kind": kind,
            H + "Error": _header_safe(error or "unknown (no error recorded)"),
            H + "Deliveries": str(deliveries),
            H + "Time": datetime.now(UTC).isoformat(),
        }
        await self.js.publish(dlq_subject(target), data, headers=headers, timeout=5.0)
        self.moved += 1
        log.warning("dead letter: %s seq %d for %s (%s): %s", stream, seq, target, kind, error)


def _header_safe(text: str) -> str:
    return " ".join(text.split())[:1000]


def _from_raw(seq: int, headers: dict[str, str] | None, data: bytes | None) -> DeadLetter:
    h = headers or {}
    return DeadLetter(
        id=seq,
        consumer=h.get(H + "Consumer", ""),
        target=h.get(H + "Target", ""),
        stream=h.get(H + "Stream", ""),
        stream_seq=int(h.get(H + "Stream-Seq", "0") or 0),
        subject=h.get(H + "Subject", ""),
        kind=h.get(H + "Kind", ""),
        error=h.get(H + "Error", ""),
        deliveries=int(h.get(H + "Deliveries", "0") or 0),
        captured_at=h.get(H + "Time", ""),
        data=data or b"",
    )


async def list_dead_letters(
    js: JetStreamContext, *, consumer: str | None = None, limit: int = 1000
) -> list[DeadLetter]:
    """Dead letters in order of capture, optionally of one consumer."""
    out: list[DeadLetter] = []
    subject = dlq_subject(consumer) if consumer else "his.dlq.>"
    seq = 1
    while len(out) < limit:
        try:
            raw = await js.get_msg(DLQ_STREAM, seq, subject=subject, next=True)
        except NotFoundError:
            break
        assert raw.seq is not None
        out.append(_from_raw(raw.seq, raw.headers, raw.data))
        seq = raw.seq + 1
    return out


async def get_dead_letter(js: JetStreamContext, dlq_id: int) -> DeadLetter | None:
    try:
        raw = await js.get_msg(DLQ_STREAM, dlq_id)
    except NotFoundError:
        return None
    return _from_raw(dlq_id, raw.headers, raw.data)


class ForgottenError(ValueError):
    """The dead letter's event is older than its consumer's inbox remembers: a replay might apply
    it a second time (if it had been applied before it was dead-lettered)."""


#: A replay is refused this long before the inbox forgets the event (clocks, and the replay's own delay).
FORGET_MARGIN = timedelta(days=1)


def event_time(data: bytes) -> datetime | None:
    """The ``time`` of the original event's envelope, if it has a readable one."""
    try:
        doc = orjson.loads(data)
        born = datetime.fromisoformat(str(doc["time"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return born if born.tzinfo else born.replace(tzinfo=UTC)


async def replay(
    js: JetStreamContext, dlq_id: int, *, remembered: timedelta | None = None, now: datetime | None = None
) -> DeadLetter | None:
    """Send a dead letter back to its consumer only, then remove it from the DLQ.

    ``remembered``: how long the consumer's inbox remembers an event (``HIS_INBOX_RETENTION_DAYS``).
    An event older than that, less ``FORGET_MARGIN``, raises ``ForgottenError`` and is left in the
    DLQ; ``None`` replays whatever its age (the operator's ``--force``).
    """
    dl = await get_dead_letter(js, dlq_id)
    if dl is None:
        return None
    if not dl.data:
        raise ValueError(f"dead letter {dlq_id} has no original event to replay")
    if remembered is not None:
        born = event_time(dl.data)
        if born is None or (now or datetime.now(UTC)) > born + remembered - FORGET_MARGIN:
            raise ForgottenError(
                f"dead letter {dlq_id}: its event ({born.isoformat() if born else 'of unknown time'}) is older"
                f" than {dl.target}'s inbox remembers ({remembered.days} days less a day's margin), so a replay"
                " could apply it twice if it had been applied before; check, then replay with --force"
            )
    await js.publish(
        replay_subject(dl.target),
        dl.data,
        headers={"Nats-Msg-Id": f"replay:{dlq_id}", "His-Replay-Of": str(dlq_id)},
        timeout=5.0,
    )
    try:
        await js.delete_msg(DLQ_STREAM, dlq_id)
    except APIError as exc:
        if not _gone(exc):
            raise
        # A concurrent replay of the same entry removed it first; JetStream dropped this
        # republish as a copy of that one (same Nats-Msg-Id), so the replay happened once.
    return dl


async def discard(js: JetStreamContext, dlq_id: int) -> bool:
    try:
        return bool(await js.delete_msg(DLQ_STREAM, dlq_id))
    except APIError as exc:
        if _gone(exc):
            return False
        raise


def _gone(exc: APIError) -> bool:
    """JetStream's answer about a sequence that is not (or no longer) in the stream: not found
    (10037), or a 400 "sequence not found" (10043) from a delete."""
    return isinstance(exc, NotFoundError) or exc.err_code in (10037, 10043)


async def depth(js: JetStreamContext) -> int:
    info = await js.stream_info(DLQ_STREAM)
    return int(info.state.messages)
