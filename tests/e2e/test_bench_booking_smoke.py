"""`his bench booking` runs end to end in its smallest form and reports every figure.

A smoke test, not a measurement: it starts a private hospital with the real `his up`, seeds it
through the gateway, measures each path for a second, and checks that every figure stands next
to its baseline, that every booking was answered 201 and is in the database, and that no
process of the hospital or the baseline is left behind.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from his.benchmarks.booking import BookingConfig, run
from his.benchmarks.booking_report import rows


def test_booking_benchmark_reports_every_figure_against_its_baseline(tmp_path: Path) -> None:
    cfg = BookingConfig.tiny()
    report = run(cfg, say=lambda _: None, workdir=tmp_path)
    res = report["results"]
    assert res["errors"] == [], res["errors"]
    tp = res["throughput"]
    assert all(tp["per_s"][t] > 0 for t in ("booking", "baseline", "direct"))
    assert tp["ratio"] > 0
    assert tp["cpu_ms_per_request"]["booking"]["gateway"] > 0
    assert set(res["latency"]) >= {f"{cfg.rate:g}"}
    for cell in res["latency"].values():
        for path in ("booking", "baseline"):
            summary = cell[path]["latency"]
            assert summary["count"] == round(cell["rate_per_s"] * cfg.seconds)
            assert {"p50_ms", "p95_ms", "p99_ms", "p99.9_ms"} <= set(summary)
    checked = res["verify"]
    assert checked["appointments"] == checked["bookings_answered_201"] > 0
    assert checked["baseline_rows"] == checked["baseline_answered_201"] > 0
    assert set(checked["statuses"]["booking"]) == {201}
    figures = rows(res)
    assert len(figures) == 2 + 4 * len(res["latency"])
    assert all(not math.isnan(r.measured) and r.baseline for r in figures)
    assert any(r.target is not None for r in figures)
    assert res["hospital"]["gateway_limits_raised"]
    # Nothing of the private hospital is left running, and its directory is gone.
    assert not any(tmp_path.iterdir())
    workdir = str(tmp_path)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            assert workdir.encode() not in environ, f"process {entry.name} was left running"
