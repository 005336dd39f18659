"""The full benchmark report judges memory and start-up against their targets (no IO)."""

from __future__ import annotations

from his.benchmarks import full_report


def rss(after_load: dict[str, float]) -> full_report.RssMb:
    return {"idle": {k: v - 10 for k, v in after_load.items()}, "after_load": after_load}


def startup(warm: list[float]) -> full_report.Startup:
    return {
        "cold_s": 12.0,
        "warm_s": warm,
        "warm_min_s": min(warm),
        "warm_median_s": sorted(warm)[1],
        "cpu_s": [20.0],
        "cpu_s_by_process": {},
    }


def test_each_service_is_held_to_the_memory_limit_but_not_the_servers() -> None:
    rows = {r.figure: r for r in full_report.rss_rows(rss({"patients": 121.0, "gateway": 90.0, "postgres": 300.0}))}
    assert full_report.passed(rows["patients"]) == "MISS"
    assert full_report.passed(rows["gateway"]) == "pass"
    assert rows["postgres"].target is None
    (largest,) = full_report.largest_rss(rss({"patients": 121.0, "gateway": 90.0}))
    assert "patients" in largest.figure


def test_his_up_is_judged_on_the_median_of_the_warm_starts() -> None:
    judged = full_report.startup_rows(startup([8.0, 9.5, 30.0]))[0]
    assert judged.measured == 9.5
    assert full_report.passed(judged) == "pass"
    assert full_report.passed(full_report.startup_rows(startup([8.0, 11.0, 30.0]))[0]) == "MISS"
