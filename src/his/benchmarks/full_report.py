"""The report of ``his bench``: every suite's rows, with pass/miss, as Markdown and JSON files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Never, TypedDict, final

from his.benchmarks import booking_report, reads, report
from his.benchmarks.booking_report import BookingResults
from his.benchmarks.harness import Machine, Noise
from his.benchmarks.reads import ReadResults
from his.benchmarks.report import BackboneReport, BackboneResults, Row, RowDict, num
from his.kernel.json import JsonMapping

RSS_LIMIT_MB = 120.0
UP_LIMIT_S = 10.0
#: Processes of the hospital that are not services: shown, without the per-service memory target.
NOT_SERVICES = ("postgres", "nats", "supervisor", "forkserver")
SUITES = ("backbone", "booking", "reads")
SECTIONS = (
    "Targets",
    "Raw baselines",
    "Throughput against the baselines",
    "Latency under constant-rate load",
    "Resident memory per process",
    "his up to healthy",
    "Where a patient read's time goes",
    "Machine noise",
    "Invalid figures",
)


@final
class SuiteFailed(TypedDict):
    """A suite that could not measure validly, in place of its report: no figures, and why."""

    results: dict[str, Never]
    failed: str


@final
class BookingSuite(TypedDict):
    results: BookingResults


class Startup(TypedDict):
    """``his up`` to healthy: a first start, then the warm ones, and the CPU each had used."""

    cold_s: float
    warm_s: list[float]
    warm_min_s: float
    warm_median_s: float
    #: CPU seconds the hospital's processes had used when it was up, at each start.
    cpu_s: list[float]
    #: By process, at the last start.
    cpu_s_by_process: dict[str, float]


class RssMb(TypedDict):
    """Resident memory by process, in MiB: idle after the start, and after the load."""

    idle: dict[str, float]
    after_load: dict[str, float]


class HospitalFacts(TypedDict):
    gateway_limits_raised: dict[str, str]
    synchronous_commit: str


class FullReport(TypedDict):
    """What ``his bench`` measured (``full.run``): each suite's report, or why it failed."""

    benchmark: str
    mode: str
    started_at: str
    config: JsonMapping
    machine: Machine
    hospital: HospitalFacts
    backbone: BackboneReport | SuiteFailed
    startup: Startup
    rss_mb: RssMb
    booking: BookingSuite | SuiteFailed
    reads: ReadResults | SuiteFailed
    seconds: float


class ReportRow(RowDict):
    """A row of the JSON report: its figure, its section and pass/miss."""

    section: str
    result: str


class WrittenReport(FullReport):
    """The JSON report: the run, every row, and the invalid figures."""

    rows: list[ReportRow]
    errors: list[str]


def backbone_results(rep: FullReport) -> BackboneResults | None:
    """The backbone's results, or None if that suite failed."""
    suite = rep["backbone"]
    return None if "failed" in suite else suite["results"]


def booking_results(rep: FullReport) -> BookingResults | None:
    """The booking suite's results, or None if it failed."""
    suite = rep["booking"]
    return None if "failed" in suite else suite["results"]


def reads_results(rep: FullReport) -> ReadResults | None:
    """The patient read's results, or None if that suite failed."""
    suite = rep["reads"]
    return None if "failed" in suite else suite


def passed(row: Row) -> str:
    """The verdict as pass/miss: the floor (or, without a floor, the aim) decides."""
    verdict = row.verdict()
    return {
        "aim met": "pass",
        "floor met": "pass (floor; aim missed)",
        "aim missed": "miss",
        "MISSED": "MISS",
    }.get(verdict, verdict)


def raw_rows(rep: FullReport) -> list[Row]:
    rd = reads_results(rep)
    out = reads.raw_rows(rd) if rd else []
    res = backbone_results(rep)
    if res is None:
        return out
    out.append(
        Row("JetStream publish, pipelined (sync_interval: always)", res["drain"]["raw_per_s"], None, " msg/s", None)
    )
    out.append(Row("JetStream pull consumer + INSERT per fetch", res["consumer"]["raw_per_s"], None, " msg/s", None))
    lat = res["latency"]
    bare, rate = lat["bare"]["publish_to_ack"], lat["rate_per_s"]
    for p in ("p50", "p99"):
        out.append(Row(f"JetStream publish → PubAck {p} at {rate:g}/s", bare[f"{p}_ms"], None, " ms", None))
    return out


def system_rows(rep: FullReport) -> list[Row]:
    bb, bk, rd = backbone_results(rep), booking_results(rep), reads_results(rep)
    return [
        *(report.rows(bb) if bb else []),
        *(booking_report.rows(bk) if bk else []),
        *(reads.rows(rd) if rd else []),
    ]


def rss_rows(rss: RssMb) -> list[Row]:
    idle, loaded = rss.get("idle", {}), rss.get("after_load", {})
    out = []
    for name in sorted(idle.keys() | loaded.keys(), key=lambda n: (n in NOT_SERVICES, n)):
        target = None if name in NOT_SERVICES else (RSS_LIMIT_MB, RSS_LIMIT_MB)
        worst = max(idle.get(name, 0.0), loaded.get(name, 0.0))
        out.append(Row(name, worst, idle.get(name), " MB", None, target, "max"))
    return out


def largest_rss(rss: RssMb) -> list[Row]:
    """The service with the most resident memory (every service is listed in its own section)."""
    services = [r for r in rss_rows(rss) if r.target is not None]
    if not services:
        return []
    top = max(services, key=lambda r: r.measured)
    return [Row(f"resident memory, largest service ({top.figure})", top.measured, None, " MB", None, top.target, "max")]


def startup_rows(s: Startup) -> list[Row]:
    target = (UP_LIMIT_S, UP_LIMIT_S)
    return [
        Row(
            f"his up → healthy, warm install, median of {len(s['warm_s'])}",
            s["warm_median_s"],
            None,
            " s",
            None,
            target,
            "max",
        ),
        Row("his up → healthy, warm install, best", s["warm_min_s"], None, " s", None),
        Row("his up → healthy, first start (creates the data directory)", s["cold_s"], None, " s", None),
    ]


def errors(rep: FullReport) -> list[str]:
    """Failed suites and invalid figures (a request not answered as expected)."""
    suites: tuple[BackboneReport | BookingSuite | ReadResults | SuiteFailed, ...] = (
        rep["backbone"],
        rep["booking"],
        rep["reads"],
    )
    failed = [f"{name}: suite failed: {s['failed']}" for name, s in zip(SUITES, suites, strict=True) if "failed" in s]
    bk, rd = booking_results(rep), reads_results(rep)
    return [*failed, *(bk["errors"] if bk else []), *(rd["errors"] if rd else [])]


def all_rows(rep: FullReport) -> list[ReportRow]:
    """Every figure as a dict, with its section and pass/miss (for the JSON report)."""
    groups = (
        ("raw", raw_rows(rep)),
        ("system", system_rows(rep)),
        ("rss", rss_rows(rep["rss_mb"])),
        ("startup", startup_rows(rep["startup"])),
    )
    return [{**r.as_dict(), "section": name, "result": passed(r)} for name, rs in groups for r in rs]


def _value(v: float | None, unit: str) -> str:
    if v is None or math.isnan(v):
        return ""
    if unit.strip() in ("MB", "s"):
        return f"{v:.1f}{unit}"
    return num(v, unit, ms_digits=1)


def _table(head: tuple[str, ...], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(x) + " |" for x in lines)]


def _figures(rows: list[Row]) -> list[str]:
    lines = []
    for r in rows:
        ratio = "" if r.ratio is None or math.isnan(r.ratio) else f"{r.ratio:.2f}"
        lines.append(
            [
                r.figure.strip(),
                _value(r.measured, r.unit),
                _value(r.baseline, r.unit),
                ratio,
                r.target_text(),
                passed(r) if r.target else "",
            ]
        )
    return _table(("figure", "measured", "baseline", "ratio", "target", "pass/miss"), lines)


def markdown(rep: FullReport) -> str:
    m = rep["machine"]
    sys_rows = system_rows(rep)
    targeted = [
        r for r in [*sys_rows, *largest_rss(rep["rss_mb"]), *startup_rows(rep["startup"])] if r.target is not None
    ]
    out = [
        f"# his bench — {rep['started_at']} ({rep['mode']} run, {rep['seconds']:.0f} s)",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB, Python {m['python']}, {m['platform']}. "
        "The load generator, the hospital and the baselines share these CPUs. The hospital is the real `his up` "
        "with its gateway's rate limits raised for the run ("
        + ", ".join(f"{k}={v}" for k, v in rep["hospital"]["gateway_limits_raised"].items())
        + "): every simulated user comes from 127.0.0.1. Method: docs/performance.md.",
        "",
        "## Targets",
        "",
        *_figures(targeted),
        "",
        "## Raw baselines",
        "",
        "Measured in this run, with the system's durability settings (PostgreSQL synchronous_commit=on; "
        "JetStream file storage, sync_interval: always). The bare ASGI endpoint runs as its own process "
        "(uvicorn, uvloop, httptools) on the hospital's PostgreSQL.",
        "",
        *_figures(raw_rows(rep)),
        "",
        "## Throughput against the baselines",
        "",
        *_figures([r for r in sys_rows if r.unit.strip() != "ms"]),
        "",
        "## Latency under constant-rate load",
        "",
        "Constant arrival rate (open model); each request is timed from its intended start, so a stall is "
        "charged to every request it delayed (no coordinated omission); every sample kept, exact percentiles. "
        "Ratios are system / baseline (lower is better).",
        "",
        *_figures([r for r in sys_rows if r.unit.strip() == "ms"]),
        "",
        *_overload(rep),
        *_rss(rep),
        *_startup(rep),
        *_profile(rep),
        *_noise(rep),
        "## Invalid figures",
        "",
        *([f"- {e}" for e in errors(rep)] or ["None: every request was answered as expected."]),
        "",
    ]
    return "\n".join(out)


def _overload(rep: FullReport) -> list[str]:
    """A rate at which answers got slower through the run measured a growing queue: say so."""
    bk, rd = booking_results(rep), reads_results(rep)
    cells = [("bookings", c["rate_per_s"], c["booking"]["queue_grew"]) for c in (bk["latency"] if bk else {}).values()]
    if rd:
        cells.append(("patient reads", rd["latency"]["rate_per_s"], rd["latency"]["read"]["queue_grew"]))
    notes = [
        f"- Overload: at {rate:g}/s {what} arrived faster than they were served (answers got slower "
        "through the run), so the latencies at that rate are mostly time spent queueing."
        for what, rate, grew in cells
        if grew
    ]
    return [*notes, ""] if notes else []


def _rss(rep: FullReport) -> list[str]:
    idle, loaded = rep["rss_mb"].get("idle", {}), rep["rss_mb"].get("after_load", {})
    lines = []
    for r in rss_rows(rep["rss_mb"]):
        lines.append(
            [
                r.figure,
                _value(idle.get(r.figure), " MB"),
                _value(loaded.get(r.figure), " MB"),
                r.target_text(),
                passed(r) if r.target else "",
            ]
        )
    return [
        "## Resident memory per process",
        "",
        "VmRSS from /proc/<pid>/status, idle after the start and after the booking and patient-read load; the "
        "target applies to the larger. PostgreSQL is its main process only (its backends are separate processes).",
        "",
        *_table(("process", "idle", "after load", "target", "pass/miss"), lines),
        "",
    ]


def _startup(rep: FullReport) -> list[str]:
    s = rep["startup"]
    warm = ", ".join(f"{t:.1f} s" for t in s["warm_s"])
    return [
        "## his up to healthy",
        "",
        'From running `his up` to its "his is up" line (every service answered its health check).',
        "",
        *_figures(startup_rows(s)),
        "",
        f"Warm restarts: {warm}.",
        "",
        *_startup_cpu(rep),
    ]


def _startup_cpu(rep: FullReport) -> list[str]:
    s, cpus = rep["startup"], rep["machine"]["cpus"] or 1
    if not s.get("cpu_s"):
        return []
    each = ", ".join(f"{c:.1f}" for c in s["cpu_s"])
    top = sorted(s["cpu_s_by_process"].items(), key=lambda kv: -kv[1])
    return [
        f"CPU time the hospital's processes had used when it was up (first start, then each warm start): {each} "
        f"CPU-s; on {cpus} CPUs that alone needs at least {s['cpu_s'][-1] / cpus:.1f} s of the last start's "
        f"{(s['warm_s'] or [s['cold_s']])[-1]:.1f} s. By process (last start): "
        + ", ".join(f"{name} {sec:.1f}" for name, sec in top)
        + ".",
        "",
    ]


def _profile(rep: FullReport) -> list[str]:
    rd = reads_results(rep)
    per = rd["throughput"]["cpu_ms_per_request"] if rd else {}
    if not per:
        return []
    cols = ("read", "direct", "select")
    names = sorted({n for c in per.values() for n in c}, key=lambda n: -per.get("read", {}).get(n, 0.0))
    lines = []
    for name in names:
        values = [per.get(c, {}).get(name, 0.0) for c in cols]
        if max(values) >= 0.005:
            lines.append([name, *(f"{v:.2f}" if v >= 0.005 else "" for v in values)])
    totals = [sum(per.get(c, {}).values()) for c in cols]
    lines.append(["**total**", *(f"**{t:.2f}**" for t in totals)])
    cpus = rep["machine"]["cpus"] or 1
    lines.append([f"ceiling: {cpus} CPUs / total", *(f"{cpus * 1000.0 / t:,.0f}/s" if t else "" for t in totals)])
    return [
        "## Where a patient read's time goes",
        "",
        "CPU per request (ms) of every process over the closed-loop rounds, from /proc.",
        "",
        *_table(("process", "read via gateway", "straight to patients", "bare ASGI + SELECT"), lines),
        "",
    ]


def _noise(rep: FullReport) -> list[str]:
    parts: dict[str, Noise] = {}
    bb, bk, rd = backbone_results(rep), booking_results(rep), reads_results(rep)
    if bb:
        parts.update({f"backbone {k}": v for k, v in bb["cpu"].items()})
    if bk:
        parts.update({f"booking {k}": v for k, v in bk["cpu"].items()})
    if rd:
        parts.update(rd["cpu"])
    lines = []
    for name, c in parts.items():
        lines.append(
            [
                name,
                f"{c['our_cpu_share'] * 100:.0f} %",
                f"{c['other_cpu_share'] * 100:.0f} %",
                f"{c.get('steal_share', 0.0) * 100:.0f} %",
                _value(c.get("fsync_p99_ms"), " ms"),
                "noisy" if report.noisy(c) else "",
            ]
        )
    return [
        "## Machine noise",
        "",
        "Share of all CPUs used by this benchmark's processes and by everything else on the machine (and stolen by "
        f"the hypervisor) during each part; a 4 KiB write + fdatasync every 100 ms probes the disk. A part where "
        f"others used more than {report.NOISY_CPU:.0%} is marked noisy: its figures are less reliable.",
        "",
        *_table(("part", "benchmark", "others", "steal", "fsync p99", ""), lines),
        "",
    ]


def write(rep: FullReport, directory: Path) -> tuple[Path, Path]:
    """``<timestamp>.md`` and ``<timestamp>.json`` in ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = rep["started_at"].replace(":", "").replace("+0000", "Z").replace("+00:00", "Z")
    md, js = directory / f"{stem}.md", directory / f"{stem}.json"
    md.write_text(markdown(rep))
    written: WrittenReport = {**rep, "rows": all_rows(rep), "errors": errors(rep)}
    js.write_text(json.dumps(written, indent=1, default=str))
    return md, js
