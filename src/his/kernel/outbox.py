"""The outbox relay: publishes committed outbox rows to JetStream, in commit order, at least once.

One relay per service is active at a time: the leader holds a PostgreSQL advisory lock on a
dedicated connection (standbys retry and take over when that connection drops). The leader
wakes on an in-process event set after each commit, on a NOTIFY from writers in other
processes, and on a poll timer as a fallback. It publishes each row with
``Nats-Msg-Id = event id`` (JetStream drops duplicates inside its window; consumers' inboxes
drop the rest) and marks rows published only after their PubAck arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import asyncpg
from nats.js.api import PubAck
from nats.js.client import JetStreamContext

from his.kernel import metrics, tracing
from his.kernel.consumer import stop_if_cancelled
from his.kernel.db import Connection, OutboxSignal, outbox_channel

log = logging.getLogger("his.outbox")

FETCH = """
SELECT id, event_id, subject, payload, traceparent, created_at FROM outbox
WHERE published_at IS NULL ORDER BY id LIMIT $1
"""
MARK = "UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($1::bigint[])"
PRUNE = """
DELETE FROM outbox WHERE id IN (
  SELECT id FROM outbox WHERE published_at < clock_timestamp() - make_interval(secs => $1) LIMIT 5000)
"""
PRUNE_INBOX = """
DELETE FROM inbox WHERE (consumer, event_id) IN (
  SELECT consumer, event_id FROM inbox WHERE received_at < clock_timestamp() - make_interval(secs => $1) LIMIT 10000)
"""
BACKLOG = """
SELECT count(*), EXTRACT(EPOCH FROM clock_timestamp() - min(created_at))
FROM outbox WHERE published_at IS NULL
"""


@dataclass
class RelayStats:
    leader: bool = False
    published: int = 0
    batches: int = 0
    publish_errors: int = 0
    last_error: str = ""
    leader_since: float | None = None


class OutboxRelay:
    """Drains one schema's outbox to JetStream. Run ``run()`` as a task; cancel it to stop."""

    def __init__(
        self,
        dsn: str,
        js: JetStreamContext,
        *,
        schema: str,
        signal: OutboxSignal,
        batch_size: int = 1000,
        poll_seconds: float = 1.0,
        ack_timeout: float = 5.0,
        retention_seconds: float = 7 * 24 * 3600,
        inbox_retention_seconds: float = 60 * 24 * 3600,
        standby_retry: float = 0.5,
        db_timeout: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self.js = js
        self.schema = schema
        self.signal = signal
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.ack_timeout = ack_timeout
        self.retention_seconds = retention_seconds
        #: The schema's inbox rows are pruned at this age too: the relay is the schema's one
        #: leader, so one process does it. It must exceed every stream's max age (settings check).
        self.inbox_retention_seconds = inbox_retention_seconds
        self.standby_retry = standby_retry
        #: Deadline of each of the relay's statements: a connection that stops answering is given
        #: up (its session's lock goes with it) rather than waited on for ever.
        self.db_timeout = db_timeout
        self.stats = RelayStats()
        self._last_prune = 0.0

    async def run(self) -> None:
        backoff = self.standby_retry
        while True:
            try:
                await self._run_once()
                backoff = self.standby_retry
            except asyncio.CancelledError:
                raise
            except TimeoutError as exc:
                self.stats.last_error = f"database: {exc!r}"
                log.warning(
                    "outbox relay for %s: its database did not answer within %.0fs; reconnecting",
                    self.schema,
                    self.db_timeout,
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.stats.last_error = f"database: {exc!r}"
                log.warning("outbox relay for %s lost its database connection: %r", self.schema, exc)
            except Exception as exc:
                self.stats.last_error = f"{exc!r}"
                log.exception("outbox relay for %s failed; restarting it", self.schema)
            finally:
                self._step_down()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _step_down(self) -> None:
        self.signal.local_leader = False
        self.stats.leader = False
        self.stats.leader_since = None

    async def _run_once(self) -> None:
        conn: Connection = await asyncpg.connect(
            self.dsn,
            timeout=self.db_timeout,
            command_timeout=self.db_timeout,
            server_settings={
                "search_path": self.schema,
                "application_name": f"his-relay-{self.schema}",
                # Only the relay's own writes (marks, pruning) skip the WAL flush wait. A mark lost
                # in a crash means the row is published again: Nats-Msg-Id deduplication and the
                # consumers' inboxes absorb that. The rows themselves were committed durably.
                "synchronous_commit": "off",
            },
        )
        try:
            while not await conn.fetchval(  # noqa: ASYNC110 - polling a lock held elsewhere
                "SELECT pg_try_advisory_lock(hashtext($1))", f"his.outbox.{self.schema}"
            ):
                await asyncio.sleep(self.standby_retry)
            await conn.add_listener(outbox_channel(self.schema), self._on_notify)
            self.signal.local_leader = True
            self.stats.leader = True
            self.stats.leader_since = time.time()
            log.info("outbox relay for %s is the leader", self.schema)
            await self._lead(conn)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close(timeout=2))

    def _on_notify(self, *_: object) -> None:
        self.signal.local.set()

    async def _lead(self, conn: Connection) -> None:
        while True:
            self.signal.local.clear()
            rows = await conn.fetch(FETCH, self.batch_size)
            if rows:
                done = await self._publish(rows)
                if done:
                    await self.mark(conn, done)
                if len(done) < len(rows):
                    await asyncio.sleep(0.5)  # the broker is unhappy: back off, then retry the rest
                    continue
                if len(rows) == self.batch_size:
                    continue
            await self._maybe_prune(conn)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):  # no task per wait, unlike wait_for
                    await self.signal.local.wait()

    async def mark(self, conn: Connection, ids: list[int]) -> None:
        """Record rows as published. Called only with rows whose PubAck arrived."""
        await conn.execute(MARK, ids)

    async def _publish(self, rows: list[asyncpg.Record]) -> list[int]:
        """Publish rows pipelined, in order; returns the ids whose PubAck arrived."""
        futures: list[tuple[int, asyncio.Future[PubAck]]] = []
        start = time.perf_counter()
        try:
            # One deadline for the whole batch: publish_async's ``wait_stall`` runs each call in
            # asyncio.wait_for, a task per message that cost 4x the send itself (30 µs) here.
            async with asyncio.timeout(self.ack_timeout):
                for r in rows:
                    headers = {"Nats-Msg-Id": str(r["event_id"])}
                    if tracing.recording():
                        with tracing.span(
                            f"{r['subject']} publish",
                            tracing.SpanKind.PRODUCER,
                            parent=r["traceparent"] or "",
                            attributes={"messaging.system": "nats", "messaging.destination.name": r["subject"]},
                        ):
                            headers["traceparent"] = tracing.current_traceparent()
                    elif r["traceparent"]:
                        headers["traceparent"] = r["traceparent"]
                    fut = await self.js.publish_async(r["subject"], bytes(r["payload"]), headers=headers)
                    futures.append((r["id"], fut))
        except Exception as exc:  # noqa: BLE001 - a broker outage must not kill the relay
            # nats-py's publish_async turns a cancellation into TooManyStalledMsgsError.
            stop_if_cancelled()
            self._release_orphan(futures)
            self._note_error(exc, count=len(rows) - len(futures), of=len(rows))
        done: list[int] = []
        if not futures:
            return done
        waited, pending = await asyncio.wait([f for _, f in futures], timeout=self.ack_timeout)
        for f in pending:
            f.cancel()
        failed: list[BaseException | None] = []
        for row_id, fut in futures:
            if fut in waited and not fut.cancelled() and fut.exception() is None:
                done.append(row_id)
            elif fut in waited and not fut.cancelled():
                failed.append(fut.exception())
        if failed:
            # One line per batch: while a stream elects a new leader every publish of a batch
            # fails the same way, and a line per message would flood the log.
            self._note_error(failed[0], count=len(failed), of=len(futures))
        if pending:
            timeout = TimeoutError(f"{len(pending)} PubAcks not received in {self.ack_timeout}s")
            self._note_error(timeout, count=len(pending), of=len(futures))
        self.stats.published += len(done)
        self.stats.batches += 1
        metrics.observe_relay(rows, done, time.perf_counter() - start)
        return done

    def _release_orphan(self, futures: list[tuple[int, asyncio.Future[PubAck]]]) -> None:
        """Cancel the PubAck future a failed ``publish_async`` left behind, freeing its slot.

        nats-py registers the future, holding one of ``publish_async_max_pending`` slots, before it
        sends; if the send raises (reconnect buffer full, message too large) the future is neither
        returned nor ever resolved. Left alone, a long enough outage leaks every slot and the relay
        publishes nothing more once NATS is back. The relay is the only ``publish_async`` user of
        its connection, so any pending future that is not one of this batch's is such an orphan.
        """
        mine = {id(f) for _, f in futures}
        for fut in list(self.js._publish_async_futures.values()):
            if not fut.done() and id(fut) not in mine:
                fut.cancel()  # its done-callback gives the slot back

    def _note_error(self, exc: BaseException | None, *, count: int = 1, of: int = 1) -> None:
        """Count ``count`` failed publishes (of ``of`` attempted together) and log them once."""
        self.stats.publish_errors += count
        self.stats.last_error = f"publish: {exc!r}"
        log.warning("outbox relay for %s could not publish %d of %d events: %r", self.schema, count, of, exc)

    async def _maybe_prune(self, conn: Connection) -> None:
        now = time.monotonic()
        if now - self._last_prune < 60:
            return
        self._last_prune = now
        await conn.execute(PRUNE, self.retention_seconds)
        await conn.execute(PRUNE_INBOX, self.inbox_retention_seconds)


async def backlog(conn: Connection) -> tuple[int, float | None]:
    """Unpublished rows and the age in seconds of the oldest one."""
    row = await conn.fetchrow(BACKLOG)
    assert row is not None
    return int(row[0]), (float(row[1]) if row[1] is not None else None)
