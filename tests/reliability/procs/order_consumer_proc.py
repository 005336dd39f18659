"""A consumer in its own OS process that records the order in which it applies each aggregate's
events, and can stop dead with a fetched batch neither committed nor acknowledged.

    python -m tests.reliability.procs.order_consumer_proc --dsn DSN --schema SCHEMA --nats URL
        --durable NAME [--stop-at-batch N --marker PATH] [--batch B] [--ack-wait S]

Each applied event adds a row to ``applied`` (a ``bigserial`` gives the order of application)
with its aggregate, its ``aggregate_version`` and JetStream's delivery count. With
``--stop-at-batch N`` the N-th fetched batch is written to ``--marker`` (its event ids) and the
process blocks before applying it, so the test can SIGKILL it with those messages in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import tests.support.events  # noqa: F401 - registers the test event types
from his.kernel.consumer import ConsumerLoop, Subscription
from his.kernel.db import Database, UnitOfWork
from his.kernel.events import Envelope, Event
from his.kernel.service import connect_nats
from tests.reliability.harness import event_id_of
from tests.support.events import ThingHappened

APPLIED_DDL = """CREATE TABLE applied (
    n bigserial PRIMARY KEY,
    event_id uuid NOT NULL,
    aggregate_id text NOT NULL,
    version int NOT NULL,
    delivered int NOT NULL,
    pid int NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
)"""


class OrderRecordingConsumer(ConsumerLoop):
    """The kernel's consumer; its handler notes each event's delivery count, and it may stop."""

    stop_at_batch = 0
    marker: Path | None = None
    batches = 0
    delivered: dict[str, int]

    async def process(self, msgs: list[Msg]) -> None:
        self.batches += 1
        self.delivered = {event_id_of(m): m.metadata.num_delivered or 1 for m in msgs}
        if self.batches == self.stop_at_batch and self.marker is not None:
            tmp = self.marker.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps({"pid": os.getpid(), "events": [event_id_of(m) for m in msgs]}))
            os.replace(tmp, self.marker)
            print(f"MARKER: batch {self.batches} of {len(msgs)} messages fetched; now blocking", flush=True)
            await asyncio.Event().wait()  # never applies nor acks: the test kills this process here
        await super().process(msgs)

    async def apply(self, uow: UnitOfWork, env: Envelope, ev: Event) -> None:
        assert isinstance(ev, ThingHappened)
        await uow.conn.execute(
            "INSERT INTO applied (event_id, aggregate_id, version, delivered, pid) VALUES ($1, $2, $3, $4, $5)",
            env.id,
            env.aggregate_id,
            env.aggregate_version,
            self.delivered.get(str(env.id), 0),
            os.getpid(),
        )


def order_consumer(db: Database, nc: NATS, durable: str, *, batch: int, ack_wait: float) -> OrderRecordingConsumer:
    """The recording consumer (this process's, or one a test runs in its own process)."""
    holder: list[OrderRecordingConsumer] = []

    async def handler(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
        await holder[0].apply(uow, env, ev)

    sub = Subscription(
        durable, ThingHappened.type, handler, max_deliver=10, backoff=(0.2,), ack_wait=ack_wait, batch=batch
    )
    holder.append(OrderRecordingConsumer(db, nc, nc.jetstream(timeout=5.0), sub))
    return holder[0]


async def main(args: argparse.Namespace) -> None:
    db = Database(args.dsn, schema=args.schema, min_size=1, max_size=2)
    await db.open()
    nc = await connect_nats(args.nats, f"test-order-consumer-{os.getpid()}")
    consumer = order_consumer(db, nc, args.durable, batch=args.batch, ack_wait=args.ack_wait)
    consumer.stop_at_batch = args.stop_at_batch
    consumer.marker = Path(args.marker) if args.marker else None
    print(f"order consumer pid {os.getpid()} started", flush=True)
    try:
        await consumer.run()
    finally:
        await nc.close()
        await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--durable", required=True)
    parser.add_argument("--stop-at-batch", type=int, default=0)
    parser.add_argument("--marker", default="")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ack-wait", type=float, default=1.5)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main(parser.parse_args()))
