"""Durable pull consumers with an idempotent inbox.

For each fetched batch the consumer opens one transaction, inserts every event id into the
inbox at once (``ON CONFLICT DO NOTHING``), runs the handler of each new event, and commits.
Only after the commit does it acknowledge. A redelivered event finds its inbox row and is
acknowledged without running the handler again, so effects happen exactly once although
delivery is at least once.

Handlers run without savepoints first (they cost two round trips per event); if one fails, the
batch's transaction rolls back and the batch runs again with each handler in its own savepoint,
so the failure stays with its event. A handler's database effects are therefore all-or-nothing
per event; anything it does outside the database may happen again (as with any redelivery).

Order: a batch is applied in stream order, and a consumer that starts while messages of an
earlier run are still unacknowledged (it was killed with a batch in flight) fetches nothing until
JetStream redelivers them, so events of one aggregate are not applied after later ones. A
handler failure is still retried after a delay while later events of its aggregate go on.

Failures: an invalid envelope or payload, or a ``PermanentError`` from the handler, is
terminated at once (with its reason). Any other error is negatively acknowledged with a
growing delay until ``max_deliver`` is reached. Either way JetStream emits an advisory that
the DLQ mover turns into a dead letter; the last error is kept in a KV bucket for it.

What a handler needs from another service (a value that must not travel on the bus, ADR 0032)
is asked by the subscription's ``prepare`` step, for each event of the batch before its
transaction opens: no transaction waits on the network. The handler is given the answer. A
``prepare`` that fails fails its event alone (retried, or terminated for a ``PermanentError``);
the rest of the batch is applied.

Slow handlers: while a batch is being applied, the consumer tells JetStream every third of
``ack_wait`` that its messages are still in progress (``+WPI``), which restarts their ack timers.
A handler slower than ``ack_wait`` is therefore neither redelivered mid-flight (to another
replica, or to this one after it finishes) nor pushed towards ``max_deliver`` and the DLQ; the
reports stop as soon as the batch is committed or rolled back, so a hung consumer process still
has its messages redelivered ``ack_wait`` after it last reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict, TypeVar, Unpack

import asyncpg
import nats.errors
import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import ValidationError

from his.kernel import metrics, tracing
from his.kernel.db import Database, UnitOfWork
from his.kernel.events import (
    Envelope,
    Event,
    InvalidEnvelopeError,
    Superseded,
    UnknownEventTypeError,
    service_of,
    stream_name,
)
from his.kernel.streams import ERRORS_BUCKET, REPLAY_STREAM, replay_subject

log = logging.getLogger("his.consumer")

#: How often, as a share of ``ack_wait``, a batch still being applied is reported in progress.
PROGRESS_SHARE = 1 / 3

Handler = Callable[[UnitOfWork, Envelope, Event], Awaitable[None]]
#: What a subscription asks before the batch's transaction opens, for one event.
Prepare = Callable[[Envelope, Event], Awaitable[Any]]
Ev = TypeVar("Ev", bound=Event)
T = TypeVar("T")
#: The answer of the subscription's ``prepare`` for the event whose handler is running.
_PREPARED: ContextVar[Any] = ContextVar("his_consumer_prepared")

INBOX_INSERT = """
INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::uuid[])
ON CONFLICT DO NOTHING RETURNING event_id
"""
INBOX_FORGET = "DELETE FROM inbox WHERE consumer = $1 AND event_id = ANY($2::uuid[])"

#: What a lost or refused database connection raises. asyncpg reports a connection that the
#: server terminated while it was being used as ``InternalClientError`` ("another operation is
#: in progress"), which is neither a ``PostgresError`` nor an ``InterfaceError``.
#: Past ``ack_wait``, the time the server may take to notice a message is due for redelivery.
REDELIVERY_MARGIN = 0.25

DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


class PermanentError(Exception):
    """The event can never be applied as it is: terminate it (it goes to the DLQ) at once."""


class _HandlerFailedError(Exception):
    """A handler failed in a batch applied without savepoints: roll back, redo with them."""


class SubscriptionOptions(TypedDict, total=False):
    """What ``Subscription.of`` may set besides the event and its handler."""

    max_deliver: int
    backoff: Sequence[float]
    ack_wait: float
    batch: int


@dataclass(frozen=True)
class Subscription:
    """A durable consumer: one event type, one handler."""

    name: str
    event_type: str
    handler: Handler
    max_deliver: int = 5
    backoff: Sequence[float] = (0.5, 2.0, 10.0, 30.0, 60.0)
    ack_wait: float = 30.0
    batch: int = 128
    #: Earlier versions of the event that the consumer still reads (upcast before the handler).
    older: tuple[str, ...] = ()
    #: Asked for each event before the batch's transaction opens (``Subscription.prepared``).
    prepare: Prepare | None = None

    @property
    def stream(self) -> str:
        return stream_name(service_of(self.event_type))

    @property
    def subjects(self) -> tuple[str, ...]:
        """The subjects the durable consumer filters on: the event's, then its earlier versions'."""
        return (self.event_type, *self.older)

    @property
    def replay_name(self) -> str:
        return f"{self.name}_replay"

    def delay(self, delivered: int) -> float:
        return self.backoff[min(max(delivered, 1), len(self.backoff)) - 1]

    @classmethod
    def of(
        cls,
        name: str,
        event: type[Ev],
        handler: Callable[[UnitOfWork, Envelope, Ev], Awaitable[None]],
        *,
        older: Sequence[type[Superseded]] = (),
        **options: Unpack[SubscriptionOptions],
    ) -> Subscription:
        """A durable consumer of ``event`` (its model): the handler gets that model, typed, and
        anything else arriving on the subscription is a ``PermanentError`` before the handler
        runs (the guard every handler once wrote for itself).

        ``older``: earlier versions of the event (``Superseded`` models) the consumer still reads,
        so that events published before a new version replaced them are not left unread in the
        stream; each is upcast to ``event`` before the handler sees it."""

        @functools.wraps(handler)
        async def typed(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
            await handler(uow, env, _as(ev, event, env, name, older))

        return cls(name, event.type, typed, older=tuple(o.type for o in older), **options)

    @classmethod
    def prepared(
        cls,
        name: str,
        event: type[Ev],
        prepare: Callable[[Envelope, Ev], Awaitable[T]],
        handler: Callable[[UnitOfWork, Envelope, Ev, T], Awaitable[None]],
        *,
        older: Sequence[type[Superseded]] = (),
        **options: Unpack[SubscriptionOptions],
    ) -> Subscription:
        """As ``of``, with a step before the transaction: ``prepare`` is asked for each event of
        a batch before the batch's transaction opens (what the handler needs from another
        service), and the handler is given its answer. A ``prepare`` that raises fails its event
        alone, as a handler would."""

        async def ready(env: Envelope, ev: Event) -> T:
            return await prepare(env, _as(ev, event, env, name, older))

        @functools.wraps(handler)
        async def typed(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
            await handler(uow, env, _as(ev, event, env, name, older), _PREPARED.get())

        return cls(name, event.type, typed, older=tuple(o.type for o in older), prepare=ready, **options)


@contextlib.contextmanager
def _given(prepared: Any) -> Iterator[None]:
    """The ``prepare`` answer a ``Subscription.prepared`` handler is given, while it runs."""
    token = _PREPARED.set(prepared)
    try:
        yield
    finally:
        _PREPARED.reset(token)


def _as(ev: Event, event: type[Ev], env: Envelope, name: str, older: Sequence[type[Superseded]]) -> Ev:
    """``ev`` as the subscription's model: upcast from an earlier version it reads, or a
    ``PermanentError`` for anything else."""
    if isinstance(ev, Superseded) and type(ev) in older:
        ev = ev.upcast()
    if not isinstance(ev, event):
        raise PermanentError(f"unexpected event {env.type} on {name} (it takes {event.type})")
    return ev


@dataclass
class ConsumerStats:
    applied: int = 0
    duplicates: int = 0
    failed: int = 0
    terminated: int = 0
    #: In-progress reports sent (one per message per report) for batches slower than ``ack_wait``.
    in_progress: int = 0

    def outcomes(self) -> tuple[int, int, int, int]:
        """Applied, duplicate, failed (to be retried) and terminated counts."""
        return self.applied, self.duplicates, self.failed, self.terminated


@dataclass
class _Item:
    msg: Msg
    env: Envelope
    event: Event
    #: The subscription's ``prepare`` answer for this event (None without one).
    prepared: Any = None


class ConsumerLoop:
    """Runs one subscription (and its replay feed) until cancelled."""

    def __init__(self, db: Database, nc: NATS, js: JetStreamContext, sub: Subscription) -> None:
        self.db = db
        self.nc = nc
        self.js = js
        self.sub = sub
        self.stats = ConsumerStats()
        self._errors: KeyValue | None = None

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._feed(self.sub.stream, self.sub.name, self.sub.subjects))
            tg.create_task(self._feed(REPLAY_STREAM, self.sub.replay_name, (replay_subject(self.sub.name),)))

    async def ensure(self, stream: str, durable: str, subjects: Sequence[str]) -> None:
        """Create or update the durable consumer (one subject, or an event's and its earlier
        versions': a consumer created for one version is updated to filter on both)."""
        one = len(subjects) == 1
        await self.js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                filter_subject=subjects[0] if one else None,
                filter_subjects=None if one else list(subjects),
                max_deliver=self.sub.max_deliver,
                ack_wait=self.sub.ack_wait,
                max_ack_pending=max(1000, self.sub.batch * 4),
            ),
        )

    async def _feed(self, stream: str, durable: str, subjects: Sequence[str]) -> None:
        while True:
            try:
                await self.ensure(stream, durable, subjects)
                psub = await self.js.pull_subscribe_bind(durable, stream=stream)
                info = await self.js.consumer_info(stream, durable)
                break
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                stop_if_cancelled()
                log.warning("consumer %s cannot bind yet: %r", durable, exc)
                await asyncio.sleep(1.0)
        await self._redeliveries_first(durable, info)
        while True:
            try:
                msgs = await psub.fetch(self.sub.batch, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                stop_if_cancelled()
                continue
            except nats.errors.Error as exc:
                stop_if_cancelled()
                log.warning("consumer %s fetch failed: %r", durable, exc)
                await asyncio.sleep(0.5)
                continue
            await self.process(msgs)

    async def _redeliveries_first(self, durable: str, info: ConsumerInfo) -> None:
        """Fetch nothing before the messages an earlier incarnation left unacknowledged come back.

        A consumer that died with a batch in flight leaves it pending until ``ack_wait`` runs out;
        a fetch before then is handed the later messages, and events of one aggregate would be
        applied out of order. Once they are due, JetStream hands out redeliveries before new
        messages, so waiting until then keeps per-aggregate order.
        """
        if not info.num_ack_pending:
            return
        ack_wait = info.config.ack_wait or self.sub.ack_wait
        last = info.delivered.last_active if info.delivered else None
        since = (datetime.now(UTC) - last).total_seconds() if last else 0.0
        wait = max(0.0, min(ack_wait, ack_wait - since)) + REDELIVERY_MARGIN
        log.info(
            "consumer %s: %d messages of an earlier run unacknowledged; fetching again in %.1fs",
            durable,
            info.num_ack_pending,
            wait,
        )
        await asyncio.sleep(wait)

    async def process(self, msgs: list[Msg]) -> None:
        """Apply a fetched batch: one transaction, then acks/naks/terms."""
        start, before = time.perf_counter(), self.stats.outcomes()
        try:
            await self._process(msgs)
        finally:
            metrics.observe_batch(self.sub.name, (m.metadata.num_delivered for m in msgs), time.perf_counter() - start)
            metrics.count_outcomes(self.sub.name, before, self.stats.outcomes())

    async def _process(self, msgs: list[Msg]) -> None:
        items: list[_Item] = []
        for m in msgs:
            try:
                env = Envelope.from_json(m.data)
                items.append(_Item(m, env, env.model()))
            except (InvalidEnvelopeError, UnknownEventTypeError, ValidationError) as exc:
                await self._terminate(m, f"invalid event: {_one_line(exc)}")
        if not items:
            return
        with self._in_progress([it.msg for it in items]):
            items, unprepared = await self._prepare(items)
        await self._settle([], unprepared)
        if not items:
            return
        try:
            with self._in_progress([it.msg for it in items]):
                acks, failures = await self._apply(items)
        except DATABASE_ERRORS as exc:
            log.warning("consumer %s could not reach its database: %r", self.sub.name, exc)
            for it in items:
                await self._retry(it.msg, f"database: {_one_line(exc)}")
            await self._until_database_answers()
            return
        await self.after_commit(acks)
        await self._settle(acks, failures)

    async def _settle(self, acks: list[Msg], failures: list[tuple[_Item, Exception]]) -> None:
        """Acknowledge what was committed; terminate what can never be applied, retry the rest."""
        for m in acks:
            await self.acknowledge(m)
        for it, error in failures:
            if isinstance(error, PermanentError):
                await self._terminate(it.msg, _one_line(error))
            else:
                await self._retry(it.msg, _one_line(error))

    async def _prepare(self, items: list[_Item]) -> tuple[list[_Item], list[tuple[_Item, Exception]]]:
        """Ask the subscription's ``prepare`` for each event, before any transaction: the events
        it answered for, and those it failed for (with the error)."""
        prepare = self.sub.prepare
        if prepare is None:
            return items, []
        ready: list[_Item] = []
        failed: list[tuple[_Item, Exception]] = []
        for it in items:
            try:
                it.prepared = await prepare(it.env, it.event)
                ready.append(it)
            except Exception as exc:  # noqa: BLE001 - retried or dead-lettered as a handler's error is
                failed.append((it, exc))
        return ready, failed

    @contextlib.contextmanager
    def _in_progress(self, msgs: list[Msg]) -> Iterator[None]:
        """Report ``msgs`` in progress every ``PROGRESS_SHARE`` of ``ack_wait`` until the block ends.

        A timer, not a task: most batches finish long before the first report is due, and a
        timer that never fires costs far less than a task per batch.
        """
        loop = asyncio.get_running_loop()
        interval = self.sub.ack_wait * PROGRESS_SHARE
        sending: set[asyncio.Task[None]] = set()
        handle: asyncio.TimerHandle

        def due() -> None:
            nonlocal handle
            task = loop.create_task(self._report_in_progress(msgs))
            sending.add(task)
            task.add_done_callback(sending.discard)
            handle = loop.call_later(interval, due)

        handle = loop.call_later(interval, due)
        try:
            yield
        finally:
            handle.cancel()
            for task in sending:
                task.cancel()

    async def _report_in_progress(self, msgs: list[Msg]) -> None:
        for m in msgs:
            with contextlib.suppress(nats.errors.Error):
                await m.in_progress()
                self.stats.in_progress += 1

    async def _until_database_answers(self) -> None:
        """Fetch nothing more until the database answers again.

        Each delivery of a batch that failed for want of its database counts against
        ``max_deliver``: a consumer that fetched on through an outage would exhaust every pending
        event within its backoff delays (42.5 s by default) and leave them all in the DLQ.
        """
        delay = 0.5
        while True:
            try:
                await self.db.pool.fetchval("SELECT 1")
                return
            except DATABASE_ERRORS:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _apply(self, items: list[_Item]) -> tuple[list[Msg], list[tuple[_Item, Exception]]]:
        """One transaction for the batch: inbox rows, then each new event's handler; commit.

        First deliveries take the fast way: every handler in the batch's transaction, no
        savepoints (each costs two round trips per event). If a handler fails there, the whole
        transaction rolls back and the batch runs again the careful way, each handler in its own
        savepoint, so one bad event cannot sink the others. Redelivered batches go the careful
        way at once. Either way only committed effects are acknowledged.
        """
        if all((it.msg.metadata.num_delivered or 1) <= 1 for it in items):
            try:
                return await self._apply_together(items)
            except _HandlerFailedError:
                pass  # rolled back; nothing of this attempt remains
        return await self._apply_isolated(items)

    async def _apply_together(self, items: list[_Item]) -> tuple[list[Msg], list[tuple[_Item, Exception]]]:
        acks: list[Msg] = []
        duplicates = 0
        async with self.db.uow() as uow:
            new = await self._insert_inbox(uow, items)
            for it in items:
                if it.env.id not in new:
                    duplicates += 1
                    acks.append(it.msg)
                    continue
                new.discard(it.env.id)  # a second copy in the same batch is a duplicate
                with self._span(it), _given(it.prepared):
                    try:
                        await self.sub.handler(uow, it.env, it.event)
                    except Exception as exc:
                        raise _HandlerFailedError from exc
                acks.append(it.msg)
        self.stats.duplicates += duplicates
        self.stats.applied += len(acks) - duplicates
        return acks, []

    async def _apply_isolated(self, items: list[_Item]) -> tuple[list[Msg], list[tuple[_Item, Exception]]]:
        acks: list[Msg] = []
        failures: list[tuple[_Item, Exception]] = []
        async with self.db.uow() as uow:
            new = await self._insert_inbox(uow, items)
            for it in items:
                if it.env.id not in new:
                    self.stats.duplicates += 1
                    acks.append(it.msg)
                    continue
                new.discard(it.env.id)
                with self._span(it) as span, _given(it.prepared):
                    try:
                        async with uow.savepoint():
                            await self.sub.handler(uow, it.env, it.event)
                        acks.append(it.msg)
                        self.stats.applied += 1
                    except Exception as exc:  # noqa: BLE001 - any handler error is retried or dead-lettered
                        failures.append((it, exc))
                        span.record_exception(exc)
            if failures:
                await uow.conn.execute(INBOX_FORGET, self.sub.name, [it.env.id for it, _ in failures])
        return acks, failures

    def _span(self, it: _Item) -> AbstractContextManager[tracing.Span]:
        """The consumer span of one event: a child of the relay's publish span (NATS header), or
        of the producer's span (the envelope) when the header is missing."""
        parent = (it.msg.headers or {}).get("traceparent") or it.env.traceparent
        if not tracing.recording():  # nothing would read the name and attributes
            return tracing.span("", tracing.SpanKind.CONSUMER, parent=parent)
        return tracing.span(
            f"{it.env.type} process",
            tracing.SpanKind.CONSUMER,
            parent=parent,
            attributes={
                "messaging.system": "nats",
                "messaging.consumer.group.name": self.sub.name,
                "messaging.message.id": str(it.env.id),
            },
        )

    async def _insert_inbox(self, uow: UnitOfWork, items: list[_Item]) -> set[uuid.UUID]:
        """Record the batch's event ids; returns those not seen before."""
        return {r[0] for r in await uow.conn.fetch(INBOX_INSERT, self.sub.name, [i.env.id for i in items])}

    async def after_commit(self, acks: list[Msg]) -> None:
        """Hook between commit and ack (fault-injection point for tests)."""

    async def acknowledge(self, m: Msg) -> None:
        with contextlib.suppress(nats.errors.Error):
            await m.ack()

    async def _retry(self, m: Msg, error: str) -> None:
        self.stats.failed += 1
        delivered = m.metadata.num_delivered or 1
        log.warning(
            "consumer %s failed on delivery %d of %s: %s",
            self.sub.name,
            delivered,
            m.metadata.sequence.stream if m.metadata.sequence else "?",
            error,
        )
        await self._record_error(m, error)
        with contextlib.suppress(nats.errors.Error):
            await m.nak(delay=self.sub.delay(delivered))

    async def _terminate(self, m: Msg, reason: str) -> None:
        self.stats.terminated += 1
        log.warning("consumer %s terminated a message: %s", self.sub.name, reason)
        await self._record_error(m, reason)
        if m.reply:
            with contextlib.suppress(nats.errors.Error):
                # "+TERM <reason>": the reason shows in the server's terminated advisory.
                await self.nc.publish(m.reply, b"+TERM " + reason.encode()[:900])

    async def _record_error(self, m: Msg, error: str) -> None:
        md = m.metadata
        if md.sequence is None:
            return
        key = error_key(md.consumer or self.sub.name, md.stream or "", md.sequence.stream)
        doc = {"error": error, "deliveries": md.num_delivered, "consumer": self.sub.name}
        try:
            if self._errors is None:
                self._errors = await self.js.key_value(ERRORS_BUCKET)
            await asyncio.wait_for(self._errors.put(key, orjson.dumps(doc)), 2.0)
        except Exception as exc:  # noqa: BLE001 - best effort: the DLQ then says "error unknown"
            log.warning("could not record the error of %s: %r", key, exc)


def stop_if_cancelled() -> None:
    """Raise CancelledError if the current task was asked to stop.

    Python 3.11's ``asyncio.wait_for`` (inside nats-py's ``fetch`` and ``publish_async``) can
    turn a cancellation arriving as its timeout fires into a timeout; a loop that treats
    timeouts as "try again" would then never stop. Call this where such errors are absorbed.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def error_key(consumer: str, stream: str, seq: int) -> str:
    return f"{consumer}.{stream}.{seq}"


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:1000]
