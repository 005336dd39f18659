"""Reading a patient through the gateway, against a bare ASGI endpoint doing one SELECT.

On a private hospital that is already up (``hospital``), it seeds receptionists and patients
through the public API, starts the baseline process (``bare``) on the same PostgreSQL, and
measures:

1. raw baselines in the same run: asyncpg INSERT and SELECT by primary key straight to the
   hospital's PostgreSQL, and the bare endpoint plain, with one INSERT, with one SELECT;
2. throughput (closed loop): ``users`` clerks reading patients back to back through the
   gateway (``GET /api/patients/{id}``, a valid token), straight to patients' internal
   listener (for the breakdown), and from the bare endpoint (``GET /patients/{id}``: the same
   row by primary key, no framework, no token check, no audit), in rotating rounds, with the
   CPU per request of every process read from ``/proc``;
3. latency at a constant arrival rate, timed from each request's intended start (no
   coordinated omission), through the gateway and from the baseline.

Every answer is checked: 200 with the asked patient's id; anything else is an error that
invalidates the figure.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import secrets
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NotRequired, TypedDict, final
from urllib.parse import urlsplit

import asyncpg
import httpx
import uvloop
from rich.console import Console
from rich.table import Table

from his.benchmarks import bare
from his.benchmarks.booking import queue_grew, start_baseline
from his.benchmarks.harness import (
    BenchmarkError,
    CpuWatch,
    DiskProbe,
    Latencies,
    Machine,
    Noise,
    Op,
    Servers,
    closed_loop,
    machine,
    noise,
    open_loop,
)
from his.benchmarks.hospital import ADMIN_EMAIL, CpuLedger, PrivateHospital, quiesce
from his.benchmarks.report import Row, num, ratio_of, wide
from his.benchmarks.seed import call, desk, limited, patient, text
from his.benchmarks.wire import Pool
from his.infra.procs import ServerStartError
from his.kernel.json import JsonMapping, object_of

TIMEOUT = 30.0
#: Closed-loop targets: the system's two paths, then the raw baselines.
TARGETS = ("read", "direct", "select", "plain", "insert")
RATIO_TARGET = 0.5


@dataclass(frozen=True)
class ReadConfig:
    users: int = 50
    desks: int = 4
    patients: int = 200
    #: Seconds of closed-loop load per target (split in ``rounds``), and of open-loop load per rate.
    seconds: float = 8.0
    rounds: int = 4
    rate: float = 200.0
    warmup_seconds: float = 1.0
    #: asyncpg's own INSERT and SELECT rates: seconds each, on ``connections`` connections.
    raw_seconds: float = 2.0
    connections: int = 8
    #: At most this long before each measured phase, waiting for the hospital to go idle.
    quiesce_seconds: float = 10.0

    @classmethod
    def quick(cls) -> ReadConfig:
        return cls(desks=2, patients=60, seconds=3.0, rounds=2, raw_seconds=1.0, warmup_seconds=0.5)

    @classmethod
    def tiny(cls) -> ReadConfig:
        return cls(
            users=8,
            desks=1,
            patients=8,
            seconds=0.6,
            rounds=1,
            rate=50.0,
            warmup_seconds=0.2,
            raw_seconds=0.3,
            connections=4,
            quiesce_seconds=1.0,  # its figures are no measurement: a phase may overlap the last one's events
        )


class ReadSeed(TypedDict):
    desks: int
    patients: int
    seconds: float


class RawDb(TypedDict):
    """asyncpg alone on the hospital's PostgreSQL: INSERTs and SELECTs per second."""

    connections: int
    insert_per_s: float
    select_per_s: float


class ReadThroughput(TypedDict):
    """Reads back to back, by target (read, direct, select, plain, insert), over the rounds."""

    users: int
    per_s: dict[str, float]
    rounds: dict[str, list[float]]
    ratio: float
    direct_ratio: float
    #: By target (read, direct, select), each process's CPU milliseconds per request.
    cpu_ms_per_request: dict[str, dict[str, float]]


class ReadCell(TypedDict):
    latency: dict[str, float]
    failed: int
    generator_lag_max_ms: float
    queue_grew: bool


class ReadLatency(TypedDict):
    """Reads through the gateway and from the baseline at one constant rate."""

    rate_per_s: float
    seconds: float
    read: ReadCell
    select: ReadCell


class RateLowered(TypedDict, total=False):
    """Why the latency ran below the configured rate, if it did."""

    rate_lowered: str


@final
class ReadResults(TypedDict):
    """What ``measure`` measured (``his bench`` keeps it under ``reads``)."""

    config: JsonMapping
    seed: ReadSeed
    raw_db: RawDb
    throughput: ReadThroughput
    rate_lowered: NotRequired[str]
    latency: ReadLatency
    cpu: dict[str, Noise]
    #: By target, how many answers had each HTTP status.
    statuses: dict[str, dict[int, int]]
    errors: list[str]


@final
class ReadsReport(TypedDict):
    """What ``his bench reads --json`` prints."""

    benchmark: str
    machine: Machine
    seconds: float
    results: ReadResults


@dataclass
class ReadTarget:
    """Where requests go and what came back; ``request(i)`` is the i-th (method, path, body, headers)."""

    name: str
    pool: Pool
    request: Callable[[int], tuple[str, str, bytes, bytes]]
    check: Callable[[int, int, bytes], bool]
    statuses: Counter[int] = field(default_factory=Counter)
    next: Callable[[], int] = field(default_factory=lambda: itertools.count().__next__)

    async def once(self) -> None:
        i = self.next()
        try:
            async with asyncio.timeout(TIMEOUT):
                status, payload = await self.pool.request(*self.request(i))
        except Exception:
            await asyncio.sleep(0.01)  # a closed loop must not spin on a failure that repeats at once
            raise
        self.statuses[status] += 1
        if not self.check(i, status, payload):
            raise BenchmarkError(f"{self.name}: {status} {payload[:160].decode(errors='replace')}")

    def timed(self, samples: Latencies) -> Op:
        async def op(_: int, intended: float) -> None:
            await self.once()
            samples.add(time.perf_counter() - intended)

        return op


def is_patient(patients: list[str]) -> Callable[[int, int, bytes], bool]:
    def check(i: int, status: int, payload: bytes) -> bool:
        try:
            return status == 200 and object_of(json.loads(payload)).get("id") == patients[i % len(patients)]
        except ValueError:
            return False

    return check


def reader(path: str, patients: list[str], headers: list[bytes]) -> Callable[[int], tuple[str, str, bytes, bytes]]:
    """GET ``path`` + the i-th patient's id, with the i-th desk's token (desks take turns)."""
    return lambda i: ("GET", f"{path}/{patients[i % len(patients)]}", b"", headers[i % len(headers)])


async def seed_readers(hospital: PrivateHospital, cfg: ReadConfig) -> tuple[list[str], list[str], ReadSeed]:
    """Receptionist accounts (signed in) and patients, through the gateway: (tokens, patient ids, facts)."""
    tag, started = secrets.token_hex(3), time.perf_counter()
    async with httpx.AsyncClient(base_url=hospital.gateway, timeout=60) as client:
        login = {"email": ADMIN_EMAIL, "password": hospital.password}
        admin = text(await call(client, "", "/api/auth/login", login), "access_token")
        tokens = await limited(list(range(cfg.desks)), lambda n: desk(client, admin, 1000 + n, tag), 4)
        pats = await limited(
            list(range(cfg.patients)), lambda n: patient(client, tokens[n % cfg.desks], n, "Reader"), 8
        )
    return tokens, pats, {"desks": cfg.desks, "patients": cfg.patients, "seconds": time.perf_counter() - started}


async def raw_database(dsn: str, patients: list[str], cfg: ReadConfig) -> RawDb:
    """asyncpg alone: one-row INSERTs (each its own commit, synchronous_commit=on) and SELECTs by
    primary key, ``connections`` at once, back to back."""
    pool = await asyncpg.create_pool(
        dsn, min_size=cfg.connections, max_size=cfg.connections, server_settings={"synchronous_commit": "on"}
    )
    ids = [uuid.UUID(p) for p in patients]
    count = itertools.count()
    now = datetime.now(UTC)

    async def insert() -> None:
        await pool.execute(bare.INSERT, uuid.uuid4(), ids[0], ids[0], "consultation", now, now)

    async def select() -> None:
        if await pool.fetchrow(bare.PATIENT_SELECT, ids[next(count) % len(ids)]) is None:
            raise BenchmarkError("raw SELECT found no patient")

    per_s: dict[str, float] = {}
    try:
        for name, op in (("insert", insert), ("select", select)):
            result = await closed_loop(cfg.connections, cfg.raw_seconds, op)
            if result.failed:
                raise BenchmarkError(f"raw asyncpg {name}: {result.errors[:2]}")
            per_s[name] = result.per_second
    finally:
        await pool.close()
    return {"connections": cfg.connections, "insert_per_s": per_s["insert"], "select_per_s": per_s["select"]}


@dataclass
class Reads:
    cfg: ReadConfig
    hospital: PrivateHospital
    targets: dict[str, ReadTarget]
    ledger: CpuLedger
    say: Callable[[str], None]
    errors: list[str] = field(default_factory=list)

    def failed(self, what: str, errors: list[str], count: int) -> None:
        if count:
            self.errors.append(f"{what}: {count} failed, e.g. {errors[:2]}")

    async def throughput(self) -> ReadThroughput:
        cfg = self.cfg
        slice_s = cfg.seconds / cfg.rounds
        rates: dict[str, list[float]] = {t: [] for t in TARGETS}
        cpu: dict[str, Counter[str]] = {t: Counter() for t in TARGETS}
        done: Counter[str] = Counter()
        self.say(f"patient read: {cfg.users} users back to back, {cfg.rounds} rounds of {slice_s:g}s per target")
        for r in range(cfg.rounds):
            for name in TARGETS[r % len(TARGETS) :] + TARGETS[: r % len(TARGETS)]:
                await quiesce(self.ledger, self.cfg.quiesce_seconds)
                before = self.ledger.sample()
                result = await closed_loop(cfg.users, slice_s, self.targets[name].once)
                cpu[name].update(CpuLedger.delta(before, self.ledger.sample()))
                done[name] += result.done
                self.failed(f"throughput {name}", result.errors, result.failed)
                rates[name].append(result.per_second)
        per_s = {t: statistics.median(v) for t, v in rates.items()}
        return {
            "users": cfg.users,
            "per_s": per_s,
            "rounds": rates,
            "ratio": statistics.median(a / b for a, b in zip(rates["read"], rates["select"], strict=True) if b),
            "direct_ratio": statistics.median(
                a / b for a, b in zip(rates["direct"], rates["select"], strict=True) if b
            ),
            "cpu_ms_per_request": {
                t: {p: s * 1000.0 / done[t] for p, s in cpu[t].items()} for t in ("read", "direct", "select") if done[t]
            },
        }

    async def latency(self, rate: float) -> ReadLatency:
        cells: dict[str, ReadCell] = {}
        for name in ("read", "select"):
            self.say(f"patient read latency: {rate:g} {name} requests/s for {self.cfg.seconds:g}s (open model)")
            await quiesce(self.ledger, self.cfg.quiesce_seconds)
            samples = Latencies()
            result = await open_loop(rate, self.cfg.seconds, self.targets[name].timed(samples))
            self.failed(f"latency {name} at {rate:g}/s", result.errors, result.failed)
            cells[name] = {
                "latency": samples.summary(),
                "failed": result.failed,
                "generator_lag_max_ms": result.lag_max_ms,
                "queue_grew": queue_grew(samples.samples),
            }
        return {"rate_per_s": rate, "seconds": self.cfg.seconds, "read": cells["read"], "select": cells["select"]}


def targets(hospital: PrivateHospital, port: int, tokens: list[str], patients: list[str]) -> dict[str, ReadTarget]:
    headers = [f"authorization: Bearer {t}\r\n".encode() for t in tokens]
    check = is_patient(patients)
    svc = urlsplit(hospital.service_url("patients"))
    tls = hospital.workload("gateway").client_context()  # as the gateway calls it
    body = json.dumps(
        {
            "patient_id": patients[0],
            "practitioner_id": patients[0],
            "service": "consultation",
            "start": "2030-01-01T09:00:00+00:00",
            "end": "2030-01-01T09:20:00+00:00",
        }
    ).encode()
    post = b"content-type: application/json\r\n"
    return {
        "read": ReadTarget("read", Pool("127.0.0.1", hospital.port), reader("/api/patients", patients, headers), check),
        "direct": ReadTarget(
            "direct",
            Pool(svc.hostname or "127.0.0.1", svc.port or 0, tls),
            reader("/patients", patients, headers),
            check,
        ),
        "select": ReadTarget("select", Pool("127.0.0.1", port), reader("/patients", patients, [b""]), check),
        "plain": ReadTarget(
            "plain",
            Pool("127.0.0.1", port),
            lambda _: ("GET", "/plain", b"", b""),
            lambda _, status, payload: status == 200 and payload == bare.PLAIN,
        ),
        "insert": ReadTarget(
            "insert",
            Pool("127.0.0.1", port),
            lambda _: ("POST", "/bookings", body, post),
            lambda _, status, payload: status == 201,
        ),
    }


async def measure(hospital: PrivateHospital, cfg: ReadConfig, say: Callable[[str], None]) -> ReadResults:
    """Seed, start the baseline, measure; the hospital stays up (the caller stops it)."""
    say(f"patient read: seeding {cfg.desks} desks and {cfg.patients} patients through the gateway")
    tokens, patients, seeded = await seed_readers(hospital, cfg)
    baseline, port = await start_baseline(hospital, hospital.workdir)
    ts = targets(hospital, port, tokens, patients)
    roots = {**hospital.processes(), "baseline": baseline.pid, "load generator": os.getpid()}
    run = Reads(cfg, hospital, ts, CpuLedger(roots), say)
    try:
        return await _phases(run, patients, seeded)
    finally:
        for t in ts.values():
            await t.pool.close()
        baseline.stop(timeout=10)


async def _phases(run: Reads, patients: list[str], seeded: ReadSeed) -> ReadResults:
    cfg = run.cfg
    say = run.say
    say(f"raw asyncpg INSERT and SELECT, {cfg.connections} connections, {cfg.raw_seconds:g}s each")
    raw_db = await raw_database(run.hospital.admin_dsn, patients, cfg)
    for t in run.targets.values():
        await t.pool.warm(min(cfg.users, 64))
        warm = await closed_loop(cfg.users, cfg.warmup_seconds, t.once)
        run.failed(f"warm-up {t.name}", warm.errors, warm.failed)
    parts: dict[str, Noise] = {}
    watch = CpuWatch()
    with DiskProbe(run.hospital.workdir) as disk:
        watch.lap()
        disk.lap()
        throughput = await run.throughput()
        parts["patient read throughput"] = noise(watch.lap(), disk.lap())
        capacity = throughput["per_s"]["read"]
        rate = cfg.rate if capacity >= cfg.rate else float(max(1, round(capacity / 2)))
        lowered: RateLowered = {}
        if rate != cfg.rate:
            lowered["rate_lowered"] = f"{cfg.rate:g}/s is above the measured capacity ({capacity:,.0f}/s): run at half"
        latency = await run.latency(rate)
        parts[f"patient read latency {rate:g}/s"] = noise(watch.lap(), disk.lap())
    return {
        "config": asdict(cfg),
        "seed": seeded,
        "raw_db": raw_db,
        "throughput": throughput,
        **lowered,
        "latency": latency,
        "cpu": parts,
        "statuses": {name: dict(t.statuses) for name, t in run.targets.items()},
        "errors": run.errors,
    }


def rows(res: ReadResults) -> list[Row]:
    """The patient read's figures: throughput ratio (target ≥ 0.5) and latency at a constant rate."""
    out: list[Row] = []
    tp = res.get("throughput")
    if tp:
        per_s = tp["per_s"]
        out.append(
            Row(
                f"patient reads/s, {tp['users']} users (gateway → patients → DB + audit)",
                per_s["read"],
                per_s["select"],
                " req/s",
                tp["ratio"],
                (RATIO_TARGET, RATIO_TARGET),
            )
        )
        out.append(
            Row(
                "  same, straight to patients (no gateway; for the breakdown)",
                per_s["direct"],
                per_s["select"],
                " req/s",
                tp["direct_ratio"],
            )
        )
    lat = res.get("latency")
    if lat:
        rate = lat["rate_per_s"]
        for p in ("p50", "p95", "p99", "p99.9"):
            m = lat["read"]["latency"].get(f"{p}_ms", float("nan"))
            b = lat["select"]["latency"].get(f"{p}_ms", float("nan"))
            out.append(
                Row(f"patient read latency {p} at a constant {rate:g}/s", m, b, " ms", ratio_of(m, b), kind="max")
            )
    return out


def raw_rows(res: ReadResults) -> list[Row]:
    """The raw baselines this suite measured (no target; the denominators of the ratios)."""
    out: list[Row] = []
    db = res.get("raw_db")
    if db:
        n = db["connections"]
        out.append(Row(f"asyncpg INSERT + commit, {n} connections", db["insert_per_s"], None, " /s", None))
        out.append(Row(f"asyncpg SELECT by primary key, {n} connections", db["select_per_s"], None, " /s", None))
    tp = res.get("throughput")
    if tp:
        per_s, users = tp["per_s"], tp["users"]
        for key, what in (("plain", "plain JSON"), ("insert", "+ one INSERT"), ("select", "+ one SELECT")):
            out.append(Row(f"bare ASGI endpoint, {what}, {users} users", per_s[key], None, " req/s", None))
    return out


def run_alone(
    cfg: ReadConfig, *, say: Callable[[str], None], workdir: Path | None = None, keep: bool = False
) -> ReadsReport:
    """``his bench reads``: start a private hospital, measure the patient read, stop it."""
    started = time.perf_counter()
    hospital = PrivateHospital(Servers.make_workdir(workdir))
    say(f"starting a private hospital (his up) in {hospital.workdir}")
    try:
        hospital.start()
        say(f"his is up in {hospital.started_in:.1f}s; gateway on {hospital.gateway}")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results = runner.run(measure(hospital, cfg, say))
    finally:
        hospital.stop()
        if not keep:
            Servers(hospital.workdir).remove()
    return {"benchmark": "reads", "machine": machine(), "seconds": time.perf_counter() - started, "results": results}


def render_alone(console: Console, report: ReadsReport) -> None:
    """The figures and where a read's CPU goes, as tables."""
    res = report["results"]
    with wide(console):
        table = Table(title="his bench reads — a patient read against a bare ASGI endpoint doing one SELECT")
        for col in ("figure", "measured", "baseline", "ratio"):
            table.add_column(col, justify="left" if col == "figure" else "right")
        for r in (*rows(res), *raw_rows(res)):
            ratio = "" if r.ratio is None or math.isnan(r.ratio) else f"{r.ratio:.2f}"
            table.add_row(r.figure, num(r.measured, r.unit, 1), num(r.baseline, r.unit, 1), ratio)
        console.print(table)
        per = res.get("throughput", {}).get("cpu_ms_per_request", {})
        cols = [c for c in ("read", "direct", "select") if c in per]
        cpu = Table(title="CPU per request (ms), every process, over the throughput rounds (from /proc)")
        cpu.add_column("process")
        for c in cols:
            cpu.add_column(c, justify="right")
        for name in sorted({n for c in cols for n in per[c]}, key=lambda n: -per.get("read", {}).get(n, 0.0)):
            values = [per[c].get(name, 0.0) for c in cols]
            if max(values) >= 0.005:
                cpu.add_row(name, *(f"{v:.2f}" for v in values))
        cpu.add_row("[bold]total[/]", *(f"{sum(per[c].values()):.2f}" for c in cols))
        console.print(cpu)


def main(cfg: ReadConfig, *, as_json: bool, out: Console, err: Console, workdir: Path | None, keep: bool) -> int:
    """Entry point of ``his bench reads``: prints the tables (or JSON); 1 if a figure is invalid."""
    try:
        report = run_alone(cfg, say=lambda line: err.print(f"[dim]· {line}[/]"), workdir=workdir, keep=keep)
    except (BenchmarkError, ServerStartError) as exc:
        err.print(f"[bold red]benchmark failed:[/] {exc}")
        return 1
    if as_json:
        out.print_json(json.dumps(report))
    else:
        render_alone(out, report)
    for e in report["results"]["errors"]:
        err.print(f"[bold red]invalid:[/] {e}")
    return 1 if report["results"]["errors"] else 0
