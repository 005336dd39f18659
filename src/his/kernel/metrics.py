"""Prometheus metric families of the backbone, and the state read when ``/metrics`` is scraped.

Labels are bounded sets only: route templates, gRPC method names, consumer and dependency names,
status codes; never raw paths, ids or people. The hot path only increments counters and observes
histograms; anything that needs IO (outbox backlog, JetStream consumer pending, DLQ depth) is
read once per scrape by ``refresh``, and in-memory state (pool sizes, breaker states) by a
collector at scrape time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from his.kernel import observability as obs

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

    from his.kernel.db import Pool
    from his.kernel.resilience import CircuitBreaker

FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

GRPC_SERVER_SECONDS = Histogram(
    "his_grpc_server_handling_seconds", "gRPC calls handled by this process", ["method", "code"], buckets=FAST
)
GRPC_CLIENT_SECONDS = Histogram(
    "his_grpc_client_handling_seconds",
    "gRPC call attempts made by this process (a retried call counts once per attempt)",
    ["method", "code"],
    buckets=FAST,
)
RELAY_PUBLISH_SECONDS = Histogram(
    "his_outbox_publish_seconds", "Outbox relay: one batch from its first publish to its last PubAck", buckets=FAST
)
RELAY_LAG_SECONDS = Histogram(
    "his_outbox_commit_to_ack_seconds",
    "Outbox relay: an event's time from its outbox row to its PubAck",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CONSUMER_SECONDS = Histogram(
    "his_consumer_batch_seconds",
    "Consumer: one fetched batch from its arrival to its acknowledgements",
    ["consumer"],
    buckets=FAST,
)
CONSUMER_REDELIVERIES = Counter(
    "his_consumer_redeliveries_total", "Consumer: messages received again (delivery count above one)", ["consumer"]
)
CONSUMER_PENDING = Gauge(
    "his_consumer_pending", "Consumer: messages in its stream not yet delivered (JetStream num_pending)", ["consumer"]
)
CONSUMER_ACK_PENDING = Gauge(
    "his_consumer_ack_pending", "Consumer: messages delivered and not yet acknowledged", ["consumer"]
)
DLQ_DEPTH = Gauge(
    "his_dlq_depth",
    "Dead letters of a consumer of this process in the DLQ stream (sum them for the total)",
    ["consumer"],
)

BREAKER_STATES = ("closed", "half_open", "open")

#: Routes that serve operators and probes: left out of request rates and latencies shown to them.
OPS_ROUTES = frozenset({"/metrics", "/status", "/readyz", "/healthz"})


class StateCollector(Collector):
    """Pool use and circuit-breaker states of this process, read when scraped (no work otherwise)."""

    def __init__(self) -> None:
        self.pools: dict[str, Callable[[], Pool | None]] = {}
        self.breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size = GaugeMetricFamily("his_db_pool_connections", "Database pool connections", labels=["pool", "state"])
        limit = GaugeMetricFamily("his_db_pool_max_connections", "Database pool size limit", labels=["pool"])
        for name, get in self.pools.items():
            pool = get()
            if pool is None:  # not opened (yet)
                continue
            total, idle = pool.get_size(), pool.get_idle_size()
            size.add_metric([name, "in_use"], total - idle)
            size.add_metric([name, "idle"], idle)
            limit.add_metric([name], pool.get_max_size())
        breaker = GaugeMetricFamily(
            "his_circuit_breaker_state",
            "Circuit breaker of calls to a dependency: 1 for its current state",
            labels=["dependency", "state"],
        )
        for b in list(self.breakers):
            now = b.state.value
            for state in BREAKER_STATES:
                breaker.add_metric([b.name, state], 1.0 if state == now else 0.0)
        yield size
        yield limit
        yield breaker


STATE = StateCollector()
REGISTRY.register(STATE)


def watch_pool(name: str, pool: Pool | Callable[[], Pool | None]) -> None:
    """Report a connection pool's use at scrape time; ``pool`` may be a function giving the pool
    then (or None while it is not open)."""
    STATE.pools[name] = pool if callable(pool) else lambda: pool


def watch_breaker(breaker: CircuitBreaker) -> None:
    """Report a circuit breaker's state at scrape time (for as long as the breaker lives)."""
    STATE.breakers.add(breaker)


def method_name(method: object) -> str:
    """The full name (``/pkg.Service/Method``) of a grpc.aio multicallable, or a stand-in's name."""
    raw = getattr(method, "_method", None)
    if isinstance(raw, bytes):
        return raw.decode()
    return raw if isinstance(raw, str) else str(getattr(method, "__name__", "unknown"))


def observe_batch(consumer: str, delivered: Iterable[int | None], seconds: float) -> None:
    """A consumer's batch: its processing time, and how many of its messages were redeliveries."""
    CONSUMER_SECONDS.labels(consumer).observe(seconds)
    again = sum(1 for n in delivered if (n or 1) > 1)
    if again:
        CONSUMER_REDELIVERIES.labels(consumer).inc(again)


class Row(Protocol):
    """An outbox row as the relay fetched it (an ``asyncpg.Record``), read by column."""

    def __getitem__(self, key: str, /) -> object: ...


def observe_relay(rows: Sequence[Row], published: Sequence[int], seconds: float) -> None:
    """A relay batch: its publish time, and each published row's time from its outbox row to now.

    The rows' ``created_at`` comes from the database's clock: a skew between the database host and
    this one shifts the commit-to-ack figures (not the batch times).
    """
    RELAY_PUBLISH_SECONDS.observe(seconds)
    obs.OUTBOX_PUBLISHED.inc(len(published))
    now = time.time()
    ids = set(published)
    acked = rows if len(ids) == len(rows) else [r for r in rows if r["id"] in ids]
    for r in acked:
        created = r["created_at"]
        if isinstance(created, datetime):
            RELAY_LAG_SECONDS.observe(max(0.0, now - created.timestamp()))


OUTCOMES = ("applied", "duplicate", "failed", "terminated")


def count_outcomes(consumer: str, before: tuple[int, ...], after: tuple[int, ...]) -> None:
    """Add a batch's outcomes (the change in a consumer's counts) to ``his_consumer_events_total``."""
    for outcome, was, now in zip(OUTCOMES, before, after, strict=True):
        if now > was:
            obs.CONSUMER_EVENTS.labels(consumer, outcome).inc(now - was)


async def refresh(
    *,
    backlog: Callable[[], Awaitable[tuple[int, float | None]]] | None = None,
    js: JetStreamContext | None = None,
    consumers: Iterable[tuple[str, str]] = (),
    timeout: float = 2.0,
) -> None:
    """Read what only IO can tell, for a scrape: outbox backlog and age, and for each consumer
    (stream, durable) its pending counts and its dead letters. Each read that fails or times out
    leaves its gauges as they were."""
    from his.kernel.streams import DLQ_STREAM, dlq_subject

    consumers = list(consumers)

    async def outbox() -> None:
        if backlog is not None:
            count, age = await backlog()
            obs.OUTBOX_BACKLOG.set(count)
            obs.OUTBOX_OLDEST.set(age or 0.0)

    async def consumer(stream: str, durable: str) -> None:
        assert js is not None
        info = await js.consumer_info(stream, durable)
        CONSUMER_PENDING.labels(durable).set(info.num_pending or 0)
        CONSUMER_ACK_PENDING.labels(durable).set(info.num_ack_pending or 0)

    async def dlq() -> None:
        assert js is not None
        info = await js.stream_info(DLQ_STREAM, subjects_filter=dlq_subject(">"))
        counts = info.state.subjects or {}
        for _, durable in consumers:
            DLQ_DEPTH.labels(durable).set(counts.get(dlq_subject(durable), 0))

    reads = [outbox()]
    if js is not None and consumers:
        reads += [dlq(), *(consumer(s, d) for s, d in consumers)]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await asyncio.gather(*reads, return_exceptions=True)
