"""``his bench``: every suite in one run, written as a Markdown and a JSON report.

1. ``backbone`` on its private PostgreSQL and NATS (the system's durability settings): the
   relay and consumer against raw JetStream publishing and pull consuming, writes with and
   without the outbox;
2. ``his up`` to healthy: a first start on a new data directory (creates PostgreSQL, the
   certificates, the schemas), then ``starts`` restarts on the same directory (a warm
   install), each timed from the command to "his is up"; the last one stays up for:
3. resident memory of every process of the hospital, idle after the start;
4. ``booking`` and the patient read (``reads``), each against its bare ASGI baseline, with the
   raw baselines (asyncpg INSERT and SELECT, the bare endpoint plain, + INSERT, + SELECT);
5. resident memory again, after that load.

Nothing here is measured twice: each suite's own module measures, this one only runs them in
order and gathers their results (``full_report`` turns them into rows and Markdown).
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import uvloop
from rich.console import Console

from his.benchmarks import backbone, booking, full_report, reads
from his.benchmarks.booking import BookingConfig
from his.benchmarks.common import BenchConfig
from his.benchmarks.full_report import BookingSuite, FullReport, Startup, SuiteFailed
from his.benchmarks.harness import BenchmarkError, Servers, machine
from his.benchmarks.hospital import RAISED_LIMITS, CpuLedger, PrivateHospital, quiesce, rss_mb
from his.benchmarks.reads import ReadConfig
from his.infra.procs import ServerStartError

R = TypeVar("R")


@dataclass(frozen=True)
class FullConfig:
    backbone: BenchConfig = field(default_factory=BenchConfig)
    booking: BookingConfig = field(default_factory=BookingConfig)
    reads: ReadConfig = field(default_factory=ReadConfig)
    #: Timed restarts of ``his up`` on a warm install (after the first, cold start).
    starts: int = 3
    mode: str = "full"

    @classmethod
    def quick(cls) -> FullConfig:
        """A few minutes: every suite's quick sizes."""
        return cls(BenchConfig.quick(), BookingConfig.quick(), ReadConfig.quick(), starts=2, mode="quick")

    @classmethod
    def tiny(cls) -> FullConfig:
        """For the smoke test: every section once, minimal sizes, no warm restart (its row shows n/a)."""
        return cls(BenchConfig.tiny(), BookingConfig.tiny(), ReadConfig.tiny(), starts=0, mode="tiny")


def time_starts(hospital: PrivateHospital, starts: int, say: Callable[[str], None]) -> Startup:
    """A cold start, then ``starts`` warm ones; the hospital is left up after the last.

    With each start's wall time goes the CPU time its processes had used by then (each
    service, the gateway, PostgreSQL, NATS, and the supervisor with the children it waited
    for): on a machine with few cores that, not waiting, is what bounds the start."""
    walls: list[float] = []
    cpu: list[dict[str, float]] = []
    for n in range(starts + 1):
        if n:
            hospital.stop()
        hospital.start()
        walls.append(hospital.started_in)
        cpu.append(CpuLedger(hospital.processes()).sample())
        say(
            f"his up ({'warm restart' if n else 'new data directory'}) healthy in {walls[-1]:.1f}s, "
            f"{sum(cpu[-1].values()):.1f} CPU-s"
        )
    warm = walls[1:]
    return {
        "cold_s": walls[0],
        "warm_s": warm,
        "warm_min_s": min(warm, default=math.nan),
        "warm_median_s": statistics.median(warm) if warm else math.nan,
        "cpu_s": [sum(c.values()) for c in cpu],
        "cpu_s_by_process": cpu[-1],
    }


def run(cfg: FullConfig, *, say: Callable[[str], None], workdir: Path | None = None, keep: bool = False) -> FullReport:
    """Run every suite; returns the report (``full_report.write`` turns it into files)."""
    started = time.perf_counter()
    started_at, machine_now = datetime.now(UTC).isoformat(timespec="seconds"), machine()
    say("backbone: relay, consumer and writes against raw JetStream and PostgreSQL")
    backbone_report = attempt(lambda: backbone.run(cfg.backbone, say=say, workdir=workdir, keep=keep), say)
    hospital = PrivateHospital(Servers.make_workdir(workdir))
    say(f"starting a private hospital (his up) in {hospital.workdir}")
    try:
        startup = time_starts(hospital, cfg.starts, say)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            idle = runner.run(idle_rss(hospital, cfg.booking.quiesce_seconds))
            say("booking through the gateway against a bare ASGI INSERT")

            def booked() -> BookingSuite:
                return {"results": runner.run(booking.measure_all(hospital, cfg.booking, say))}

            booking_suite = attempt(booked, say)
            reads_results = attempt(lambda: runner.run(reads.measure(hospital, cfg.reads, say)), say)
            after_load = rss_mb(hospital.processes())
    finally:
        hospital.stop()
        if not keep:
            Servers(hospital.workdir).remove()
    return {
        "benchmark": "all",
        "mode": cfg.mode,
        "started_at": started_at,
        "config": asdict(cfg),
        "machine": machine_now,
        "hospital": {"gateway_limits_raised": RAISED_LIMITS, "synchronous_commit": "on"},
        "backbone": backbone_report,
        "startup": startup,
        "rss_mb": {"idle": idle, "after_load": after_load},
        "booking": booking_suite,
        "reads": reads_results,
        "seconds": time.perf_counter() - started,
    }


def attempt(suite: Callable[[], R], say: Callable[[str], None]) -> R | SuiteFailed:
    """One suite's report; a suite that could not measure validly (an operation failed or timed
    out, e.g. on an overloaded machine) is recorded as failed, and the other suites still run."""
    try:
        return suite()
    except BenchmarkError as exc:
        say(f"[bold red]suite failed:[/] {exc}")
        return {"results": {}, "failed": str(exc)}


async def idle_rss(hospital: PrivateHospital, settle: float = 10.0) -> dict[str, float]:
    """Resident memory once the start-up's work (migrations, first connections) has settled, or
    after ``settle`` seconds (the smoke test's tiny mode waits one: its figures are no measurement)."""
    await quiesce(CpuLedger(hospital.processes()), settle)
    return rss_mb(hospital.processes())


def main(cfg: FullConfig, *, out_dir: Path, out: Console, err: Console, workdir: Path | None, keep: bool) -> int:
    """Entry point of ``his bench``: runs every suite, writes the report, prints it and its paths.
    Exit 1 if a figure is invalid (a request failed), never because a target was missed."""

    def say(line: str) -> None:
        err.print(f"[dim]· {line}[/]")

    try:
        rep = run(cfg, say=say, workdir=workdir, keep=keep)
    except (BenchmarkError, ServerStartError) as exc:
        err.print(f"[bold red]benchmark failed:[/] {exc}")
        return 1
    md, js = full_report.write(rep, out_dir)
    out.print(md.read_text(), markup=False)
    err.print(f"report written: {md} and {js}")
    for e in full_report.errors(rep):
        err.print(f"[bold red]invalid:[/] {e}")
    return 1 if full_report.errors(rep) else 0
