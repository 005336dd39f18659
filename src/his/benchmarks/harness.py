"""Measuring tools shared by the benchmarks: private servers, load shapes, latency records.

- ``Servers`` starts a private PostgreSQL and NATS JetStream with the system's own start code
  (so with ``synchronous_commit=on`` and ``sync_interval: always``) in a temporary directory.
- ``open_loop`` drives a constant arrival rate (open model): operation *i* is started at its
  intended time whether or not earlier ones finished, and its latency is counted from that
  intended time, so a stall is charged to every operation it delayed (no coordinated omission).
- ``closed_loop`` runs N workers back to back, for throughput.
- ``TimedJetStream`` is a JetStream context that notes when each PubAck arrives and checks it.
- ``Latencies`` keeps every sample, so percentiles are exact (a full histogram, not a sketch).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NotRequired, TypedDict

import asyncpg
from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.client import JetStreamContext

from his.infra import nats as nats_infra
from his.infra import postgres as pg_infra
from his.infra.procs import ManagedProcess
from his.kernel import safety
from his.kernel.db import kernel_tables_sql
from his.kernel.migrations import ensure_database

PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


class BenchmarkError(RuntimeError):
    """A benchmark could not be measured validly (an operation failed or was not confirmed)."""


#: One operation of an open loop: ``op(i, intended_start)``, a coroutine the loop makes a task of.
Op = Callable[[int, float], Coroutine[object, None, None]]


class ServerFacts(TypedDict):
    """The private servers a backbone run measured on (``nats_server`` once connected)."""

    postgresql: str
    durability_checked: bool
    nats_server: NotRequired[str]


class CpuLap(TypedDict):
    """CPU during one part of a run: wall seconds, and shares of all cores (``CpuWatch.lap``)."""

    seconds: float
    our_cpu_share: float
    other_cpu_share: float
    steal_share: float


class DiskLap(TypedDict, total=False):
    """fsync latency of the disk probe during one part, in ms (none when it took no sample)."""

    fsync_p50_ms: float
    fsync_p99_ms: float
    fsync_max_ms: float


class Noise(CpuLap, DiskLap):
    """How busy the machine and its disk were during one part of a run."""


def noise(cpu: CpuLap, disk: DiskLap) -> Noise:
    """A part's CPU and disk laps in one record, CPU first."""
    return {**cpu, **disk}


class Machine(TypedDict):
    """The machine a run measured on (``machine``)."""

    cpus: int | None
    cpu_model: str
    memory_gb: float
    platform: str
    python: str


@dataclass
class Servers:
    """A private PostgreSQL and NATS JetStream in a temporary directory, with the system's settings."""

    workdir: Path
    pg_proc: ManagedProcess | None = None
    nats_proc: ManagedProcess | None = None
    pg: pg_infra.PostgresLocation | None = None
    nats: nats_infra.NatsLocation | None = None

    @classmethod
    def make_workdir(cls, base: Path | None = None) -> Path:
        """A new private directory for a run's servers, under ``base`` (made if missing)."""
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="his-bench-", dir=base))
        path.chmod(0o755)  # the embedded server's system user must traverse it when run as root
        return path

    def start(self) -> None:
        self.pg_proc, self.pg = pg_infra.start(self.workdir / "pg" / "data", log_file=self.workdir / "postgres.log")
        self.nats_proc, self.nats = nats_infra.start(self.workdir / "nats", log_file=self.workdir / "nats.log")

    def stop(self) -> None:
        if self.nats_proc is not None:
            self.nats_proc.stop()
        if self.pg_proc is not None:
            pg_infra.stop(self.pg_proc)
        if self.pg is not None:
            with contextlib.suppress(OSError):
                self.pg.socket_dir.rmdir()  # the server's private socket directory, empty once stopped

    @property
    def dsn(self) -> str:
        assert self.pg is not None
        return self.pg.url()

    @property
    def nats_url(self) -> str:
        assert self.nats is not None
        return self.nats.url

    @property
    def monitor_url(self) -> str:
        assert self.nats is not None
        return f"http://{self.nats.host}:{self.nats.monitor_port}"

    async def prepare(self) -> ServerFacts:
        """Create the database and check durability the way ``his up`` does; returns server facts."""
        await ensure_database(self.dsn)
        conn = await asyncpg.connect(self.dsn)
        try:
            problems = await safety.postgres_problems(conn)
            version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        problems += safety.nats_problems(self.monitor_url)
        if problems:
            raise BenchmarkError("unsafe durability settings: " + "; ".join(problems))
        return {"postgresql": str(version), "durability_checked": True}

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


async def make_schema(dsn: str, schema: str, *extra: str) -> None:
    """A fresh schema with the kernel tables (outbox, inbox) and ``extra`` DDL."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"SET search_path TO {schema}")
        for stmt in [*kernel_tables_sql(), *extra]:
            await conn.execute(stmt)
    finally:
        await conn.close()


@dataclass
class Latencies:
    """Every sample of one latency, in seconds; summaries in milliseconds."""

    samples: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile in milliseconds."""
        if not self.samples:
            return math.nan
        ordered = sorted(self.samples)
        rank = max(1, math.ceil(p / 100.0 * len(ordered)))
        return ordered[rank - 1] * 1000.0

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {"count": 0}
        ordered = sorted(self.samples)
        out: dict[str, float] = {"count": len(ordered), "min_ms": ordered[0] * 1000.0}
        for p in PERCENTILES:
            rank = max(1, math.ceil(p / 100.0 * len(ordered)))
            out[f"p{p:g}_ms"] = ordered[rank - 1] * 1000.0
        out["max_ms"] = ordered[-1] * 1000.0
        out["mean_ms"] = statistics.fmean(ordered) * 1000.0
        return out


@dataclass
class LoadResult:
    started: int
    failed: int
    seconds: float
    lag_max_ms: float
    errors: list[str]


async def open_loop(rate: float, seconds: float, op: Op, *, first: int = 0) -> LoadResult:
    """Start ``op(i, intended_start)`` at a constant rate; wait for all; count failures."""
    total = round(rate * seconds)
    start = time.perf_counter() + 0.01
    tasks: list[asyncio.Task[None]] = []
    lag_max = 0.0
    i = 0
    while i < total:
        now = time.perf_counter()
        due = start + i / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while i < total and start + i / rate <= now:
            intended = start + i / rate
            lag_max = max(lag_max, now - intended)
            tasks.append(asyncio.create_task(op(first + i, intended)))
            i += 1
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    return LoadResult(total, len(errors), time.perf_counter() - start, lag_max * 1000.0, errors[:5])


@dataclass
class Throughput:
    done: int
    failed: int
    seconds: float
    errors: list[str]

    @property
    def per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


async def closed_loop(workers: int, seconds: float, op: Callable[[], Awaitable[None]]) -> Throughput:
    """``workers`` tasks run ``op`` back to back for ``seconds``; only completed ops count."""
    done = 0
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            try:
                await op()
            except Exception as exc:  # noqa: BLE001 - counted and reported, never counted as done
                errors.append(repr(exc))
            else:
                done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return Throughput(done, len(errors), time.perf_counter() - start, errors[:5])


class TimedJetStream(JetStreamContext):
    """A JetStream context that records, per ``Nats-Msg-Id``, when a valid PubAck arrived.

    A PubAck counts only if it names the expected stream, carries a sequence and is not a
    duplicate; anything else is recorded as a failure.
    """

    def __init__(self, nc: NATS, *, stream: str, timeout: float = 5.0) -> None:
        super().__init__(nc, timeout=timeout)
        self.stream = stream
        self.acked: dict[str, float] = {}
        self.seqs: dict[str, int] = {}
        self.failures: list[str] = []
        self.recording = False

    @contextlib.contextmanager
    def record(self) -> Iterator[dict[str, float]]:
        self.acked, self.seqs, self.failures = {}, {}, []
        self.recording = True
        try:
            yield self.acked
        finally:
            self.recording = False

    async def publish_async(  # noqa: PLR0917 - the signature of the method it wraps
        self,
        subject: str,
        payload: bytes = b"",
        wait_stall: float | None = None,
        stream: str | None = None,
        headers: dict[str, str] | None = None,
        msg_ttl: float | None = None,
    ) -> asyncio.Future[api.PubAck]:
        fut = await super().publish_async(
            subject, payload, wait_stall=wait_stall, stream=stream, headers=headers, msg_ttl=msg_ttl
        )
        if self.recording:
            msg_id = (headers or {}).get("Nats-Msg-Id", "")
            fut.add_done_callback(lambda f: self._on_ack(msg_id, f))
        return fut

    def _on_ack(self, msg_id: str, fut: asyncio.Future[api.PubAck]) -> None:
        now = time.perf_counter()
        if fut.cancelled():
            self.failures.append(f"{msg_id}: PubAck wait cancelled")
            return
        exc = fut.exception()
        if exc is not None:
            self.failures.append(f"{msg_id}: {exc!r}")
            return
        ack = fut.result()
        if ack.stream != self.stream or not ack.seq or ack.duplicate:
            self.failures.append(f"{msg_id}: unexpected PubAck {ack}")
            return
        self.acked.setdefault(msg_id, now)
        self.seqs.setdefault(msg_id, ack.seq)


def settle() -> None:
    """Collect garbage, then freeze what survives, as a service does after start-up.

    Without it a full collection walks every object the process holds — here including the
    benchmark's own prepared payloads and records — and stalls the event loop for tens of
    milliseconds, which would be charged to whichever path is being measured.
    """
    gc.collect()
    gc.freeze()


async def wait_until(check: Callable[[], bool], timeout: float, what: str, *, every: float = 0.001) -> float:
    """Poll a cheap in-process condition; returns the ``perf_counter`` time it became true."""
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            raise BenchmarkError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)
    return time.perf_counter()


class CpuWatch:
    """CPU used by this process tree (the benchmark, its PostgreSQL and NATS) and by everything else.

    The machine is shared; a run during which other processes used much CPU is a noisy run,
    and the report says so instead of hiding it.
    """

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self._start = self._sample()

    def _tree_seconds(self) -> float:
        children: dict[int, list[int]] = {}
        times: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            pid = int(entry.name)
            children.setdefault(int(fields[1]), []).append(pid)  # fields[1] is the parent pid
            times[pid] = sum(int(f) for f in fields[11:15]) / self.tick  # utime stime cutime cstime
        total, todo = 0.0, [os.getpid()]
        while todo:
            pid = todo.pop()
            total += times.get(pid, 0.0)
            todo += children.get(pid, [])
        return total

    def _sample(self) -> tuple[float, float, float, float]:
        busy = steal = 0.0
        with contextlib.suppress(OSError, ValueError, IndexError):
            v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
            busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / self.tick  # user nice system irq softirq
            steal = v[7] / self.tick  # time the hypervisor gave our virtual CPUs to someone else
        return time.perf_counter(), busy, steal, self._tree_seconds()

    def lap(self) -> CpuLap:
        """Since the previous lap: wall seconds, and shares of all cores: us, other processes, steal."""
        (t0, busy0, steal0, ours0), (t1, busy1, steal1, ours1) = self._start, self._sample()
        self._start = (t1, busy1, steal1, ours1)
        capacity = max((t1 - t0) * (os.cpu_count() or 1), 1e-9)
        ours = ours1 - ours0
        return {
            "seconds": t1 - t0,
            "our_cpu_share": ours / capacity,
            "other_cpu_share": max(0.0, (busy1 - busy0) - ours) / capacity,
            "steal_share": (steal1 - steal0) / capacity,
        }


class DiskProbe:
    """A 4 KiB write + fdatasync every 100 ms in a thread: how slow the shared disk is right now.

    Both servers fsync on every commit, so a disk that stalls (other tenants of the host) shows
    up in every figure; the probe lets a reader tell such a run from a regression. Its own load
    (10 syncs/s) is negligible next to the benchmark's thousands.
    """

    def __init__(self, directory: Path, every: float = 0.1) -> None:
        self.path = directory / "fsync-probe"
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fsync-probe", daemon=True)
        self._mark = time.perf_counter()

    def __enter__(self) -> DiskProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        block = b"\0" * 4096
        try:
            while not self._stop.wait(self.every):
                start = time.perf_counter()
                os.pwrite(fd, block, 0)
                os.fdatasync(fd)
                self.samples.append((start, time.perf_counter() - start))
        finally:
            os.close(fd)

    def lap(self) -> DiskLap:
        """fsync latency since the previous lap, in milliseconds."""
        since, self._mark = self._mark, time.perf_counter()
        lat = Latencies([d for t, d in list(self.samples) if t >= since])
        if not lat.samples:
            return {}
        return {
            "fsync_p50_ms": lat.percentile(50),
            "fsync_p99_ms": lat.percentile(99),
            "fsync_max_ms": lat.percentile(100),
        }


def machine() -> Machine:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpus": cpus,
        "cpu_model": model,
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
