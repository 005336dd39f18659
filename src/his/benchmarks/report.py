"""The figures of ``his bench backbone`` as rows (measured, baseline, ratio, target) and a table."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict, final

from rich.console import Console
from rich.table import Table

from his.benchmarks.harness import Machine, Noise, ServerFacts
from his.kernel.json import JsonMapping

#: Share of the machine's CPU used by other processes (or stolen) above which a run is noisy.
NOISY_CPU = 0.10


def noisy(part: Noise) -> bool:
    return part.get("other_cpu_share", 0.0) + part.get("steal_share", 0.0) > NOISY_CPU


class RowDict(TypedDict):
    """A row as the JSON reports hold it (``Row.as_dict``)."""

    figure: str
    measured: float
    baseline: float | None
    unit: str
    ratio: float | None
    target: str | None
    verdict: str
    #: A booking figure's failed requests (``booking_report.Figure``).
    errors: NotRequired[int]


@dataclass(frozen=True)
class Row:
    figure: str
    measured: float
    baseline: float | None
    unit: str
    ratio: float | None
    #: (floor, aim): the floor must hold, the aim is what the design asks for (docs/performance.md, Targets);
    #: "max" targets bound ``measured`` from above, "min" targets bound ``ratio`` from below.
    target: tuple[float | None, float] | None = None
    kind: str = "min"

    def verdict(self) -> str:
        if self.target is None:
            return "info"
        floor, aim = self.target
        value = self.measured if self.kind == "max" else self.ratio
        if value is None or math.isnan(value):
            return "n/a"
        if self._meets(value, aim):
            return "aim met"
        if floor is None:
            return "aim missed"
        return "floor met" if self._meets(value, floor) else "MISSED"

    def _meets(self, value: float, threshold: float) -> bool:
        return value <= threshold if self.kind == "max" else value >= threshold

    def target_text(self) -> str:
        if self.target is None:
            return ""
        floor, aim = self.target
        sign = "≤" if self.kind == "max" else "≥"
        what = self.unit if self.kind == "max" else ""
        if floor is None:
            return f"aim {sign} {aim:g}{what}"
        if floor == aim:
            return f"{sign} {aim:g}{what}"
        return f"aim {sign} {aim:g}{what}, floor {floor:g}{what}"

    def as_dict(self) -> RowDict:
        return {
            "figure": self.figure,
            "measured": self.measured,
            "baseline": self.baseline,
            "unit": self.unit,
            "ratio": self.ratio,
            "target": self.target_text() or None,
            "verdict": self.verdict(),
        }


def ratio_of(a: float, b: float) -> float:
    return a / b if b else math.nan


# -- what ``his bench backbone`` measures (each latency a ``Latencies.summary()``) --------------


class AckLatencies(TypedDict):
    commit_to_ack: dict[str, float]
    intended_start_to_ack: dict[str, float]


class RelayLatencies(AckLatencies):
    commit_to_stored: dict[str, float]
    batches: int
    publish_errors: int


class BareLatencies(TypedDict):
    publish_to_ack: dict[str, float]


class LatencyResult(TypedDict):
    """Commit → PubAck at a constant rate: the relay, the dual write, bare publishing (``relay``)."""

    rate_per_s: float
    seconds: float
    slices: int
    events: int
    scheduler_lag_max_ms: float
    relay: RelayLatencies
    direct: AckLatencies
    bare: BareLatencies


class DrainResult(TypedDict):
    """The relay draining a full outbox against raw pipelined publishing (``relay``)."""

    events: int
    relay_per_s: float
    raw_per_s: float
    ratio: float
    relay_batches: int


class ConsumerResult(TypedDict):
    """The consumer loop with its inbox against a raw pull consumer (``inbox``)."""

    events: int
    rounds: int
    batch: int
    loop_per_s: float
    raw_per_s: float
    rounds_per_s: dict[str, list[float]]
    ratio: float


class WritesCell(TypedDict):
    """Every write variant at one number of writers (``writes``)."""

    tx_per_s: dict[str, float]
    tx_per_s_rounds: dict[str, list[float]]
    notifications_received: int
    outbox_vs_plain: float
    wake_local_vs_outbox: float
    wake_notify_vs_outbox: float
    notify_in_tx_vs_outbox: float


WriteRatio = Literal["outbox_vs_plain", "wake_local_vs_outbox", "wake_notify_vs_outbox", "notify_in_tx_vs_outbox"]
#: ``seconds_per_cell`` and ``rounds``, then a ``WritesCell`` per number of writers (``"8"``, ``"32"``).
WritesResult = dict[str, float | WritesCell]


class BackboneResults(TypedDict):
    servers: ServerFacts
    latency: LatencyResult
    drain: DrainResult
    consumer: ConsumerResult
    writes: WritesResult
    #: How busy the machine was during each part, by part.
    cpu: dict[str, Noise]


@final
class BackboneReport(TypedDict):
    """What ``his bench backbone --json`` prints and ``his bench`` keeps under ``backbone``."""

    benchmark: str
    config: JsonMapping
    machine: Machine
    seconds: float
    results: BackboneResults
    rows: list[RowDict]


#: Each write variant's figure: (variant, its baseline, label, target, the cell's ratio of the two).
WRITE_FIGURES: tuple[tuple[str, str, str, tuple[float | None, float] | None, WriteRatio], ...] = (
    ("outbox", "plain", "writes + outbox rows", (None, 0.5), "outbox_vs_plain"),
    ("wake_local", "outbox", "writes + in-process wake-up", (None, 0.9), "wake_local_vs_outbox"),
    ("wake_notify", "outbox", "writes + coalesced NOTIFY wake-up", (None, 0.9), "wake_notify_vs_outbox"),
    ("notify_in_tx", "outbox", "writes + NOTIFY in every tx (rejected design)", None, "notify_in_tx_vs_outbox"),
)


def rows(results: BackboneResults) -> list[Row]:
    out: list[Row] = []
    lat = results.get("latency")
    if lat:
        relay, direct = lat["relay"], lat["direct"]
        rate = f"{lat['rate_per_s']:g}/s"
        targets: dict[str, tuple[float | None, float] | None] = {"p50": None, "p95": (25.0, 10.0), "p99": (None, 25.0)}
        for p, target in targets.items():
            m, base = relay["commit_to_ack"][f"{p}_ms"], direct["commit_to_ack"][f"{p}_ms"]
            out.append(Row(f"commit → PubAck {p} (relay, {rate})", m, base, " ms", ratio_of(m, base), target, "max"))
        for p in ("p95", "p99"):
            m, base = relay["intended_start_to_ack"][f"{p}_ms"], direct["intended_start_to_ack"][f"{p}_ms"]
            out.append(Row(f"intended start → PubAck {p} (relay)", m, base, " ms", ratio_of(m, base)))
        stored, bare = relay["commit_to_stored"], lat["bare"]["publish_to_ack"]
        for p in ("p95", "p99"):
            out.append(Row(f"commit → stored in stream {p} (relay)", stored[f"{p}_ms"], None, " ms", None))
        for p in ("p95", "p99"):
            out.append(Row(f"bare publish → PubAck {p} (JetStream floor)", bare[f"{p}_ms"], None, " ms", None))
    drain = results.get("drain")
    if drain:
        out.append(
            Row("relay drain rate", drain["relay_per_s"], drain["raw_per_s"], " ev/s", drain["ratio"], (0.5, 0.75))
        )
    cons = results.get("consumer")
    if cons:
        out.append(
            Row("consumer with inbox", cons["loop_per_s"], cons["raw_per_s"], " ev/s", cons["ratio"], (0.7, 0.7))
        )
    writes = results.get("writes") or {}
    for w, cell in writes.items():
        if not isinstance(cell, dict):
            continue
        tx = cell["tx_per_s"]
        for variant, against, label, target, ratio in WRITE_FIGURES:
            out.append(Row(f"{label}, {w} writers", tx[variant], tx[against], " tx/s", cell[ratio], target))
    return out


def num(value: float | None, unit: str, ms_digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return ""
    if unit.strip() == "ms":
        return f"{value:.{ms_digits}f}{unit}"
    return f"{value:,.0f}{unit}"


@contextlib.contextmanager
def wide(console: Console) -> Iterator[None]:
    """Piped output would wrap tables at 80 columns: give them room while printing."""
    width = console.width
    if not console.is_terminal:
        console.width = max(width, 150)
    try:
        yield
    finally:
        console.width = width


def render(console: Console, report: BackboneReport) -> None:
    with wide(console):
        _render(console, report)


def _render(console: Console, report: BackboneReport) -> None:
    table = Table(title="his bench backbone — each figure against a raw baseline from the same run")
    for col in ("figure", "measured", "raw baseline", "ratio", "target", "verdict"):
        table.add_column(col, justify="left" if col in ("figure", "target") else "right")
    styles = {"aim met": "green", "floor met": "yellow", "aim missed": "yellow", "MISSED": "bold red"}
    for r in rows(report["results"]):
        verdict = r.verdict()
        style = styles.get(verdict, "")
        table.add_row(
            r.figure,
            num(r.measured, r.unit),
            num(r.baseline, r.unit),
            "" if r.ratio is None or math.isnan(r.ratio) else f"{r.ratio:.2f}",
            r.target_text(),
            f"[{style}]{verdict}[/]" if style else verdict,
        )
    console.print(table)
    m, s = report["machine"], report["results"].get("servers", {})
    console.print(
        f"machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB, Python {m['python']}; "
        f"PostgreSQL {s.get('postgresql', '?')} (synchronous_commit=on), NATS {s.get('nats_server', '?')} "
        f"(JetStream file storage, sync_interval: always); run took {report['seconds']:.0f}s"
    )
    cpu = report["results"].get("cpu", {})
    if cpu:
        parts = []
        for name, c in cpu.items():
            steal = f" +{c['steal_share'] * 100:.0f}% steal" if c["steal_share"] > 0.01 else ""
            disk = f", probe fsync p99 {c['fsync_p99_ms']:.1f} ms" if "fsync_p99_ms" in c else ""
            parts.append(f"{name}: others {c['other_cpu_share'] * 100:.0f}% CPU{steal}{disk}")
        console.print("machine noise — " + "; ".join(parts))
        if any(noisy(c) for c in cpu.values()):
            console.print(
                "[bold yellow]noisy run:[/] other processes used more than "
                f"{NOISY_CPU:.0%} of the CPU in some part; its figures are less reliable than a quiet run's."
            )
    console.print(
        "latency baseline: the same writes without outbox rows, each followed by publish_async after its commit "
        "(a dual write), at the same rate. Latency ratios are relay / baseline (lower is better); throughput "
        "ratios measured / baseline (higher is better). Details: docs/performance.md."
    )
