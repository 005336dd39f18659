"""``his bench booking``: booking an appointment through the gateway, against a bare ASGI INSERT.

One run starts a private hospital with the real ``his up``, seeds it through the public API
(``seed``), starts the baseline process (``bare``) on the same PostgreSQL, and measures:

1. throughput: ``users`` simulated desk clerks booking back to back (closed loop) through the
   gateway, next to the same users posting the same bodies to the bare endpoint, and (for the
   breakdown) straight to scheduling's internal listener, skipping the gateway. The three take
   turns in rounds; the ratio is the median of the per-round ratios. CPU per request of every
   process is read from ``/proc`` over the same rounds.
2. latency: a constant arrival rate (open model) of bookings, each timed from its *intended*
   start, so a stall is charged to every booking it delayed; the same for the baseline. First
   at ``rate``, then at the design's aim (250/s) if the measured throughput can carry it.

Every answer is checked before it counts: 201 with ``status: booked`` and an id; anything else
(or no answer within 30 s) is an error, reported, and it invalidates the figure. At the end the
appointments and baseline rows in the database must equal the 201s counted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import uvloop
from rich.console import Console

from his.benchmarks import bare
from his.benchmarks.booking_report import (
    AimSkipped,
    BookingReport,
    BookingResults,
    BookingRunResults,
    BookingSeed,
    BookingThroughput,
    PathCell,
    RateCell,
    Verify,
    VerifyCounts,
    render,
    rows,
)
from his.benchmarks.harness import (
    BenchmarkError,
    CpuWatch,
    DiskProbe,
    Latencies,
    Noise,
    Op,
    Servers,
    closed_loop,
    machine,
    noise,
    open_loop,
)
from his.benchmarks.hospital import (
    ADMIN_EMAIL,
    RAISED_LIMITS,
    CpuLedger,
    PrivateHospital,
    quiesce,
    read_metrics,
    scrape_http_seconds,
)
from his.benchmarks.seed import Plan, seed, wait_known
from his.benchmarks.wire import Pool
from his.infra.nats import free_port
from his.infra.procs import ManagedProcess, ServerStartError
from his.kernel.json import object_of

TIMEOUT = 30.0
TARGETS = ("booking", "baseline", "direct")
AIM_RATE = 250.0


@dataclass(frozen=True)
class BookingConfig:
    users: int = 50
    desks: int = 50
    practitioners: int = 40
    days: int = 7
    patients: int = 400
    #: Seconds of closed-loop load per target (split in ``rounds``), and of open-loop load per rate.
    seconds: float = 10.0
    rounds: int = 4
    rate: float = 100.0
    aim_rate: float | None = AIM_RATE
    warmup_seconds: float = 2.0
    #: At most this long before each measured phase, waiting for the hospital to go idle (the last
    #: phase's events relayed and consumed), so that a phase does not pay for the one before.
    quiesce_seconds: float = 10.0

    @classmethod
    def quick(cls) -> BookingConfig:
        """About a minute: the same paths, fewer accounts and shorter phases, noisier figures."""
        return cls(desks=10, practitioners=20, days=4, patients=100, seconds=3.0, rounds=2, warmup_seconds=1.0)

    @classmethod
    def tiny(cls) -> BookingConfig:
        """For the smoke test: every path once, minimal sizes."""
        return cls(
            desks=2,
            practitioners=8,
            days=3,
            patients=16,
            seconds=1.0,
            rounds=1,
            rate=50.0,
            aim_rate=None,
            warmup_seconds=0.3,
            quiesce_seconds=1.0,  # its figures are no measurement: a phase may overlap the last one's events
        )


class BadAnswerError(BenchmarkError):
    """A request was not answered with a valid 201."""


@dataclass
class Target:
    """Where bookings go (gateway, bare endpoint, scheduling directly) and what came back."""

    name: str
    pool: Pool
    path: str
    plan: Plan
    index: Callable[[], int]
    statuses: Counter[int] = field(default_factory=Counter)
    created: int = 0

    async def once(self) -> None:
        try:
            i = self.index()
            body, headers = self.plan.body(i), self.plan.headers(i)
            async with asyncio.timeout(TIMEOUT):
                status, payload = await self.pool.request("POST", self.path, body, headers)
        except Exception:
            await asyncio.sleep(0.01)  # a closed loop must not spin on a failure that repeats at once
            raise
        self.statuses[status] += 1
        if status != 201 or not booked(payload):
            raise BadAnswerError(f"{self.name}: {status} {payload[:160].decode(errors='replace')}")
        self.created += 1

    def timed(self, samples: Latencies) -> Op:
        async def op(_: int, intended: float) -> None:
            await self.once()
            samples.add(time.perf_counter() - intended)

        return op


def booked(payload: bytes) -> bool:
    """Whether an answer is a booking made: an object with a UUID ``id`` and ``status: booked``."""
    try:
        doc = object_of(json.loads(payload))
        booking_id = doc["id"]
        if not isinstance(booking_id, str):
            return False
        uuid.UUID(booking_id)
    except (ValueError, KeyError):
        return False
    return doc.get("status") == "booked"


def counter() -> Callable[[], int]:
    c = itertools.count()
    return lambda: next(c)


def wrapping(capacity: int) -> Callable[[], int]:
    """For the baseline, which keeps no calendar: the same bodies over and over."""
    c = itertools.count()
    return lambda: next(c) % capacity


@dataclass
class Run:
    cfg: BookingConfig
    hospital: PrivateHospital
    plan: Plan
    targets: dict[str, Target]
    ledger: CpuLedger
    say: Callable[[str], None]
    operator: httpx.AsyncClient
    errors: list[str] = field(default_factory=list)

    async def quiesce(self, idle: float = 0.25) -> float:
        """Wait (at most ``cfg.quiesce_seconds``) until the hospital has caught up (relays,
        consumers) from the previous phase: its processes use less than ``idle`` of one core over
        200 ms. Returns the seconds waited."""
        return await quiesce(self.ledger, self.cfg.quiesce_seconds, idle)

    def failed(self, what: str, errors: list[str], count: int) -> None:
        if count:
            self.errors.append(f"{what}: {count} failed, e.g. {errors[:2]}")


async def measure_throughput(run: Run) -> BookingThroughput:
    cfg = run.cfg
    slice_s = cfg.seconds / cfg.rounds
    rates: dict[str, list[float]] = {t: [] for t in TARGETS}
    cpu: dict[str, Counter[str]] = {t: Counter() for t in TARGETS}
    done: Counter[str] = Counter()
    failures: dict[str, int] = Counter()
    run.say(f"throughput: {cfg.users} users back to back, {cfg.rounds} rounds of {slice_s:g}s per target")
    for r in range(cfg.rounds):
        order = TARGETS[r % 3 :] + TARGETS[: r % 3]
        for name in order:
            await run.quiesce()
            before = run.ledger.sample()
            result = await closed_loop(cfg.users, slice_s, run.targets[name].once)
            used = CpuLedger.delta(before, run.ledger.sample())
            run.failed(f"throughput {name}", result.errors, result.failed)
            rates[name].append(result.per_second)
            done[name] += result.done
            failures[name] += result.failed
            cpu[name].update(used)
    per_request = {t: {k: v * 1000.0 / done[t] for k, v in cpu[t].items()} if done[t] else {} for t in TARGETS}

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True) if y)

    return {
        "users": cfg.users,
        "seconds_per_round": slice_s,
        "per_s": {t: statistics.median(rates[t]) for t in TARGETS},
        "per_s_rounds": rates,
        "done": dict(done),
        "failed": dict(failures),
        "ratio": ratio("booking", "baseline"),
        "direct_ratio": ratio("direct", "baseline"),
        "cpu_ms_per_request": per_request,
    }


async def server_times(run: Run) -> tuple[float, float, float, float]:
    """(gateway seconds, count, scheduling seconds, count) of the 201 bookings so far."""
    gw = await read_metrics(run.operator, run.hospital.service_url("gateway"))  # its operations listener
    sched = await read_metrics(run.operator, run.hospital.service_url("scheduling"))
    g = scrape_http_seconds(gw, "POST", "/api/appointments", "201")  # the gateway labels by public route
    s = scrape_http_seconds(sched, "POST", "/appointments", "201")
    return g[0], g[1], s[0], s[1]


async def measure_rate(run: Run, rate: float, role: str) -> RateCell:
    cells: dict[str, PathCell] = {}
    for name in ("booking", "baseline"):
        run.say(f"latency: {rate:g} {name} requests/s for {run.cfg.seconds:g}s (open model)")
        await run.quiesce()
        samples = Latencies()
        before = await server_times(run) if name == "booking" else None
        result = await open_loop(rate, run.cfg.seconds, run.targets[name].timed(samples))
        run.failed(f"latency {name} at {rate:g}/s", result.errors, result.failed)
        cell: PathCell = {
            "latency": samples.summary(),
            "failed": result.failed,
            "errors": result.errors,
            "generator_lag_max_ms": result.lag_max_ms,
            "connections": run.targets[name].pool.opened,
            "queue_grew": queue_grew(samples.samples),
        }
        if before is not None:
            after = await server_times(run)
            g_s, g_n, s_s, s_n = (a - b for a, b in zip(after, before, strict=True))
            cell["mean_ms"] = {
                "client": statistics.fmean(samples.samples) * 1000.0 if samples.samples else float("nan"),
                "inside_gateway": g_s / g_n * 1000.0 if g_n else float("nan"),
                "inside_scheduling": s_s / s_n * 1000.0 if s_n else float("nan"),
            }
        cells[name] = cell
    return {
        "rate_per_s": rate,
        "seconds": run.cfg.seconds,
        "booking": cells["booking"],
        "baseline": cells["baseline"],
        "role": role,
    }


def queue_grew(samples: list[float]) -> bool:
    """Whether answers got slower through the run (the last quarter's median over three times the
    first quarter's): the rate was above what the path serves, and a queue built up."""
    q = len(samples) // 4
    if q < 5:
        return False
    return statistics.median(samples[-q:]) > 3 * statistics.median(samples[:q])


async def verify(run: Run) -> Verify:
    """The database holds exactly the bookings that were answered 201 (no more, no fewer)."""
    conn = await asyncpg.connect(run.hospital.admin_dsn)
    try:
        appointments = int(await conn.fetchval("SELECT count(*) FROM scheduling.appointment"))
        rows = int(await conn.fetchval(f"SELECT count(*) FROM {bare.SCHEMA}.booking"))
    finally:
        await conn.close()
    t = run.targets
    expected = t["booking"].created + t["direct"].created
    counts: VerifyCounts = {
        "appointments": appointments,
        "bookings_answered_201": expected,
        "baseline_rows": rows,
        "baseline_answered_201": t["baseline"].created,
    }
    if appointments != expected or rows != t["baseline"].created:
        run.errors.append(f"database check: {counts}")
    return {**counts, "statuses": {name: dict(tg.statuses) for name, tg in t.items()}}


async def start_baseline(hospital: PrivateHospital, workdir: Path) -> tuple[ManagedProcess, int]:
    conn = await asyncpg.connect(hospital.admin_dsn)
    try:
        for stmt in bare.TABLE_DDL:
            await conn.execute(stmt)
    finally:
        await conn.close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIS_")}
    env.update(HIS_BENCH_DSN=hospital.admin_dsn, HIS_BENCH_PORT=str(port))
    proc = ManagedProcess.spawn(
        "baseline", [sys.executable, "-m", "his.benchmarks.bare"], env=env, log_file=workdir / "baseline.log"
    )
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as client:
        while True:
            if proc.poll() is not None:
                raise BenchmarkError(f"the baseline process exited: {proc.tail(4)}")
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz", timeout=1)).status_code == 200:
                    return proc, port
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise BenchmarkError(f"the baseline did not start: {proc.tail(4)}")
            await asyncio.sleep(0.1)


async def measure_all(hospital: PrivateHospital, cfg: BookingConfig, say: Callable[[str], None]) -> BookingResults:
    say(
        f"seeding through the gateway: {cfg.desks} desks, {cfg.practitioners} practitioners × {cfg.days} "
        f"days of 24 h shifts, {cfg.patients} patients"
    )
    plan, facts = await seed(
        hospital.gateway,
        ADMIN_EMAIL,
        hospital.password,
        desks=cfg.desks,
        practitioners=cfg.practitioners,
        patients=cfg.patients,
        days=cfg.days,
    )
    seeded: BookingSeed = {
        **facts,
        "scheduling_learned_patients_s": await wait_known(hospital.admin_dsn, plan.patients),
    }
    baseline, port = await start_baseline(hospital, hospital.workdir)
    operator = hospital.operator()
    sched = urlsplit(hospital.service_url("scheduling"))
    slots = counter()  # bookings through the gateway and directly share the slots
    targets = {
        "booking": Target("booking", Pool("127.0.0.1", hospital.port), "/api/appointments", plan, slots),
        "baseline": Target("baseline", Pool("127.0.0.1", port), "/bookings", plan, wrapping(plan.capacity)),
        "direct": Target(
            "direct",
            Pool(sched.hostname or "127.0.0.1", sched.port or 0, hospital.workload("gateway").client_context()),
            "/appointments",
            plan,
            slots,
        ),
    }
    roots = {**hospital.processes(), "baseline": baseline.pid, "load generator": os.getpid()}
    try:
        async with httpx.AsyncClient(verify=operator.client_context()) as client:
            run = Run(cfg, hospital, plan, targets, CpuLedger(roots), say, client)
            return await _phases(run, seeded)
    finally:
        for t in targets.values():
            await t.pool.close()
        baseline.stop(timeout=10)


def latency_rates(cfg: BookingConfig, capacity: float) -> tuple[list[tuple[float, str]], AimSkipped]:
    """The asked rate; the design's aim if the measured capacity can carry it; and, when the asked
    rate is above the capacity (so its latencies only measure a growing queue), half the capacity
    too, to show the latency of a booking when the hospital keeps up. With them, why the aim was
    not run, if it was not."""
    rates = [(cfg.rate, "asked")]
    skipped: AimSkipped = {}
    if capacity < cfg.rate:
        rates.insert(0, (float(max(1, round(capacity / 2))), "half capacity"))
    if cfg.aim_rate and cfg.aim_rate != cfg.rate:
        if capacity >= cfg.aim_rate:
            rates.append((cfg.aim_rate, "aim"))
        else:
            skipped["aim_skipped"] = (
                f"{cfg.aim_rate:g}/s not run: the booking throughput measured with {cfg.users} users "
                f"({capacity:,.0f}/s) is below it, so the queue would only grow"
            )
    return rates, skipped


async def _phases(run: Run, seeded: BookingSeed) -> BookingResults:
    cfg = run.cfg
    for t in run.targets.values():
        await t.pool.warm(cfg.users)
    run.say(f"warming up each target for {cfg.warmup_seconds:g}s")
    for name in TARGETS:
        warm = await closed_loop(cfg.users, cfg.warmup_seconds, run.targets[name].once)
        run.failed(f"warm-up {name}", warm.errors, warm.failed)
    parts: dict[str, Noise] = {}
    watch = CpuWatch()
    with DiskProbe(run.hospital.workdir) as disk:
        watch.lap()
        disk.lap()
        throughput = await measure_throughput(run)
        parts["throughput"] = noise(watch.lap(), disk.lap())
        latency: dict[str, RateCell] = {}
        rates, skipped = latency_rates(cfg, throughput["per_s"]["booking"])
        for rate, role in rates:
            latency[f"{rate:g}"] = await measure_rate(run, rate, role)
            parts[f"latency {rate:g}/s"] = noise(watch.lap(), disk.lap())
    await run.quiesce()
    verified = await verify(run)
    return {
        "seed": seeded,
        "throughput": throughput,
        "latency": latency,
        **skipped,
        "verify": verified,
        "cpu": parts,
        "errors": run.errors,
    }


def run(
    cfg: BookingConfig, *, say: Callable[[str], None], workdir: Path | None = None, keep: bool = False
) -> BookingReport:
    """Start a private hospital, seed it, measure, stop it; returns the report."""
    started = time.perf_counter()
    hospital = PrivateHospital(Servers.make_workdir(workdir))
    say(f"starting a private hospital (his up) in {hospital.workdir}")
    servers = Servers(hospital.workdir)  # only for removing the directory afterwards
    try:
        hospital.start()
        say(f"his is up in {hospital.started_in:.1f}s; gateway on {hospital.gateway}")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            measured = runner.run(measure_all(hospital, cfg, say))
    finally:
        hospital.stop()
        if not keep:
            servers.remove()
    results: BookingRunResults = {
        **measured,
        "hospital": {
            "started_in_s": hospital.started_in,
            "gateway_limits_raised": RAISED_LIMITS,
            "synchronous_commit": "on",
        },
    }
    return {
        "benchmark": "booking",
        "config": asdict(cfg),
        "machine": machine(),
        "seconds": time.perf_counter() - started,
        "results": results,
        "rows": [r.as_dict() for r in rows(results)],
    }


def main(cfg: BookingConfig, *, as_json: bool, out: Console, err: Console, workdir: Path | None, keep: bool) -> int:
    """Entry point of ``his bench booking``: prints the table (or JSON); 1 if a figure is invalid."""

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
    errors = report["results"]["errors"]
    for e in errors:
        err.print(f"[bold red]invalid:[/] {e}")
    return 1 if errors else 0
