"""A consumer in its own OS process that stops dead between its two steps, for a SIGKILL.

    python -m tests.reliability.procs.consumer_proc --dsn DSN --schema SCHEMA --nats URL
        --durable NAME --marker PATH [--variant correct|ack-before-commit]

The kernel's consumer commits, then acknowledges: this one writes ``--marker`` (JSON: the event
ids of the batch and their delivery counts) right after the commit and then blocks, so the ack
never goes out. The broken variant acknowledges first, then commits: it writes the marker
right after the ack and blocks before the commit. Either way the test SIGKILLs it there.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path

import orjson
from nats.aio.msg import Msg

import tests.support.events  # noqa: F401 - registers the test event types
from his.kernel.consumer import ConsumerLoop
from his.kernel.db import Database
from his.kernel.service import connect_nats
from tests.reliability.broken import AckBeforeCommitConsumer
from tests.reliability.harness import effect_subscription, event_id_of


def write_marker(path: Path, step: str, msgs: list[Msg]) -> None:
    doc = {
        "step": step,
        "pid": os.getpid(),
        "events": [event_id_of(m) for m in msgs],
        "num_delivered": [m.metadata.num_delivered for m in msgs],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(doc))
    os.replace(tmp, path)
    print(f"MARKER {step}: {len(msgs)} messages; now blocking", flush=True)


class StopsAfterCommit(ConsumerLoop):
    marker: Path

    async def after_commit(self, acks: list[Msg]) -> None:
        write_marker(self.marker, "committed-not-acked", acks)
        await asyncio.Event().wait()  # never acks: the test kills this process here


class BrokenStopsAfterAck(AckBeforeCommitConsumer):
    marker: Path

    async def between_ack_and_commit(self, msgs: list[Msg]) -> None:
        write_marker(self.marker, "acked-not-committed", msgs)
        await asyncio.Event().wait()  # never commits: the test kills this process here


async def main(args: argparse.Namespace) -> None:
    db = Database(args.dsn, schema=args.schema, min_size=1, max_size=2)
    await db.open()
    nc = await connect_nats(args.nats, f"test-consumer-{os.getpid()}")
    cls = BrokenStopsAfterAck if args.variant == "ack-before-commit" else StopsAfterCommit
    consumer = cls(db, nc, nc.jetstream(timeout=5.0), effect_subscription(args.durable))
    consumer.marker = Path(args.marker)
    print(f"consumer {args.variant} pid {os.getpid()} started", flush=True)
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
    parser.add_argument("--marker", required=True)
    parser.add_argument("--variant", choices=["correct", "ack-before-commit"], default="correct")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main(parser.parse_args()))
