"""An outbox relay in its own OS process, so that a test can SIGKILL it.

    python -m tests.reliability.procs.relay_proc --dsn DSN --schema SCHEMA --nats URL
        [--variant correct|no-msg-id] [--crash-before-mark] [--batch-size N]

``--variant`` picks the kernel's relay or a deliberately broken one (tests/reliability/broken.py).
``--crash-before-mark`` makes the process SIGKILL itself after a batch's PubAcks arrived and
before the rows are marked published. SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import Any

from nats.js.api import PubAck
from nats.js.client import JetStreamContext

from his.kernel.db import Connection, OutboxSignal, outbox_channel
from his.kernel.outbox import OutboxRelay
from his.kernel.service import connect_nats
from tests.reliability.broken import RELAY_VARIANTS


def crashing_before_mark(base: type[OutboxRelay]) -> type[OutboxRelay]:
    class CrashBeforeMark(base):  # type: ignore[valid-type,misc]
        async def mark(self, conn: Connection, ids: list[int]) -> None:
            print(f"CRASH-BEFORE-MARK: {len(ids)} rows have their PubAck and are not marked", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    return CrashBeforeMark


class CountingJetStream:
    """Passes publishes through and counts their PubAcks (and those flagged duplicate).

    Every hundredth PubAck is reported on stdout, so a test can tell from the log of a killed
    relay that it had been publishing.
    """

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self.acks = 0
        self.duplicates = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def publish_async(self, *args: Any, **kw: Any) -> asyncio.Future[PubAck]:
        fut = await self._js.publish_async(*args, **kw)
        fut.add_done_callback(self._count)
        return fut

    async def publish(self, *args: Any, **kw: Any) -> PubAck:
        ack = await self._js.publish(*args, **kw)
        self._counted(ack)
        return ack

    def _count(self, fut: asyncio.Future[PubAck]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._counted(fut.result())

    def _counted(self, ack: PubAck) -> None:
        self.acks += 1
        if ack.duplicate:
            self.duplicates += 1
        if self.acks % 100 == 0:
            print(f"PUBACKS {self.acks}", flush=True)


async def main(args: argparse.Namespace) -> None:
    nc = await connect_nats(args.nats, f"test-relay-{os.getpid()}")
    cls = RELAY_VARIANTS[args.variant]
    if args.crash_before_mark:
        cls = crashing_before_mark(cls)
    js = CountingJetStream(nc.jetstream(timeout=5.0))
    relay = cls(
        args.dsn,
        js,  # type: ignore[arg-type]
        schema=args.schema,
        signal=OutboxSignal(outbox_channel(args.schema)),
        batch_size=args.batch_size,
        poll_seconds=0.1,
        standby_retry=0.05,
    )
    task = asyncio.create_task(relay.run())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    print(f"relay {args.variant} pid {os.getpid()} started", flush=True)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        print(f"relay stopping: published {relay.stats.published} duplicates {js.duplicates}", flush=True)
        await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--variant", choices=sorted(RELAY_VARIANTS), default="correct")
    parser.add_argument("--crash-before-mark", action="store_true")
    parser.add_argument("--batch-size", type=int, default=1000)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main(parser.parse_args()))
