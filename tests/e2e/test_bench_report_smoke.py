"""`his bench` runs every suite in its smallest form and writes a Markdown and a JSON report.

A smoke test, not a measurement: it proves that the whole report is produced — raw baselines,
the system's figures with their ratios and pass/miss, latencies, resident memory per process,
`his up` to healthy, the patient read's CPU breakdown, the machine's noise — that every request
of the run was answered as expected (every booking answered 201 is in the database, and the
baseline's rows too), and that no process of the private hospital is left behind.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from his.benchmarks import booking_report, full_report
from his.benchmarks.full import FullConfig, run


def test_bench_writes_a_report_with_every_section(tmp_path: Path) -> None:
    # The servers live in the default temporary directory: pytest resets the permissions of its
    # own base directory when another session starts, and PostgreSQL runs as another user.
    said: list[str] = []
    cfg = FullConfig.tiny()
    rep = run(cfg, say=said.append)
    md, js = full_report.write(rep, tmp_path / "reports")
    text = md.read_text()
    for section in full_report.SECTIONS:
        assert f"## {section}" in text, section
    doc = json.loads(js.read_text())
    assert doc["errors"] == []
    sections = {r["section"] for r in doc["rows"]}
    assert sections == {"raw", "system", "rss", "startup"}
    figures = {r["figure"]: r for r in doc["rows"]}
    read = next(r for f, r in figures.items() if f.startswith("patient reads/s"))
    assert read["measured"] > 0 and read["baseline"] > 0 and read["result"] in ("pass", "MISS")
    assert any(f.startswith("patient read latency p99 ") for f in figures)
    services = {r["figure"] for r in doc["rows"] if r["section"] == "rss" and r["target"]}
    assert {"gateway", "patients", "scheduling"} <= services
    assert doc["startup"]["cold_s"] > 0
    raw = {r["figure"].split(",")[0] for r in doc["rows"] if r["section"] == "raw"}
    assert {"asyncpg INSERT + commit", "asyncpg SELECT by primary key", "bare ASGI endpoint"} <= raw

    # The booking suite, on the same hospital: every figure beside its baseline, every booking
    # answered 201 and in the database.
    booking = full_report.booking_results(rep)
    assert booking is not None
    assert booking["errors"] == [], booking["errors"]
    tp = booking["throughput"]
    assert all(tp["per_s"][t] > 0 for t in ("booking", "baseline", "direct")) and tp["ratio"] > 0
    assert tp["cpu_ms_per_request"]["booking"]["gateway"] > 0
    assert set(booking["latency"]) >= {f"{cfg.booking.rate:g}"}
    for cell in booking["latency"].values():
        for path in ("booking", "baseline"):
            summary = cell[path]["latency"]
            assert summary["count"] == round(cell["rate_per_s"] * cfg.booking.seconds)
            assert {"p50_ms", "p95_ms", "p99_ms", "p99.9_ms"} <= set(summary)
    checked = booking["verify"]
    assert checked["appointments"] == checked["bookings_answered_201"] > 0
    assert checked["baseline_rows"] == checked["baseline_answered_201"] > 0
    assert set(checked["statuses"]["booking"]) == {201}
    booked = booking_report.rows(booking)
    assert len(booked) == 2 + 4 * len(booking["latency"])
    assert all(not math.isnan(r.measured) and r.baseline for r in booked)

    # Nothing of the private hospital is left running, and its directory is gone.
    [workdir] = [m.group(1) for line in said if (m := re.search(r"private hospital \(his up\) in (\S+)", line))]
    assert not Path(workdir).exists()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            assert workdir.encode() not in environ, f"process {entry.name} was left running"
