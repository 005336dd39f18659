"""`his bench` runs every suite in its smallest form and writes a Markdown and a JSON report.

A smoke test, not a measurement: it proves that the whole report is produced — raw baselines,
the system's figures with their ratios and pass/miss, latencies, resident memory per process,
`his up` to healthy, the patient read's CPU breakdown, the machine's noise — and that every
request of the run was answered as expected.
"""

from __future__ import annotations

import json
from pathlib import Path

from his.benchmarks import full_report
from his.benchmarks.full import FullConfig, run


def test_bench_writes_a_report_with_every_section(tmp_path: Path) -> None:
    # The servers live in the default temporary directory: pytest resets the permissions of its
    # own base directory when another session starts, and PostgreSQL runs as another user.
    rep = run(FullConfig.tiny(), say=lambda _: None)
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
