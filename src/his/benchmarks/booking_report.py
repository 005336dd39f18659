"""The figures of ``his bench booking`` as rows (measured, baseline, ratio, target) and tables."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NotRequired, TypedDict, final

from rich.console import Console
from rich.table import Table

from his.benchmarks.harness import Machine, Noise
from his.benchmarks.report import NOISY_CPU, Row, RowDict, noisy, num, ratio_of, wide
from his.benchmarks.seed import SeedFacts
from his.kernel.json import JsonMapping

AIM_RATE = 250.0
#: Processes shown in the CPU breakdown, in this order; the rest are summed as "other services".
SHOWN = (
    "gateway",
    "scheduling",
    "practitioners",
    "patients",
    "identity",
    "audit",
    "postgres",
    "nats",
    "supervisor",
    "baseline",
    "load generator",
)


class BookingSeed(SeedFacts):
    """What was seeded, and how long scheduling took to learn every patient from its events."""

    scheduling_learned_patients_s: float


class BookingThroughput(TypedDict):
    """Bookings back to back, by target (booking, baseline, direct), over the rounds."""

    users: int
    seconds_per_round: float
    per_s: dict[str, float]
    per_s_rounds: dict[str, list[float]]
    done: dict[str, int]
    failed: dict[str, int]
    ratio: float
    direct_ratio: float
    #: By target, each process's CPU milliseconds per request.
    cpu_ms_per_request: dict[str, dict[str, float]]


class MeanMs(TypedDict):
    """Where a booking's mean time went: at the client, inside the gateway, inside scheduling."""

    client: float
    inside_gateway: float
    inside_scheduling: float


class PathCell(TypedDict):
    """One path (booking or baseline) at a constant rate."""

    latency: dict[str, float]
    failed: int
    errors: list[str]
    generator_lag_max_ms: float
    connections: int
    queue_grew: bool
    #: Bookings only (the servers' own timings).
    mean_ms: NotRequired[MeanMs]


class RateCell(TypedDict):
    """Bookings and the baseline at one constant rate, and why that rate was run."""

    rate_per_s: float
    seconds: float
    booking: PathCell
    baseline: PathCell
    role: str


class VerifyCounts(TypedDict):
    appointments: int
    bookings_answered_201: int
    baseline_rows: int
    baseline_answered_201: int


class Verify(VerifyCounts):
    """The database against the answers, and every status by target."""

    statuses: dict[str, dict[int, int]]


class AimSkipped(TypedDict, total=False):
    """Why the design's aim rate was not run, if it was not."""

    aim_skipped: str


class BookingResults(TypedDict):
    """What ``booking.measure_all`` measured (``his bench`` keeps it under ``booking.results``)."""

    seed: BookingSeed
    throughput: BookingThroughput
    #: By rate (``"100"``).
    latency: dict[str, RateCell]
    aim_skipped: NotRequired[str]
    verify: Verify
    cpu: dict[str, Noise]
    errors: list[str]


class BookingHospital(TypedDict):
    started_in_s: float
    gateway_limits_raised: dict[str, str]
    synchronous_commit: str


class BookingRunResults(BookingResults):
    """A run of ``his bench booking`` on its own: the results and the hospital they were measured on."""

    hospital: BookingHospital


@dataclass(frozen=True)
class Figure(Row):
    """A row whose measurement had failed requests: it is invalid, whatever its value."""

    errors: int = 0

    def verdict(self) -> str:
        return f"INVALID ({self.errors} failed)" if self.errors else super().verdict()

    def as_dict(self) -> RowDict:
        return {**super().as_dict(), "errors": self.errors}


@final
class BookingReport(TypedDict):
    """What ``his bench booking --json`` prints."""

    benchmark: str
    config: JsonMapping
    machine: Machine
    seconds: float
    results: BookingRunResults
    rows: list[RowDict]


def rows(results: BookingResults) -> list[Figure]:
    out: list[Figure] = []
    tp = results.get("throughput")
    if tp:
        per_s, failed, users = tp["per_s"], tp["failed"], tp["users"]
        bad = failed.get("booking", 0) + failed.get("baseline", 0)
        figure = f"bookings/s, {users} users back to back (gateway → scheduling → gRPC → DB)"
        out.append(Figure(figure, per_s["booking"], per_s["baseline"], " req/s", tp["ratio"], (0.33, 0.33), errors=bad))
        bad = failed.get("direct", 0) + failed.get("baseline", 0)
        out.append(
            Figure(
                "  same, straight to scheduling (no gateway; for the breakdown)",
                per_s["direct"],
                per_s["baseline"],
                " req/s",
                tp["direct_ratio"],
                errors=bad,
            )
        )
    for cell in (results.get("latency") or {}).values():
        rate, role = cell["rate_per_s"], cell.get("role", "asked")
        booking, base = cell["booking"], cell["baseline"]
        bad = booking["failed"] + base["failed"]
        where = f"at a constant {rate:g}/s" + (" (half the capacity)" if role == "half capacity" else "")
        for p in ("p50", "p95", "p99", "p99.9"):
            m, b = booking["latency"].get(f"{p}_ms", math.nan), base["latency"].get(f"{p}_ms", math.nan)
            target = None
            if p == "p95" and role != "half capacity":
                target = (100.0, 50.0 if rate == AIM_RATE else 100.0)
            out.append(Figure(f"booking latency {p} {where}", m, b, " ms", ratio_of(m, b), target, "max", errors=bad))
    return out


def render(console: Console, report: BookingReport) -> None:
    with wide(console):
        _figures(console, report)
        _cpu(console, report)
        _notes(console, report)


def _figures(console: Console, report: BookingReport) -> None:
    table = Table(title="his bench booking — each figure against a bare ASGI endpoint doing one INSERT, same run")
    for col in ("figure", "measured", "baseline", "ratio", "target", "verdict"):
        table.add_column(col, justify="left" if col in ("figure", "target") else "right")
    styles = {"aim met": "green", "floor met": "yellow", "aim missed": "yellow", "MISSED": "bold red"}
    for r in rows(report["results"]):
        verdict = r.verdict()
        style = "bold red" if r.errors else styles.get(verdict, "")
        table.add_row(
            r.figure,
            num(r.measured, r.unit, ms_digits=1),
            num(r.baseline, r.unit, ms_digits=1),
            "" if r.ratio is None or math.isnan(r.ratio) else f"{r.ratio:.2f}",
            r.target_text(),
            f"[{style}]{verdict}[/]" if style else verdict,
        )
    console.print(table)


def _cpu(console: Console, report: BookingReport) -> None:
    per = report["results"].get("throughput", {}).get("cpu_ms_per_request")
    if not per:
        return
    cols = (("booking", "booking via gateway"), ("direct", "straight to scheduling"), ("baseline", "baseline"))
    table = Table(title="CPU per request (ms), every process, over the throughput rounds (from /proc)")
    table.add_column("process")
    for _, title in cols:
        table.add_column(title, justify="right")

    def grouped(cell: dict[str, float]) -> dict[str, float]:
        out = {k: cell.get(k, 0.0) for k in SHOWN}
        out["other services"] = sum(v for k, v in cell.items() if k not in SHOWN)
        out["total"] = sum(cell.values())
        return out

    groups = {key: grouped(per.get(key, {})) for key, _ in cols}
    for name in (*SHOWN, "other services", "total"):
        values = [groups[key][name] for key, _ in cols]
        if name != "total" and max(values) < 0.005:
            continue
        cells = [f"{v:.2f}" if v >= 0.005 else "" for v in values]
        table.add_row(f"[bold]{name}[/]" if name == "total" else name, *cells)
    cpus = report["machine"]["cpus"] or 1
    table.add_row(
        f"ceiling: {cpus} CPUs / total",
        *(f"{cpus * 1000.0 / g['total']:,.0f}/s" if g["total"] else "" for g in groups.values()),
    )
    console.print(table)


def _notes(console: Console, report: BookingReport) -> None:
    res, m = report["results"], report["machine"]
    for key, cell in (res.get("latency") or {}).items():
        t = cell["booking"].get("mean_ms")
        if t:
            own = t["inside_gateway"] - t["inside_scheduling"]
            console.print(
                f"mean time of a booking at {key}/s: {t['client']:.1f} ms at the client = "
                f"{t['client'] - t['inside_gateway']:.1f} ms outside the gateway's app "
                "(sockets, HTTP parsing, queueing) + "
                f"{own:.1f} ms in the gateway (token check, forwarding over mutual TLS) + "
                f"{t['inside_scheduling']:.1f} ms in scheduling (token check, gRPC to practitioners, DB transaction)"
            )
    for key, cell in (res.get("latency") or {}).items():
        if cell["booking"].get("queue_grew"):
            console.print(
                f"[yellow]overload:[/] at {key}/s bookings arrived faster than they were served (answers got slower "
                "through the run): the latencies at that rate are mostly time spent queueing"
            )
    if res.get("aim_skipped"):
        console.print(f"[yellow]aim rate:[/] {res['aim_skipped']}")
    h, seed = res.get("hospital", {}), res.get("seed", {})
    limits = ", ".join(f"{k}={v}" for k, v in h.get("gateway_limits_raised", {}).items())
    console.print(
        f"hospital: real `his up` (up in {h.get('started_in_s', 0):.1f}s), PostgreSQL with synchronous_commit=on "
        f"for both paths; gateway rate limits raised for the run ({limits}); "
        f"seeded {seed.get('desks')} receptionist desks, {seed.get('practitioners')} practitioners with "
        f"{seed.get('shifts')} 24 h shifts, {seed.get('patients')} patients ({seed.get('slots'):,} free slots) "
        f"in {seed.get('seconds', 0):.0f}s"
    )
    v = res.get("verify", {})
    if v:
        console.print(
            f"checked: every answer 201 with status booked; {v['appointments']} appointments in the database for "
            f"{v['bookings_answered_201']} bookings answered 201, {v['baseline_rows']} baseline rows for "
            f"{v['baseline_answered_201']}; statuses {v['statuses']}"
        )
    console.print(
        f"machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB, Python {m['python']}; the load "
        f"generator, the hospital and the baseline share them; run took {report['seconds']:.0f}s"
    )
    cpu = res.get("cpu", {})
    if cpu:
        parts = []
        for name, c in cpu.items():
            steal = f" +{c['steal_share'] * 100:.0f}% steal" if c.get("steal_share", 0) > 0.01 else ""
            disk = f", probe fsync p99 {c['fsync_p99_ms']:.1f} ms" if "fsync_p99_ms" in c else ""
            parts.append(f"{name}: others {c['other_cpu_share'] * 100:.0f}% CPU{steal}{disk}")
        console.print("machine noise — " + "; ".join(parts))
        if any(noisy(c) for c in cpu.values()):
            console.print(
                f"[bold yellow]noisy run:[/] other processes used more than {NOISY_CPU:.0%} of the CPU in some part; "
                "its figures are less reliable than a quiet run's."
            )
    console.print(
        "Latency is counted from each request's intended start (constant arrival rate). Details: docs/performance.md."
    )
