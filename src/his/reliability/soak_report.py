"""The report of ``his soak``: a Markdown file, a JSON file of the figures, and plots (PNG).

- ``report.md``: the verdict (lost, unexpected, duplicated per history and stage), the faults and
  where they landed, p95 per operation per window, memory per process at the start and the end,
  outbox age and consumer lag, and what the journeys did;
- ``soak.json``: the same figures, and every sample, for a machine;
- ``p95.png``, ``rss.png``, ``outbox_age.png``, ``consumer_lag.png``: the figures over time, with
  a vertical line at each fault.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypedDict

from his.kernel.json import Json, boolean, dict_of, field, integer, list_of, number, object_of, optional, text
from his.reliability.soak import FaultFigures, Run, clock

PLOTS = ("p95.png", "rss.png", "outbox_age.png", "consumer_lag.png")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] * 1000.0 if ordered else math.nan


def windows(run: Run) -> tuple[list[float], dict[str, list[float]], dict[str, int]]:
    """Window starts, and p95 (ms) of each operation per window (NaN when it did not run)."""
    width = run.config.window
    count = max(1, math.ceil(max(run.load_seconds, 1.0) / width))
    samples: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in range(count)])
    totals: dict[str, int] = defaultdict(int)
    for o in run.ops:
        if 0 <= o.at < count * width:
            samples[o.name][int(o.at // width)].append(o.seconds)
            totals[o.name] += 1
    return [i * width for i in range(count)], {n: [p95(w) for w in ws] for n, ws in sorted(samples.items())}, totals


class ConfigFigures(TypedDict):
    minutes: float
    seed: int
    faults: list[str]
    workers: int
    slow_seconds: float


class VerdictFigures(TypedDict):
    """One history's check: whether it held, each stage's size, and the findings."""

    ok: bool
    sizes: dict[str, int]
    findings: list[str]


class P95Figures(TypedDict):
    """p95 (ms) of each operation in each window (NaN when it did not run), and its requests."""

    window_starts: list[float]
    operations: dict[str, list[float]]
    requests: dict[str, int]


class RssFigures(TypedDict):
    """A process's memory (MiB) in the first and last samples (None: not running then) and at its peak."""

    start_mib: float | None
    end_mib: float | None
    peak_mib: float


class Outcomes(TypedDict):
    told: int
    refused: int
    uncertain: int


class SampleFigures(TypedDict):
    """One sample, by process or service."""

    at: float
    rss_mb: dict[str, float]
    outbox_age_s: dict[str, float]
    outbox_backlog: dict[str, float]
    consumer_pending: dict[str, float]
    p95_ms: dict[str, float]


class SoakFigures(TypedDict):
    """The figures of a run (``soak.json``), from which the report is rendered."""

    config: ConfigFigures
    run_at: str
    ok: bool
    lost: int
    duplicated: int
    unexpected: int
    verdicts: dict[str, VerdictFigures]
    invariants: dict[str, int]
    faults: list[FaultFigures]
    window_seconds: float
    p95_ms: P95Figures
    rss: dict[str, RssFigures]
    max_outbox_age_s: dict[str, float]
    max_consumer_lag: dict[str, float]
    tally: dict[str, int]
    requests: int
    outcomes: Outcomes
    #: Where the time went, by phase ("his up", "set-up", "load", "drain", "stop", "total").
    seconds: dict[str, float]
    samples: list[SampleFigures]


def figures(run: Run) -> SoakFigures:
    starts, per_op, totals = windows(run)
    first, last = (run.samples[0], run.samples[-1]) if run.samples else (None, None)
    rss: dict[str, RssFigures] = {}
    if first and last:
        for name in sorted(set(first.rss_mb) | set(last.rss_mb)):
            a, b = first.rss_mb.get(name), last.rss_mb.get(name)
            peak = max((s.rss_mb.get(name, 0.0) for s in run.samples), default=0.0)
            rss[name] = {"start_mib": a, "end_mib": b, "peak_mib": peak}
    cfg = run.config
    return {
        "config": {
            "minutes": cfg.minutes,
            "seed": cfg.seed,
            "faults": list(cfg.faults),
            "workers": cfg.workers,
            "slow_seconds": cfg.slow_seconds,
        },
        "run_at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "ok": run.ok,
        "lost": run.lost,
        "duplicated": run.duplicated,
        "unexpected": run.unexpected,
        "verdicts": {
            n: {"ok": v.ok, "sizes": v.sizes, "findings": [str(f) for f in v.findings]} for n, v in run.verdicts.items()
        },
        "invariants": run.invariants,
        "faults": [f.as_dict() for f in run.faults],
        "window_seconds": run.config.window,
        "p95_ms": {"window_starts": starts, "operations": per_op, "requests": totals},
        "rss": rss,
        "max_outbox_age_s": {
            n: max((s.outbox_age.get(n, 0.0) for s in run.samples), default=0.0)
            for n in (last.outbox_age if last else {})
        },
        "max_consumer_lag": {
            n: max((s.consumer_pending.get(n, 0.0) for s in run.samples), default=0.0)
            for n in (last.consumer_pending if last else {})
        },
        "tally": dict(sorted(run.tally.items())),
        "requests": len(run.ops),
        "outcomes": {
            "told": sum(1 for o in run.ops if o.outcome == "told"),
            "refused": sum(1 for o in run.ops if o.outcome == "refused"),
            "uncertain": sum(1 for o in run.ops if o.outcome == "uncertain"),
        },
        "seconds": {
            "his up": round(run.startup_seconds, 1),
            "set-up": round(run.setup_seconds, 1),
            "load": round(run.load_seconds, 1),
            "drain": round(run.drain_seconds, 1),
            "stop": round(run.stop_seconds, 1),
            "total": round(run.total_seconds, 1),
        },
        "samples": [
            {
                "at": round(s.at, 1),
                "rss_mb": s.rss_mb,
                "outbox_age_s": s.outbox_age,
                "outbox_backlog": s.outbox_backlog,
                "consumer_pending": s.consumer_pending,
                "p95_ms": s.p95_ms,
            }
            for s in run.samples
        ],
    }


def _fmt(v: float | None, digits: int = 0) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def read_figures(doc: Json) -> SoakFigures:
    """The figures as ``soak.json`` holds them (``json.loads`` of it), checked on the way in;
    ``ValueError`` if it holds something else."""
    fig = object_of(doc)
    cfg = object_of(field(fig, "config"))
    p95 = object_of(field(fig, "p95_ms"))
    outcomes = object_of(field(fig, "outcomes"))
    return {
        "config": {
            "minutes": number(field(cfg, "minutes")),
            "seed": integer(field(cfg, "seed")),
            "faults": list_of(text, field(cfg, "faults")),
            "workers": integer(field(cfg, "workers")),
            "slow_seconds": number(field(cfg, "slow_seconds")),
        },
        "run_at": text(field(fig, "run_at")),
        "ok": boolean(field(fig, "ok")),
        "lost": integer(field(fig, "lost")),
        "duplicated": integer(field(fig, "duplicated")),
        "unexpected": integer(field(fig, "unexpected")),
        "verdicts": dict_of(_verdict_figures, field(fig, "verdicts")),
        "invariants": dict_of(integer, field(fig, "invariants")),
        "faults": list_of(_fault_figures, field(fig, "faults")),
        "window_seconds": number(field(fig, "window_seconds")),
        "p95_ms": {
            "window_starts": list_of(number, field(p95, "window_starts")),
            "operations": dict_of(lambda v: list_of(number, v), field(p95, "operations")),
            "requests": dict_of(integer, field(p95, "requests")),
        },
        "rss": dict_of(_rss_figures, field(fig, "rss")),
        "max_outbox_age_s": dict_of(number, field(fig, "max_outbox_age_s")),
        "max_consumer_lag": dict_of(number, field(fig, "max_consumer_lag")),
        "tally": dict_of(integer, field(fig, "tally")),
        "requests": integer(field(fig, "requests")),
        "outcomes": {
            "told": integer(field(outcomes, "told")),
            "refused": integer(field(outcomes, "refused")),
            "uncertain": integer(field(outcomes, "uncertain")),
        },
        "seconds": dict_of(number, field(fig, "seconds")),
        "samples": list_of(_sample_figures, field(fig, "samples")),
    }


def _verdict_figures(value: Json) -> VerdictFigures:
    v = object_of(value)
    return {
        "ok": boolean(field(v, "ok")),
        "sizes": dict_of(integer, field(v, "sizes")),
        "findings": list_of(text, field(v, "findings")),
    }


def _fault_figures(value: Json) -> FaultFigures:
    f = object_of(value)
    return {
        "kind": text(field(f, "kind")),
        "target": text(field(f, "target")),
        "at": number(field(f, "at")),
        "recovered_after": optional(number, field(f, "recovered_after")),
        "pid_before": optional(integer, field(f, "pid_before")),
        "pid_after": optional(integer, field(f, "pid_after")),
        "failed_requests": integer(field(f, "failed_requests")),
        "told_while_down": integer(field(f, "told_while_down")),
        "landed": boolean(field(f, "landed")),
        "detail": text(field(f, "detail")),
    }


def _rss_figures(value: Json) -> RssFigures:
    r = object_of(value)
    return {
        "start_mib": optional(number, field(r, "start_mib")),
        "end_mib": optional(number, field(r, "end_mib")),
        "peak_mib": number(field(r, "peak_mib")),
    }


def _sample_figures(value: Json) -> SampleFigures:
    s = object_of(value)
    return {
        "at": number(field(s, "at")),
        "rss_mb": dict_of(number, field(s, "rss_mb")),
        "outbox_age_s": dict_of(number, field(s, "outbox_age_s")),
        "outbox_backlog": dict_of(number, field(s, "outbox_backlog")),
        "consumer_pending": dict_of(number, field(s, "consumer_pending")),
        "p95_ms": dict_of(number, field(s, "p95_ms")),
    }


def _landed(fig: SoakFigures) -> int:
    return sum(1 for f in fig["faults"] if f["landed"])


def _verdict(fig: SoakFigures) -> str:
    return "PASS" if fig["ok"] else "FAIL"


def summary(fig: SoakFigures) -> str:
    """The lines ``his soak`` prints at the end: the verdict, each history, the invariants, the
    faults that did not land, and where the time went."""
    lines = [
        f"soak {_verdict(fig)}: {fig['lost']} lost, {fig['duplicated']} duplicated, {fig['unexpected']} unexpected; "
        f"{len(fig['faults'])} faults ({_landed(fig)} landed); {fig['requests']} requests",
    ]
    for name, v in fig["verdicts"].items():
        sizes = ", ".join(f"{stage} {n}" for stage, n in v["sizes"].items())
        lines.append(f"  {name}: {'ok' if v['ok'] else 'FAIL'} ({sizes})")
        lines += [f"    {finding}" for finding in v["findings"]]
    for what, n in fig["invariants"].items():
        lines.append(f"  {what}: {n}")
    for f in fig["faults"]:
        if not f["landed"]:
            lines.append(f"  fault did not land: {f['kind']} {f['target']} at {clock(f['at'])} ({f})")
    lines.append("  seconds: " + ", ".join(f"{k} {v:g}" for k, v in fig["seconds"].items()))
    return "\n".join(lines)


def markdown(fig: SoakFigures) -> str:
    """``report.md``, from the figures alone (``soak.json`` renders the same report again)."""
    cfg = fig["config"]
    secs = fig["seconds"]
    out = [
        f"# Soak: {cfg['minutes']:g} minutes, seed {cfg['seed']}",
        "",
        f"Run {fig['run_at']}. Faults: {', '.join(cfg['faults']) or 'none'}; {cfg['workers']} concurrent journeys. "
        + ", ".join(f"{k} {v:g} s" for k, v in secs.items())
        + ".",
        "",
        "## Verdict",
        "",
        f"**{_verdict(fig)}**: {fig['lost']} lost, {fig['duplicated']} duplicated, {fig['unexpected']} "
        f"unexpected effects; {len(fig['faults'])} faults, {_landed(fig)} landed.",
        "",
        "| history | told | stages (size) | findings |",
        "|---|---:|---|---|",
    ]
    for name, v in fig["verdicts"].items():
        stages = ", ".join(f"{s} {n}" for s, n in v["sizes"].items() if s != "told")
        found = "; ".join(v["findings"]) or "none"
        out.append(f"| {name} | {v['sizes'].get('told', 0)} | {stages} | {found} |")
    out += ["", "| invariant | violations |", "|---|---:|"]
    out += [f"| {what} | {n} |" for what, n in fig["invariants"].items()]
    outcomes = fig["outcomes"]
    out += [
        "",
        f"Requests: {fig['requests']} ({outcomes['told']} told, {outcomes['refused']} refused, "
        f"{outcomes['uncertain']} unanswered: timeouts, cut connections, 5xx).",
        "",
        "## Faults",
        "",
        "| # | at | fault | target | pid before → after | back after (s) | requests unanswered | "
        "answered while down | landed |",
        "|---:|---|---|---|---|---:|---:|---:|---|",
    ]
    for i, f in enumerate(fig["faults"], 1):
        out.append(
            f"| {i} | {clock(f['at'])} | {f['kind']} | {f['target']} | {f['pid_before']} → {f['pid_after']} | "
            f"{_fmt(f['recovered_after'], 1)} | {f['failed_requests']} | {f['told_while_down']} | "
            f"{'yes' if f['landed'] else '**no**'} |"
        )
    width = int(fig["window_seconds"] // 60)
    starts = fig["p95_ms"]["window_starts"]
    out += [
        "",
        f"## p95 per operation per {width}-minute window (ms, at the client, through the gateway)",
        "",
        "| operation | requests | " + " | ".join(clock(s) for s in starts) + " |",
        "|---|---:|" + "---:|" * len(starts),
    ]
    for name, values in fig["p95_ms"]["operations"].items():
        out.append(f"| {name} | {fig['p95_ms']['requests'][name]} | " + " | ".join(_fmt(v) for v in values) + " |")
    out += [
        "",
        "![p95](p95.png)",
        "",
        "## Memory (RSS, MiB)",
        "",
        "| process | start | end | peak | growth |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in fig["rss"].items():
        growth = r["end_mib"] - r["start_mib"] if r["start_mib"] and r["end_mib"] else None
        out.append(
            f"| {name} | {_fmt(r['start_mib'])} | {_fmt(r['end_mib'])} | {_fmt(r['peak_mib'])} | "
            f"{'–' if growth is None else f'{growth:+.0f}'} |"
        )
    out += [
        "",
        "A restarted process starts again from its start-up size, so the growth of a process that a fault "
        "replaced is not a leak figure; the plot shows each life.",
        "",
        "![RSS](rss.png)",
        "",
        "## Outbox age and consumer lag",
        "",
        "| service | max outbox age (s) | max consumer lag (messages) |",
        "|---|---:|---:|",
    ]
    for name in sorted(set(fig["max_outbox_age_s"]) | set(fig["max_consumer_lag"])):
        out.append(
            f"| {name} | {fig['max_outbox_age_s'].get(name, 0):.1f} | {fig['max_consumer_lag'].get(name, 0):.0f} |"
        )
    out += [
        "",
        "![outbox age](outbox_age.png)",
        "",
        "![consumer lag](consumer_lag.png)",
        "",
        "## What the journeys did",
        "",
        "| | count |",
        "|---|---:|",
    ]
    out += [f"| {k} | {v} |" for k, v in fig["tally"].items()]
    return "\n".join(out) + "\n"


def plots(fig: SoakFigures, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def chart(name: str, title: str, ylabel: str, series: dict[str, tuple[list[float], list[float]]]) -> None:
        fig_, ax = plt.subplots(figsize=(10, 4.5))
        for label, (xs, ys) in sorted(series.items()):
            ax.plot(xs, ys, label=label, marker="." if len(xs) < 30 else None)
        for f in fig["faults"]:
            ax.axvline(f["at"] / 60.0, color="grey", alpha=0.4, linestyle="--")
        ax.set_title(title + " (dashed lines: faults)")
        ax.set_xlabel("minutes")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=7, ncol=3, loc="upper left")
        fig_.tight_layout()
        fig_.savefig(out_dir / name, dpi=90)
        plt.close(fig_)

    starts = fig["p95_ms"]["window_starts"]
    width = fig["window_seconds"]
    xs = [(s + width / 2) / 60.0 for s in starts]
    chart(
        "p95.png",
        f"p95 per operation per {int(width // 60)}-minute window",
        "ms",
        {op: (xs, vals) for op, vals in fig["p95_ms"]["operations"].items()},
    )

    def over_time(
        key: Literal["rss_mb", "outbox_age_s", "consumer_pending"],
    ) -> dict[str, tuple[list[float], list[float]]]:
        series: dict[str, tuple[list[float], list[float]]] = {}
        for s in fig["samples"]:
            for name, value in s[key].items():
                series.setdefault(name, ([], []))
                series[name][0].append(s["at"] / 60.0)
                series[name][1].append(value)
        return series

    chart("rss.png", "resident memory per process", "MiB", over_time("rss_mb"))
    chart("outbox_age.png", "age of the oldest unpublished outbox row", "seconds", over_time("outbox_age_s"))
    chart("consumer_lag.png", "consumer lag (messages not yet acknowledged)", "messages", over_time("consumer_pending"))


def write(run: Run, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    fig = figures(run)
    (out_dir / "soak.json").write_text(json.dumps(fig, indent=1, default=str))
    return render(read_figures(json.loads((out_dir / "soak.json").read_text())), out_dir)


def render(fig: SoakFigures, out_dir: Path) -> Path:
    """The report and its plots from the figures (those of ``soak.json``)."""
    plots(fig, out_dir)
    path = out_dir / "report.md"
    path.write_text(markdown(fig))
    return path
