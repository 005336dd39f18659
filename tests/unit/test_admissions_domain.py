"""Admissions rules without IO: the bed state machine, ward input, and the bed-night rule."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from his.admissions.app import NIGHTLY_DELAY, nightly_charges, until_next_run
from his.admissions.domain import (
    BedAction,
    BedState,
    InvalidTransitionError,
    InvalidWardError,
    Stay,
    Ward,
    WardChanges,
    bed_exits,
    bed_labels,
    bed_transition,
    check_rate,
    last_chargeable_night,
    local_date,
    nights_due,
    nights_of_stay,
    ward_for_night,
)

IST = ZoneInfo("Europe/Istanbul")  # UTC+3 all year


def d(day: int, month: int = 3) -> date:
    return date(2026, month, day)


# --- beds --------------------------------------------------------------------------------------


def test_a_bed_goes_round_available_occupied_cleaning_available() -> None:
    state = BedState.AVAILABLE
    for action, expected in (
        (BedAction.OCCUPY, BedState.OCCUPIED),
        (BedAction.VACATE, BedState.CLEANING),
        (BedAction.RELEASE, BedState.AVAILABLE),
    ):
        state = bed_transition(state, action)
        assert state is expected


@pytest.mark.parametrize(
    ("away", "back"), [(BedAction.CLOSE, BedState.CLOSED), (BedAction.ISOLATE, BedState.ISOLATION)]
)
def test_closed_and_isolation_beds_come_back(away: BedAction, back: BedState) -> None:
    assert bed_transition(BedState.AVAILABLE, away) is back
    assert bed_transition(back, BedAction.OPEN) is BedState.AVAILABLE
    with pytest.raises(InvalidTransitionError):
        bed_transition(back, BedAction.OCCUPY)  # nobody is put in a closed or isolation bed


def test_every_state_has_a_way_out_and_back_to_available() -> None:
    for state in BedState:
        assert bed_exits(state), state
        seen, frontier = {state}, [state]
        while frontier:
            s = frontier.pop()
            for a in bed_exits(s):
                nxt = bed_transition(s, a)
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert BedState.AVAILABLE in seen and seen == set(BedState)


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (BedState.OCCUPIED, BedAction.RELEASE),  # a patient is still in it
        (BedState.OCCUPIED, BedAction.CLOSE),
        (BedState.OCCUPIED, BedAction.OCCUPY),  # never two patients
        (BedState.CLEANING, BedAction.OCCUPY),
        (BedState.CLEANING, BedAction.OPEN),
        (BedState.AVAILABLE, BedAction.RELEASE),
        (BedState.AVAILABLE, BedAction.VACATE),
        (BedState.CLOSED, BedAction.ISOLATE),
        (BedState.ISOLATION, BedAction.CLOSE),
    ],
)
def test_invalid_bed_steps_are_refused(state: BedState, action: BedAction) -> None:
    with pytest.raises(InvalidTransitionError, match=state.value):
        bed_transition(state, action)


def test_beds_are_spread_over_rooms() -> None:
    assert [b for _, b in bed_labels(7, 3)] == ["R1-B1", "R1-B2", "R1-B3", "R2-B1", "R2-B2", "R3-B1", "R3-B2"]
    assert bed_labels(2, None) == [("R1", "R1-B1"), ("R1", "R1-B2")]
    assert len({b for _, b in bed_labels(200, 37)}) == 200


@pytest.mark.parametrize(("beds", "rooms"), [(0, None), (-1, None), (201, None), (3, 4), (3, 0)])
def test_bad_bed_counts_are_refused(beds: int, rooms: int | None) -> None:
    with pytest.raises(InvalidWardError):
        bed_labels(beds, rooms)


def test_rates_are_exact_non_negative_amounts() -> None:
    assert check_rate(Decimal("2500")) == Decimal("2500.00")
    assert check_rate(Decimal("0")) == Decimal("0.00")
    for bad in ("-1", "0.001", "NaN", "Infinity", "1e12"):
        with pytest.raises(InvalidWardError):
            check_rate(Decimal(bad))


def test_a_correction_keeps_only_what_differs_from_the_ward() -> None:
    ward = Ward(uuid.uuid4(), "General", "general", Decimal("1750.50"), "TRY", datetime(2026, 3, 1, tzinfo=UTC), 1)
    asked = WardChanges(name="General", ward_type="general_med", daily_rate=Decimal("1750.5"), currency=None)
    assert asked.against(ward) == WardChanges(ward_type="general_med")
    assert asked.against(ward).names == ["ward_type"]
    assert WardChanges(name="General Medicine", currency="EUR").names == ["name", "currency"]
    assert WardChanges().against(ward).names == []


# --- the bed-night rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("admitted", "discharged", "nights"),
    [
        (d(3), d(3), [d(3)]),  # same day: one night
        (d(3), d(4), [d(3)]),  # overnight: the admission day, not the discharge day
        (d(3), d(6), [d(3), d(4), d(5)]),
        (d(28, 2), d(2), [d(28, 2), d(1)]),  # across a month end (2026 is not a leap year)
        (date(2026, 12, 31), date(2027, 1, 1), [date(2026, 12, 31)]),
    ],
)
def test_nights_of_a_finished_admission(admitted: date, discharged: date, nights: list[date]) -> None:
    assert nights_due(admitted, discharged, discharged) == nights
    assert nights_of_stay(admitted, discharged) == len(nights)
    # A later run of the nightly job never adds nights to a finished admission.
    assert nights_due(admitted, discharged, discharged + timedelta(days=30)) == nights


def test_an_ongoing_admission_is_charged_up_to_the_night_of_the_run() -> None:
    assert nights_due(d(3), None, d(2)) == []  # run for a night before the admission
    assert nights_due(d(3), None, d(3)) == [d(3)]
    assert nights_due(d(3), None, d(5)) == [d(3), d(4), d(5)]


def test_catch_up_after_skipped_nights_charges_each_night_once() -> None:
    posted: list[date] = []
    for run in (d(3), d(4), d(4), d(7)):  # a re-run, then three nights skipped
        posted += [n for n in nights_due(d(3), None, run) if n not in posted]
    assert posted == [d(3), d(4), d(5), d(6), d(7)]
    # The discharge on the 9th posts what the job has not: the 8th (the 9th is the discharge day).
    posted += [n for n in nights_due(d(3), d(9), d(9)) if n not in posted]
    assert posted == [d(3) + timedelta(days=i) for i in range(6)]


def test_the_discharge_cannot_come_before_the_admission() -> None:
    with pytest.raises(ValueError, match="before"):
        last_chargeable_night(d(5), d(4))
    assert last_chargeable_night(d(5), None) is None


def test_nights_follow_the_local_date_not_utc() -> None:
    # 22:30 UTC on 3 March is 01:30 on 4 March in Istanbul: the admission day is the 4th there.
    late = datetime(2026, 3, 3, 22, 30, tzinfo=UTC)
    assert local_date(late, IST) == d(4)
    assert local_date(late, ZoneInfo("UTC")) == d(3)
    with pytest.raises(ValueError, match="zone"):
        local_date(datetime(2026, 3, 3, 22, 30), IST)  # no zone: the point of the test


def at(day: date, hour: float, zone: ZoneInfo = IST) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone) + timedelta(hours=hour)


def test_a_night_is_charged_at_the_rate_of_the_ward_the_patient_slept_in() -> None:
    stays = [
        Stay("general", at(d(3), 10), at(d(4), 15)),
        Stay("icu", at(d(4), 15), at(d(4), 23.5)),  # in intensive care for the afternoon only
        Stay("general", at(d(4), 23.5), at(d(5), 9)),
        Stay("maternity", at(d(5), 9), None),
    ]
    assert ward_for_night(stays, d(3), IST) == "general"
    assert ward_for_night(stays, d(4), IST) == "general"  # moved back before midnight
    assert ward_for_night(stays, d(5), IST) == "maternity"
    assert ward_for_night(stays, d(9), IST) == "maternity"
    # A transfer just after midnight belongs to the next night.
    early = [Stay("general", at(d(3), 10), at(d(4), 0.25)), Stay("icu", at(d(4), 0.25), None)]
    assert ward_for_night(early, d(3), IST) == "general"
    assert ward_for_night(early, d(4), IST) == "icu"


def test_on_the_discharge_day_the_rate_is_where_the_patient_left_from() -> None:
    # Admitted and discharged the same day after a transfer: the one night is the second ward's.
    stays = [Stay("general", at(d(3), 8), at(d(3), 12)), Stay("icu", at(d(3), 12), at(d(3), 18))]
    assert nights_due(d(3), d(3), d(3)) == [d(3)]
    assert ward_for_night(stays, d(3), IST) == "icu"
    with pytest.raises(ValueError, match="stay"):
        ward_for_night([], d(3), IST)


# --- the nightly run's clock ---------------------------------------------------------------------


def test_the_nightly_run_is_shortly_after_local_midnight() -> None:
    evening = datetime(2026, 3, 3, 20, 0, tzinfo=UTC)  # 23:00 in Istanbul
    assert until_next_run(evening, IST) == timedelta(hours=1) + NIGHTLY_DELAY
    just_after = at(d(4), 0.05)  # 00:03, before the run
    assert until_next_run(just_after, IST) == NIGHTLY_DELAY - timedelta(minutes=3)
    assert until_next_run(at(d(4), 0) + NIGHTLY_DELAY, IST) == timedelta(days=1)


@pytest.mark.parametrize(
    ("moment", "wait"),
    [
        (datetime(2027, 3, 28, 0, 30, tzinfo=ZoneInfo("Europe/Berlin")), timedelta(hours=22, minutes=30)),
        (datetime(2027, 10, 31, 0, 30, tzinfo=ZoneInfo("Europe/Berlin")), timedelta(hours=24, minutes=30)),
        (datetime(2028, 2, 28, 23, 59, tzinfo=ZoneInfo("Europe/Berlin")), timedelta(minutes=1)),
    ],
)
def test_the_wait_for_the_nightly_run_is_elapsed_time_on_the_days_the_clocks_change(
    moment: datetime, wait: timedelta
) -> None:
    """From 00:30 to the next midnight is 22½ hours on the day the clocks go forward, 24½ on the
    day they go back."""
    assert until_next_run(moment, ZoneInfo("Europe/Berlin")) == wait + NIGHTLY_DELAY


def test_the_nightly_task_runs_at_start_then_after_each_midnight(monkeypatch: pytest.MonkeyPatch) -> None:
    from his.admissions import handlers

    clock = [at(d(4), 15)]
    runs: list[date] = []
    waits: list[float] = []

    async def run_charges(db: object, through: date, zone: ZoneInfo) -> None:
        runs.append(through)
        if len(runs) == 2:
            raise RuntimeError("database down")

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += timedelta(seconds=seconds)
        if len(waits) == 3:
            raise asyncio.CancelledError

    monkeypatch.setattr(handlers, "run_charges", run_charges)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(nightly_charges(None, IST, clock=lambda: clock[0], sleep=sleep))  # type: ignore[arg-type]
    assert runs == [d(3), d(4), d(4)]  # at start; after midnight (failed); retried
    assert waits[0] == (timedelta(hours=9) + NIGHTLY_DELAY).total_seconds()
    assert waits[1] == timedelta(minutes=10).total_seconds()
