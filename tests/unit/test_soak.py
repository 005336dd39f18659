"""The soak's own logic, without a hospital: when its faults land, whether a fault landed, and the
report it renders from its figures."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from typing import Any

import pytest

from his.reliability.history import History
from his.reliability.soak import (
    FAULTS,
    QUIET_TAIL,
    STALLED,
    Fault,
    Op,
    Run,
    SoakConfig,
    busy,
    due,
    fault_plan,
    felt,
)
from his.reliability.soak_report import SoakFigures, figures, markdown, read_figures, summary


def plan(minutes: float, seed: int, **kw: Any) -> list[tuple[float, str]]:
    return fault_plan(SoakConfig(minutes, seed=seed, **kw), random.Random(seed))


# --- the fault plan -------------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [1, 2, 30])
def test_the_plan_is_the_same_for_the_same_seed_and_differs_for_another(minutes: float) -> None:
    assert plan(minutes, 13) == plan(minutes, 13)
    assert plan(minutes, 13) != plan(minutes, 14)


@pytest.mark.parametrize(("minutes", "seed"), [(1, 0), (2, 13), (2, 7), (30, 1)])
def test_every_kind_lands_once_per_round_in_a_shuffled_order(minutes: float, seed: int) -> None:
    kinds = [k for _, k in plan(minutes, seed)]
    assert len(kinds) >= len(FAULTS), kinds  # one full round at least, even in a minute
    full = len(kinds) - len(kinds) % len(FAULTS)
    for i in range(0, full, len(FAULTS)):
        assert sorted(kinds[i : i + len(FAULTS)]) == sorted(FAULTS), kinds
    tail = kinds[full:]
    assert len(tail) == len(set(tail)), kinds  # a cut-off last round repeats no kind
    orders = {tuple(k for _, k in plan(30, s)[: len(FAULTS)]) for s in range(20)}
    assert len(orders) > 1  # shuffled, not one fixed order


@pytest.mark.parametrize(("minutes", "seed"), [(1, 0), (2, 13), (30, 1)])
def test_the_first_fault_lands_early_and_none_in_the_last_tenth(minutes: float, seed: int) -> None:
    times = [t for t, _ in plan(minutes, seed)]
    assert times == sorted(times)
    assert times[0] <= 5.0
    assert times[-1] <= minutes * 60 * (1 - QUIET_TAIL)


def test_only_the_chosen_faults_are_planned_and_none_when_none_are_chosen() -> None:
    assert {k for _, k in plan(5, 3, faults=("kill", "slow"))} == {"kill", "slow"}
    assert plan(5, 3, faults=()) == []


def test_a_fault_is_due_at_its_time_and_never_in_the_quiet_tail() -> None:
    cfg = SoakConfig(2)
    todo = [(10.0, "kill"), (20.0, "nats"), (30.0, "slow")]
    assert due(todo, 9.9, cfg) is None
    assert due(todo, 10.0, cfg) == "kill"
    assert due(todo, 50.0, cfg) == "nats"  # late (the fault before it took long): still injected
    assert due(todo, cfg.seconds * (1 - QUIET_TAIL) + 0.1, cfg) is None  # late into the tail: not
    assert todo == [(30.0, "slow")]  # left in the plan, counted as not injected


# --- did a fault land? ----------------------------------------------------------------------------------


def test_a_kill_landed_when_the_pid_changed_and_requests_failed() -> None:
    def kill(**kw: Any) -> Fault:
        return Fault("kill", "patients", 10.0, **({"recovered_at": 15.0, "pid_before": 100} | kw))

    assert kill(pid_after=200, failed_requests=3).landed
    assert not kill(pid_after=100, failed_requests=3).landed  # the same process: the kill missed
    assert not kill(pid_after=None, failed_requests=3).landed  # not started again
    assert not kill(pid_after=200).landed  # no request felt it
    assert not kill(pid_after=200, failed_requests=3, recovered_at=math.nan).landed  # not back


def test_nats_landed_when_writes_were_answered_while_it_was_down() -> None:
    f = Fault("nats", "nats", 10.0, recovered_at=20.0, pid_before=1, pid_after=2, failed_requests=0)
    assert not f.landed  # no write went on: nothing waited in an outbox
    f.told_while_down = 4
    assert f.landed


def test_slow_landed_on_the_same_pid_when_requests_stalled() -> None:
    f = Fault("slow", "scheduling", 10.0, recovered_at=16.0, pid_before=7, pid_after=7)
    assert not f.landed
    f.failed_requests = 1
    assert f.landed


def ops(*rows: tuple[float, float, str]) -> list[Op]:
    return [Op(at, "book", seconds, outcome, write=True) for at, seconds, outcome in rows]


def test_felt_counts_what_met_the_fault_and_what_was_answered_while_it_was_down() -> None:
    run = Run(SoakConfig(1))
    run.ops = ops(
        (5.0, 0.1, "uncertain"),  # before the fault: not counted
        (9.5, 1.0, "uncertain"),  # in flight when it struck: counted
        (12.0, 0.2, "uncertain"),
        (13.0, 0.1, "told"),  # answered while down
        (14.0, 0.1, "refused"),
        (25.0, 0.1, "uncertain"),  # after recovery: not counted
    )
    f = Fault("postgres", "postgres", 10.0, recovered_at=20.0, down=(11.0, 19.0))
    felt(run, f)
    assert (f.failed_requests, f.told_while_down) == (2, 1)
    run.ops.append(Op(13.5, "read patient", 0.1, "told"))  # a read: no event waited for NATS
    felt(run, f)
    assert f.told_while_down == 1


def test_a_fault_still_lasting_counts_everything_since_it_struck() -> None:
    run = Run(SoakConfig(1))
    run.ops = ops((9.0, 0.5, "uncertain"), (12.0, 0.2, "uncertain"), (40.0, 0.1, "told"))
    f = Fault("nats", "nats", 10.0, down=(11.0, math.nan))  # not back yet
    felt(run, f)
    assert (f.failed_requests, f.told_while_down) == (1, 1)


def test_a_request_stalled_by_a_frozen_service_counts_for_slow_only() -> None:
    run = Run(SoakConfig(1))
    run.ops = ops((11.0, STALLED + 0.5, "told"), (12.0, 0.1, "told"))
    slow = Fault("slow", "admissions", 10.0, recovered_at=16.0)
    kill = Fault("kill", "admissions", 10.0, recovered_at=16.0)
    felt(run, slow)
    felt(run, kill)
    assert (slow.failed_requests, kill.failed_requests) == (1, 0)


# --- the report ---------------------------------------------------------------------------------------


def a_run(*, lose: bool = False) -> Run:
    """A finished 2-minute run as the soak would leave it: two faults, four histories checked."""
    run = Run(SoakConfig(2, seed=13))
    run.ops = ops((1.0, 0.05, "told"), (30.0, 0.2, "told"), (70.0, 3.0, "uncertain"), (80.0, 0.1, "refused"))
    run.faults = [
        Fault("kill", "gateway", 12.3, recovered_at=16.0, pid_before=10, pid_after=11, failed_requests=5),
        Fault("nats", "nats", 40.0, recovered_at=55.5, pid_before=20, pid_after=21),  # nothing answered: no
    ]
    visits = History()
    for k in ("v1", "v2"):
        visits.tell(("visit", k))
    stored = [("visit", "v1")] + ([] if lose else [("visit", "v2")])
    visits.observe("database", stored)
    visits.observe("stream", stored)
    run.histories = {"visits": visits}
    run.verdicts = {"visits": visits.check()}
    run.invariants = {"double-booked practitioner slots": 0}
    run.tally.update({"visits completed": 2})
    run.startup_seconds, run.setup_seconds, run.load_seconds = 14.0, 2.5, 120.4
    run.drain_seconds, run.stop_seconds, run.total_seconds = 1.5, 3.0, 142.0
    return run


def rendered(run: Run) -> tuple[SoakFigures, str]:
    fig = read_figures(json.loads(json.dumps(figures(run), default=str)))  # as read back from soak.json
    return fig, markdown(fig)


def test_the_report_renders_from_the_figures_of_soak_json() -> None:
    fig, report = rendered(a_run())
    assert fig["lost"] == fig["duplicated"] == fig["unexpected"] == 0
    assert not fig["ok"]  # the NATS fault did not land: a run that proves nothing fails
    assert "# Soak: 2 minutes, seed 13" in report
    assert "his up 14 s, set-up 2.5 s, load 120.4 s, drain 1.5 s, stop 3 s, total 142 s." in report
    assert "**FAIL**: 0 lost, 0 duplicated, 0 unexpected effects; 2 faults, 1 landed." in report
    assert "| visits | 2 | database 2, stream 2 | none |" in report
    assert "| 1 | 00:12 | kill | gateway | 10 → 11 | 3.7 | 5 | 0 | yes |" in report
    assert "| 2 | 00:40 | nats | nats | 20 → 21 | 15.5 | 0 | 0 | **no** |" in report
    assert "| operation | requests | 00:00 | 01:00 |" in report
    assert "| book | 4 | 200 | 3000 |" in report
    assert "| double-booked practitioner slots | 0 |" in report
    assert "| visits completed | 2 |" in report
    for plot in ("p95.png", "rss.png", "outbox_age.png", "consumer_lag.png"):
        assert f"({plot})" in report
    lines = summary(fig).splitlines()
    assert lines[0] == "soak FAIL: 0 lost, 0 duplicated, 0 unexpected; 2 faults (1 landed); 4 requests"
    assert any(line.startswith("  fault did not land: nats nats at 00:40") for line in lines)
    assert lines[-1] == "  seconds: his up 14, set-up 2.5, load 120.4, drain 1.5, stop 3, total 142"


def test_a_lost_effect_is_named_with_its_stage_and_key_in_the_report_and_the_summary() -> None:
    run = a_run(lose=True)
    run.faults = run.faults[:1]
    fig, report = rendered(run)
    assert fig["lost"] == 1 and not fig["ok"]
    assert "**FAIL**: 1 lost, 0 duplicated" in report
    assert "lost at database: 1" in report and "v2" in report
    text = summary(fig)
    assert text.startswith("soak FAIL: 1 lost, 0 duplicated, 0 unexpected; 1 faults (1 landed)")
    assert "  visits: FAIL (told 2, database 1, stream 1)" in text
    assert "lost at database: 1 (missing from what what clients were told holds): ('visit', 'v2')" in text


def test_a_clean_run_passes_and_a_window_without_requests_shows_a_dash() -> None:
    run = a_run()
    run.faults = run.faults[:1]
    run.ops = [o for o in run.ops if o.at < 60]
    fig, report = rendered(run)
    assert fig["ok"]
    assert "**PASS**: 0 lost, 0 duplicated, 0 unexpected effects; 1 faults, 1 landed." in report
    assert "| book | 2 | 200 | – |" in report
    assert math.isnan(fig["p95_ms"]["operations"]["book"][1])
    assert summary(fig).startswith("soak PASS: 0 lost, 0 duplicated, 0 unexpected")


def test_a_service_fault_aims_at_a_request_its_target_answers() -> None:
    inflight: Counter[str] = Counter({"admit": 0, "book": 1})
    assert busy(inflight, "scheduling")
    assert busy(inflight, "gateway")  # every request goes through it
    assert not busy(inflight, "admissions")  # an admission came back already
    assert not busy(Counter(), "gateway")
    inflight["discharge"] += 1
    assert busy(inflight, "admissions")


def _desk(answers: list[int]) -> tuple[Any, list[str]]:
    """A gateway in memory (httpx.MockTransport: no socket): sign-ins answer ``answers`` in turn
    (200 gives a new token), every other request echoes the token it carried."""
    import httpx

    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/auth/login":
            status = answers.pop(0)
            return httpx.Response(status, json={"access_token": f"token-{len(answers)}"} if status == 200 else {})
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={})

    return httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url="http://gateway"), seen


async def test_staff_sign_in_again_once_before_the_token_expires_and_keep_it_when_that_fails() -> None:
    import asyncio

    from his.reliability.soak import SIGN_IN_AGAIN, Client, Run, Session, SoakConfig

    http, seen = _desk([503, 200])
    run = Run(SoakConfig(minutes=1))
    session = Session("nurse@soak.his.local", "pw", "token-old")
    nurse = Client(http, run, "token-old", session)
    await nurse.call("read", "GET", "/api/beds")
    assert seen == ["Bearer token-old"]  # young: no sign-in
    session.signed_in -= SIGN_IN_AGAIN
    await nurse.call("read", "GET", "/api/beds")  # the sign-in fails: the old token goes on
    assert seen[-1] == "Bearer token-old" and run.tally["sign in again uncertain"] == 1
    await asyncio.gather(*(nurse.call("read", "GET", "/api/beds") for _ in range(5)))
    assert seen[-5:] == ["Bearer token-0"] * 5  # one sign-in for five requests at once
    assert run.tally["sign in again told"] == 1
    await http.aclose()
