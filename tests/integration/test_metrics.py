"""Metric families after real work: relay, consumer, pool and DLQ figures on PostgreSQL and NATS,
and the scrape-time refresh the /metrics route runs."""

from __future__ import annotations

import uuid

from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY, generate_latest

from his.cli import scrape
from his.kernel import metrics, streams
from his.kernel.consumer import ConsumerLoop, Subscription
from his.kernel.db import Database, UnitOfWork
from his.kernel.events import Envelope, Event
from his.kernel.outbox import OutboxRelay, backlog
from tests.integration.test_backbone import running
from tests.support.events import ThingHappened
from tests.support.waiting import wait_for


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_relay_consumer_pool_and_scrape_figures_after_real_work(db: Database, nc: NATS, js: object) -> None:
    applied: list[uuid.UUID] = []

    async def handle(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
        uow.on_commit(lambda: applied.append(env.id))

    relay = OutboxRelay(db.dsn, js, schema=db.schema, signal=db.signal, poll_seconds=0.2)  # type: ignore[arg-type]
    sub = Subscription("tst_metrics", ThingHappened.type, handle, ack_wait=5)
    consumer = ConsumerLoop(db, nc, js, sub)  # type: ignore[arg-type]
    metrics.watch_pool("tst_metrics_pool", db.pool)
    published = value("his_outbox_published_total")
    lags = value("his_outbox_commit_to_ack_seconds_count")
    for _ in range(20):
        async with db.uow() as uow:
            tid = uuid.uuid4()
            uow.add(ThingHappened(thing_id=tid, seq=1), aggregate_id=tid)
    async with running(relay.run(), consumer.run()):

        async def all_applied() -> bool:
            return len(applied) == 20

        await wait_for(all_applied, what="20 events applied, each hook once after its commit")

        async def outbox() -> tuple[int, float | None]:
            async with db.pool.acquire() as conn:
                return await backlog(conn)

        # A dead letter of this consumer, and one of another: only the first is this process's.
        await js.publish(streams.dlq_subject(sub.name), b"{}")  # type: ignore[attr-defined]
        await js.publish(streams.dlq_subject("tst_someone_else"), b"{}")  # type: ignore[attr-defined]
        await metrics.refresh(backlog=outbox, js=js, consumers=[(sub.stream, sub.name)])  # type: ignore[arg-type]
    assert value("his_outbox_published_total") - published == 20
    assert value("his_outbox_commit_to_ack_seconds_count") - lags == 20
    assert value("his_consumer_events_total", consumer="tst_metrics", outcome="applied") == 20
    assert value("his_consumer_batch_seconds_count", consumer="tst_metrics") >= 1
    assert value("his_consumer_pending", consumer="tst_metrics") == 0
    assert value("his_outbox_backlog") == 0
    assert value("his_dlq_depth", consumer="tst_metrics") == 1
    assert value("his_db_pool_max_connections", pool="tst_metrics_pool") == db.max_size
    # What `his status` reads from it.
    s = scrape.parse(generate_latest().decode(), at=0.0)
    assert s.gauges["his_outbox_backlog"] == 0 and s.gauges["his_dlq_depth"] >= 1
