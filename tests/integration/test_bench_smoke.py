"""`his bench backbone` runs end to end with tiny sizes and reports every figure.

A smoke test, not a measurement: it proves each benchmark path works (own servers, relay,
consumer, writes, checks of every operation) and that the report has all its keys.
"""

from __future__ import annotations

import math

from his.benchmarks.backbone import run
from his.benchmarks.common import BenchConfig
from his.benchmarks.report import rows
from his.kernel.events import registry


def test_backbone_benchmark_reports_every_figure_against_its_baseline() -> None:
    cfg = BenchConfig.tiny()
    report = run(cfg, say=lambda _: None)
    res = report["results"]
    assert res["servers"]["durability_checked"]
    assert set(res) >= {"latency", "drain", "consumer", "writes", "cpu"}
    lat = res["latency"]
    events = round(cfg.rate * cfg.latency_seconds)
    summaries = [
        *(lat["relay"][k] for k in ("commit_to_ack", "commit_to_stored", "intended_start_to_ack")),
        *(lat["direct"][k] for k in ("commit_to_ack", "intended_start_to_ack")),
        lat["bare"]["publish_to_ack"],
    ]
    for summary in summaries:
        assert summary["count"] == events
        assert {"p50_ms", "p95_ms", "p99_ms", "max_ms"} <= set(summary)
    assert lat["relay"]["publish_errors"] == 0
    for key in ("drain", "consumer"):
        assert res[key]["ratio"] > 0
    for w in cfg.writers:
        cell = res["writes"][str(w)]
        assert isinstance(cell, dict)
        assert set(cell["tx_per_s"]) == {"plain", "outbox", "wake_local", "wake_notify", "notify_in_tx"}
        assert all(v > 0 for v in cell["tx_per_s"].values())
        assert cell["notifications_received"] > 0
    figures = rows(res)
    assert len(figures) == 3 + 2 + 2 + 2 + 1 + 1 + 4 * len(cfg.writers)
    assert all(not math.isnan(r.measured) for r in figures)
    assert {r["figure"] for r in report["rows"]} == {r.figure for r in figures}
    # The benchmark's event types were registered for the run only.
    assert not any(t.startswith("his.bench.") for t in registry.types)
