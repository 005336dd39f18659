"""``his bench backbone``: the event backbone measured against raw baselines, in one run.

1. latency: commit → PubAck of the real ``OutboxRelay`` under a constant 1,000 writes/s, next
   to the same writes without outbox rows each followed by ``publish_async`` (a dual write);
2. drain: the relay emptying a pre-filled outbox, next to raw pipelined ``publish_async``;
3. consumer: the real ``ConsumerLoop`` (inbox + one INSERT per event), next to a raw pull
   consumer doing the same INSERTs in one transaction per fetch, then acking;
4. writes: unit-of-work transactions with and without their outbox rows, and with the relay's
   wake-up (in-process, or a coalesced NOTIFY) against none, at 8 and 32 writers.

Every operation is checked before it counts: writes must commit, PubAcks must name the stream
and not be duplicates, consumed events must have their effect rows. The servers are private,
started in a temporary directory with the system's own durability settings. Each measurement
lives in its own module (``relay``, ``inbox``, ``writes``); this one runs them and reports.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import nats
import uvloop
from rich.console import Console

from his.benchmarks.common import (
    SERVICE,
    STREAM,
    Bench,
    BenchConfig,
    bench_events,
)
from his.benchmarks.harness import (
    BenchmarkError,
    CpuWatch,
    DiskProbe,
    Noise,
    Servers,
    TimedJetStream,
    machine,
    noise,
)
from his.benchmarks.inbox import measure_consumer
from his.benchmarks.relay import measure_drain, measure_latency
from his.benchmarks.report import BackboneReport, BackboneResults, render, rows
from his.benchmarks.writes import measure_writes
from his.infra.procs import ServerStartError
from his.kernel import streams

T = TypeVar("T")


async def measure_all(servers: Servers, cfg: BenchConfig, say: Callable[[str], None]) -> BackboneResults:
    facts = await servers.prepare()
    nc = await nats.connect(servers.nats_url, name="his-bench", pending_size=64 * 1024 * 1024)
    try:
        v = nc.connected_server_version
        facts["nats_server"] = f"{v.major}.{v.minor}.{v.patch}"
        js = TimedJetStream(nc, stream=STREAM)
        await streams.declare(js, [SERVICE])
        b = Bench(servers.dsn, nc, js, cfg, say)
        with bench_events():
            parts: dict[str, Noise] = {}
            watch = CpuWatch()
            with DiskProbe(servers.workdir) as disk:

                async def part(name: str, measure: Callable[[Bench], Awaitable[T]]) -> T:
                    watch.lap()
                    disk.lap()
                    result = await measure(b)
                    parts[name] = noise(watch.lap(), disk.lap())
                    return result

                latency = await part("latency", measure_latency)
                drain = await part("drain", measure_drain)
                consumer = await part("consumer", measure_consumer)
                writes = await part("writes", measure_writes)
            return {
                "servers": facts,
                "latency": latency,
                "drain": drain,
                "consumer": consumer,
                "writes": writes,
                "cpu": parts,
            }
    finally:
        gc.unfreeze()
        await nc.close()


def run(
    cfg: BenchConfig, *, say: Callable[[str], None], workdir: Path | None = None, keep: bool = False
) -> BackboneReport:
    """Start private servers, measure everything, stop the servers; returns the report."""
    started = time.perf_counter()
    servers = Servers(Servers.make_workdir(workdir))
    say(f"starting PostgreSQL and NATS JetStream in {servers.workdir}")
    try:
        servers.start()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results = runner.run(measure_all(servers, cfg, say))
    finally:
        servers.stop()
        if not keep:
            servers.remove()
    return {
        "benchmark": "backbone",
        "config": asdict(cfg),
        "machine": machine(),
        "seconds": time.perf_counter() - started,
        "results": results,
        "rows": [r.as_dict() for r in rows(results)],
    }


def main(*, quick: bool, as_json: bool, out: Console, err: Console, workdir: Path | None, keep: bool) -> int:
    """Entry point of ``his bench backbone``: prints the table (or JSON); 1 if a measurement failed."""
    cfg = BenchConfig.quick() if quick else BenchConfig()

    def say(line: str) -> None:
        err.print(f"[dim]· {line}[/]")

    try:
        report = run(cfg, say=say, workdir=workdir, keep=keep)
    except (BenchmarkError, ServerStartError) as exc:
        err.print(f"[bold red]benchmark failed:[/] {exc}")
        return 1
    if as_json:
        out.print_json(json.dumps(report))
    else:
        render(out, report)
    return 0
