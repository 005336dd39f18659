"""The admissions service's use cases through its routes, over the in-memory ports (no database,
no network): who may do what (every decision on a patient's admission audited, allowed or
denied), wards and their corrections, the bed state machine, transfers and discharges that move
both beds at once, the nightly charge runs (each night charged once, caught up when missed, at
the rate of the ward slept in), and bad input a 4xx problem.

The routes are the service's own, mounted in-process over ``his.testing.admissions``, whose
contract with the PostgreSQL store is ``tests/integration/test_admissions_contract.py``; what
needs the real servers (admissions racing for beds, concurrent transfers and charge posts, the
database's own constraints, events through NATS) stays in ``tests/integration/test_admissions.py``.
The service's clock stands at noon of a hard date in a hospital with daylight-saving time: every
test runs on new year's day and the day the clocks go back, the nightly runs on every hard date.
Where a test needs nights that are over, it sets an admission's beginning back in the fake's
tables, as the integration tests did with SQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest

from his.admissions.app import NIGHTLY_DELAY, http_over, nightly_charges
from his.admissions.domain import BedState
from his.admissions.handlers import Directories
from his.clients.billing import FakeBillingTerms
from his.clients.patients import CareBasis, FakePatients
from his.clients.practitioners import FakePractitioners
from his.kernel.clock import FakeClock
from his.testing.admissions import FakeAdmissions
from tests.support.api import bearer, serve
from tests.support.calendar import HARD_DATES, HardDate

ADMITTED = "his.admissions.admission.admitted.v1"
TRANSFERRED = "his.admissions.admission.transferred.v1"
DISCHARGED = "his.admissions.admission.discharged.v1"
CHARGED = "his.admissions.bed_charge.posted.v1"


#: The ward's clinician: every patient the world admits is in their care (an admission gives its
#: practitioner care; here the directory is a fake, so the world says so).
CARER = uuid.uuid4()


def as_role(*roles: str) -> dict[str, str]:
    """A caller with these roles; a DOCTOR or NURSE is the ward's clinician, in every patient's care."""
    return bearer(CARER if {"DOCTOR", "NURSE"} & set(roles) else uuid.uuid4(), *roles)


@dataclass
class World:
    client: httpx.AsyncClient
    fake: FakeAdmissions
    patients: FakePatients
    practitioners: FakePractitioners
    hard: HardDate
    clock: FakeClock

    @property
    def today(self) -> date:
        """The hospital's date by its clock."""
        return self.clock().astimezone(self.hard.tz).date()

    async def ward(self, beds: int, rate: str = "1000.00", kind: str = "general", rooms: int | None = None) -> str:
        body: dict[str, Any] = {
            "name": f"Ward {kind}",
            "type": kind,
            "daily_rate": rate,
            "currency": "TRY",
            "beds": beds,
        }
        if rooms is not None:
            body["rooms"] = rooms
        r = await self.client.post("/wards", json=body, headers=as_role("ADMIN"))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def admit(self, ward: str, patient: uuid.UUID | None = None) -> httpx.Response:
        patient = patient or self.patients.add()
        self.patients.care[(patient, CARER)] = CareBasis(in_care=True, emergency=False)
        body = {"patient_id": str(patient), "practitioner_id": str(self.practitioners.add()), "ward_id": ward}
        return await self.client.post("/admissions", json=body, headers=as_role("RECEPTIONIST"))

    async def admitted(self, ward: str) -> dict[str, Any]:
        r = await self.admit(ward)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def bed_state(self, bed: str) -> str:
        return self.fake.state.beds[uuid.UUID(bed)].state.value

    async def backdate(self, admission: str, days: int, hour: int = 10) -> None:
        """Make the admission begin ``days`` days ago (at ``hour`` local time), with its first bed stay."""
        at = self.hard.at(hour, days=-days)
        state, aid = self.fake.state, uuid.UUID(admission)
        state.admissions[aid] = replace(state.admissions[aid], admitted_at=at)
        first = min(s.id for s in state.stays.values() if s.admission_id == aid)
        state.stays[first] = replace(state.stays[first], started_at=at)

    def transferred_at(self, admission: str, at: datetime) -> None:
        """Say the admission's transfer happened ``at``: its stay that ended ends then, its open
        one begins then."""
        state, aid = self.fake.state, uuid.UUID(admission)
        for s in [s for s in state.stays.values() if s.admission_id == aid]:
            state.stays[s.id] = replace(s, ended_at=at) if s.ended_at is not None else replace(s, started_at=at)

    def lose_stays(self, admission: str) -> None:
        """Remove the admission's bed stays: its nights cannot be charged."""
        state, aid = self.fake.state, uuid.UUID(admission)
        state.stays = {k: s for k, s in state.stays.items() if s.admission_id != aid}

    async def run(self, night: date) -> dict[str, Any]:
        r = await self.client.post(
            "/admissions/charges/run", params={"date": night.isoformat()}, headers=as_role("ADMIN")
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def outbox(self, subject: str) -> list[dict[str, Any]]:
        """The data of the events of this type published so far, in commit order."""
        return [e.data for e in self.fake.published if e.type == subject]


@pytest.fixture(params=[HARD_DATES[0], HARD_DATES[4]], ids=str)
def hard(request: pytest.FixtureRequest) -> HardDate:
    """New year's day, or the day the clocks go back (the nightly runs: every hard date)."""
    day: HardDate = request.param
    return day


@pytest.fixture
async def world(hard: HardDate) -> AsyncIterator[World]:
    clock = hard.clock(12, 0)
    fake, patients, practitioners = FakeAdmissions(clock), FakePatients(), FakePractitioners()
    known = Directories(patients, practitioners, FakeBillingTerms())
    async with serve(http_over(fake, known, hard.zone, clock=clock), base_url="http://admissions") as client:
        yield World(client, fake, patients, practitioners, hard, clock)


async def test_transfer_moves_both_beds_at_once_or_not_at_all(world: World) -> None:
    general, icu = await world.ward(3, "1000.00"), await world.ward(1, "5000.00", "icu")
    first, second = await world.admitted(general), await world.admitted(general)
    nurse = as_role("NURSE")
    r = await world.client.post(f"/admissions/{first['id']}/transfer", json={"ward_id": icu}, headers=nurse)
    assert r.status_code == 200, r.text
    moved = r.json()
    assert moved["ward_id"] == icu and moved["bed_id"] != first["bed_id"] and moved["version"] == 2
    assert await world.bed_state(first["bed_id"]) == "cleaning"
    assert await world.bed_state(moved["bed_id"]) == "occupied"

    # The intensive care unit is full: nothing moves.
    r = await world.client.post(f"/admissions/{second['id']}/transfer", json={"ward_id": icu}, headers=nurse)
    assert r.status_code == 409 and r.json()["detail"] == "the ward has no free bed"
    assert await world.bed_state(second["bed_id"]) == "occupied"
    # A named bed must be free and in that ward.
    r = await world.client.post(
        f"/admissions/{second['id']}/transfer", json={"ward_id": icu, "bed_id": moved["bed_id"]}, headers=nurse
    )
    assert r.status_code == 409
    r = await world.client.post(
        f"/admissions/{second['id']}/transfer", json={"ward_id": icu, "bed_id": first["bed_id"]}, headers=nurse
    )
    assert r.status_code == 422
    free = (await world.client.get("/beds", params={"ward_id": general, "state": "available"}, headers=nurse)).json()
    target = free["items"][0]["id"]
    r = await world.client.post(
        f"/admissions/{second['id']}/transfer", json={"ward_id": general, "bed_id": target}, headers=nurse
    )
    assert r.status_code == 200 and r.json()["bed_id"] == target
    assert await world.bed_state(second["bed_id"]) == "cleaning"

    events = await world.outbox(TRANSFERRED)
    assert [(e["from_bed_id"], e["to_bed_id"]) for e in events] == [
        (first["bed_id"], moved["bed_id"]),
        (second["bed_id"], target),
    ]
    one = (await world.client.get(f"/admissions/{first['id']}", headers=as_role("DOCTOR"))).json()
    assert [s["ward_id"] for s in one["stays"]] == [general, icu]
    assert one["stays"][0]["ended_at"] == one["stays"][1]["started_at"]
    assert one["stays"][1]["ended_at"] is None


async def test_discharge_cleaning_release_available(world: World) -> None:
    ward = await world.ward(1)
    a = await world.admitted(ward)
    assert (await world.admit(ward)).status_code == 409  # the only bed is taken
    r = await world.client.post(f"/admissions/{a['id']}/discharge", headers=as_role("NURSE"))
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "discharged" and done["nights"] == 1  # same day: one night
    assert done["bed_id"] == a["bed_id"]
    assert await world.bed_state(a["bed_id"]) == "cleaning"
    assert (await world.admit(ward)).status_code == 409  # a bed being cleaned is not free
    again = await world.client.post(f"/admissions/{a['id']}/discharge", headers=as_role("NURSE"))
    assert again.status_code == 409
    moved = await world.client.post(f"/admissions/{a['id']}/transfer", json={"ward_id": ward}, headers=as_role("NURSE"))
    assert moved.status_code == 409

    bed = a["bed_id"]
    assert (await world.client.post(f"/beds/{bed}/release", headers=as_role("RECEPTIONIST"))).status_code == 403
    assert (await world.client.post(f"/beds/{bed}/open", headers=as_role("NURSE"))).status_code == 409
    r = await world.client.post(f"/beds/{bed}/release", headers=as_role("NURSE"))
    assert r.status_code == 200 and r.json()["state"] == "available"
    assert (await world.client.post(f"/beds/{bed}/release", headers=as_role("NURSE"))).status_code == 409
    for action, state in (("close", "closed"), ("open", "available"), ("isolate", "isolation")):
        r = await world.client.post(f"/beds/{bed}/{action}", headers=as_role("ADMIN"))
        assert r.status_code == 200 and r.json()["state"] == state
    assert (await world.admit(ward)).status_code == 409  # isolation beds take nobody
    assert (await world.client.post(f"/beds/{bed}/open", headers=as_role("NURSE"))).json()["state"] == "available"
    assert (await world.admit(ward)).status_code == 201

    charges = (await world.client.get(f"/admissions/{a['id']}/charges", headers=as_role("BILLING"))).json()
    assert [c["night"] for c in charges["items"]] == [world.today.isoformat()]
    assert charges["totals"] == [{"amount": "1000.00", "currency": "TRY"}]
    discharged = await world.outbox(DISCHARGED)
    assert [(e["admission_id"], e["nights"]) for e in discharged] == [(a["id"], 1)]


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_the_nightly_job_run_twice_charges_once(world: World) -> None:
    ward = await world.ward(4, "2500.00")
    a, b = await world.admitted(ward), await world.admitted(ward)
    fresh = await world.admitted(ward)  # admitted today: no night of it is over yet
    await world.backdate(a["id"], 3)
    await world.backdate(b["id"], 1)
    last_night = world.today - timedelta(days=1)
    first = await world.run(last_night)
    assert first == {"date": last_night.isoformat(), "admissions": 2, "posted": 4, "already_posted": 0, "failed": 0}
    second = await world.run(last_night)
    assert second == {**first, "posted": 0, "already_posted": 4}

    charged = await world.outbox(CHARGED)
    expected = {(a["id"], (world.today - timedelta(days=n)).isoformat()) for n in (3, 2, 1)}
    expected.add((b["id"], last_night.isoformat()))
    assert sorted((e["admission_id"], e["night"]) for e in charged) == sorted(expected)
    assert {(e["amount"], e["currency"], e["ward_type"]) for e in charged} == {("2500.00", "TRY", "general")}
    assert not any(e["admission_id"] == fresh["id"] for e in charged)
    rows = len(world.fake.state.charges)
    assert rows == 4
    r = await world.client.get(f"/admissions/{a['id']}/charges", headers=as_role("BILLING"))
    assert r.json()["nights"] == 3 and r.json()["totals"] == [{"amount": "7500.00", "currency": "TRY"}]


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_a_skipped_night_is_caught_up_and_discharge_posts_the_rest(world: World) -> None:
    ward = await world.ward(2, "800.00")
    a = await world.admitted(ward)
    await world.backdate(a["id"], 4)
    assert (await world.run(world.today - timedelta(days=3)))["posted"] == 2  # nights -4 and -3
    # The run for night -2 never happened; the next one catches it up.
    summary = await world.run(world.today - timedelta(days=1))
    assert (summary["posted"], summary["already_posted"]) == (2, 2)
    r = await world.client.post(f"/admissions/{a['id']}/discharge", headers=as_role("DOCTOR"))
    assert r.status_code == 200 and r.json()["nights"] == 4  # today, the discharge day, is not charged
    nights = [e["night"] for e in await world.outbox(CHARGED)]
    assert nights == [(world.today - timedelta(days=n)).isoformat() for n in (4, 3, 2, 1)]
    assert (await world.outbox(DISCHARGED))[0]["nights"] == 4
    # A discharged admission is never charged again.
    assert (await world.run(world.today - timedelta(days=1)))["admissions"] == 0


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_discharge_posts_every_night_the_job_did_not(world: World) -> None:
    ward = await world.ward(1, "100.00")
    a = await world.admitted(ward)
    await world.backdate(a["id"], 3)
    r = await world.client.post(f"/admissions/{a['id']}/discharge", headers=as_role("RECEPTIONIST"))
    assert r.json()["nights"] == 3
    events = await world.outbox(CHARGED)
    assert [e["night"] for e in events] == [(world.today - timedelta(days=n)).isoformat() for n in (3, 2, 1)]
    subjects = [e.type for e in world.fake.published]
    discharge_events = [s for s in subjects if s in (CHARGED, DISCHARGED)]
    assert discharge_events == [CHARGED] * 3 + [DISCHARGED]  # charges first, in the same transaction


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_each_night_is_charged_at_the_rate_of_the_ward_slept_in(world: World) -> None:
    general, icu = await world.ward(2, "1000.00"), await world.ward(2, "9000.00", "icu")
    a = await world.admitted(general)
    await world.backdate(a["id"], 2)
    r = await world.client.post(f"/admissions/{a['id']}/transfer", json={"ward_id": icu}, headers=as_role("DOCTOR"))
    assert r.status_code == 200
    # Say the transfer happened at noon yesterday: the night of -2 is general's, last night the ICU's.
    noon = world.hard.at(12, days=-1)
    world.transferred_at(a["id"], noon)
    await world.run(world.today - timedelta(days=1))
    charged = [(e["night"], e["ward_type"], e["amount"]) for e in await world.outbox(CHARGED)]
    assert charged == [
        ((world.today - timedelta(days=2)).isoformat(), "general", "1000.00"),
        ((world.today - timedelta(days=1)).isoformat(), "icu", "9000.00"),
    ]


@pytest.mark.parametrize("hard", HARD_DATES[:1], ids=str)
async def test_the_first_run_of_the_new_year_charges_new_years_eve(world: World) -> None:
    """The nightly task, started a second before midnight of new year's eve, charges the night
    before at once and new year's eve itself shortly after midnight."""
    assert world.hard.day.month == world.hard.day.day == 1
    ward = await world.ward(1, "1000.00")
    world.clock.now = world.hard.at(15, days=-2)
    a = await world.admitted(ward)  # on 30 December
    world.clock.now = world.hard.at(23, 59, days=-1, second=59)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:  # the second night: enough
            raise asyncio.CancelledError
        world.clock.advance(timedelta(seconds=seconds))

    with pytest.raises(asyncio.CancelledError):
        await nightly_charges(world.fake, world.hard.tz, clock=world.clock, sleep=sleep)
    assert waits[0] == (NIGHTLY_DELAY + timedelta(seconds=1)).total_seconds()
    eve = world.hard.day - timedelta(days=1)
    nights = [(e["admission_id"], e["night"]) for e in await world.outbox(CHARGED)]
    assert nights == [(a["id"], (eve - timedelta(days=1)).isoformat()), (a["id"], eve.isoformat())]
    assert world.today == world.hard.day and eve.year == world.today.year - 1


async def test_one_bad_admission_does_not_sink_the_night(world: World) -> None:
    ward = await world.ward(3)
    good, bad, other = [await world.admitted(ward) for _ in range(3)]
    for x in (good, bad, other):
        await world.backdate(x["id"], 1)
    world.lose_stays(bad["id"])
    summary = await world.run(world.today - timedelta(days=1))
    assert (summary["posted"], summary["failed"]) == (2, 1)
    assert {e["admission_id"] for e in await world.outbox(CHARGED)} == {good["id"], other["id"]}


async def test_reads_and_changes_of_admissions_are_audited(world: World) -> None:
    ward = await world.ward(2)
    a = await world.admitted(ward)
    one = await world.client.get(f"/admissions/{a['id']}", headers=as_role("NURSE"))
    await world.client.get(
        "/admissions", params={"active": "true", "patient_id": one.json()["patient_id"]}, headers=as_role("DOCTOR")
    )
    await world.client.get(f"/admissions/{a['id']}/charges", headers=as_role("BILLING"))
    await world.client.post(f"/admissions/{a['id']}/discharge", headers=as_role("NURSE"))
    records = await world.outbox("his.admissions.record.accessed.v1")
    assert [(r["action"], r["resource"], r["purpose"]) for r in records] == [
        ("create", "admission", "care"),
        ("read", "admission", "care"),
        ("read", "admission", "care"),
        ("read", "bed_charge", "billing"),
        ("update", "admission", "care"),
    ]
    assert {r["patient_id"] for r in records} == {(await world.outbox(ADMITTED))[0]["patient_id"]}


async def test_lists_filter_by_patient_state_and_ward(world: World) -> None:
    ward, other = await world.ward(3), await world.ward(2, kind="maternity")
    a, b = await world.admitted(ward), await world.admitted(ward)
    await world.client.post(f"/admissions/{a['id']}/discharge", headers=as_role("NURSE"))
    staff = as_role("RECEPTIONIST")
    active = (await world.client.get("/admissions", params={"active": "true"}, headers=staff)).json()["items"]
    assert [x["id"] for x in active] == [b["id"]]
    mine = await world.client.get("/admissions", params={"patient_id": active[0]["patient_id"]}, headers=staff)
    assert [x["id"] for x in mine.json()["items"]] == [b["id"]]
    beds = (await world.client.get("/beds", params={"ward_id": ward}, headers=staff)).json()["items"]
    assert sorted(x["state"] for x in beds) == ["available", "cleaning", "occupied"]
    assert [x["label"] for x in beds] == ["R1-B1", "R1-B2", "R1-B3"]
    wards = (await world.client.get("/wards", headers=as_role("AUDITOR"))).json()["items"]
    by_id = {w["id"]: w for w in wards}
    assert by_id[other]["beds"]["available"] == 2 and by_id[other]["type"] == "maternity"
    assert by_id[ward]["daily_rate"] == "1000.00" and by_id[ward]["currency"] == "TRY"


async def test_who_may_do_what(world: World) -> None:
    ward = await world.ward(2)
    a = await world.admitted(ward)
    patient = as_role("PATIENT")
    for method, path in (
        ("GET", "/wards"),
        ("GET", f"/wards/{ward}"),
        ("GET", "/beds"),
        ("GET", "/admissions"),
        ("GET", f"/admissions/{a['id']}"),
        ("GET", f"/admissions/{a['id']}/charges"),
        ("POST", f"/admissions/{a['id']}/discharge"),
        ("POST", f"/beds/{a['bed_id']}/release"),
    ):
        assert (await world.client.request(method, path, headers=patient)).status_code == 403, path
        assert (await world.client.request(method, path)).status_code == 401, path
    body = {"name": "X", "type": "general", "daily_rate": "1", "currency": "TRY", "beds": 1}
    assert (await world.client.post("/wards", json=body, headers=as_role("NURSE"))).status_code == 403
    assert (await world.admit(ward)).status_code == 201
    r = await world.client.post(
        "/admissions",
        json={
            "patient_id": str(world.patients.add()),
            "practitioner_id": str(world.practitioners.add()),
            "ward_id": ward,
        },
        headers=as_role("DOCTOR"),
    )
    assert r.status_code == 403
    assert (await world.client.get(f"/admissions/{a['id']}", headers=as_role("BILLING"))).status_code == 403
    assert (await world.client.get(f"/admissions/{a['id']}/charges", headers=as_role("BILLING"))).status_code == 200
    r = await world.client.post("/admissions/charges/run", params={"date": "2026-01-01"}, headers=as_role("NURSE"))
    assert r.status_code == 403


async def test_clinicians_reach_an_admission_only_in_the_patients_care(world: World) -> None:
    """Listing, reading, transferring and discharging: a DOCTOR or NURSE outside the patient's care
    is refused (403 offering emergency access) and changes nothing, and each refusal is audited;
    under an emergency grant it is allowed, flagged by its purpose; a clinician lists one
    patient's admissions, never everyone's."""
    ward = await world.ward(4)
    a = await world.admitted(ward)
    patient = (await world.client.get(f"/admissions/{a['id']}", headers=as_role("ADMIN"))).json()["patient_id"]
    stranger, glass = uuid.uuid4(), uuid.uuid4()
    world.patients.care[(uuid.UUID(patient), glass)] = CareBasis(in_care=False, emergency=True)
    calls = (
        ("GET", "/admissions", {"patient_id": patient}),
        ("GET", f"/admissions/{a['id']}", None),
        ("GET", f"/admissions/{a['id']}/charges", None),
        ("POST", f"/admissions/{a['id']}/transfer", None),
        ("POST", f"/admissions/{a['id']}/discharge", None),
    )
    for role in ("DOCTOR", "NURSE"):
        for method, path, params in calls:
            body = {"ward_id": ward} if path.endswith("transfer") else None
            r = await world.client.request(method, path, params=params, json=body, headers=bearer(stranger, role))
            assert r.status_code == 403, (role, path, r.text)
            assert r.json()["emergency_access"]["href"] == f"/api/patients/{patient}/emergency-access"
    listed = await world.client.get("/admissions", params={"active": "true"}, headers=bearer(glass, "NURSE"))
    assert listed.status_code == 403 and "patient_id" in listed.json()["detail"]
    assert (await world.bed_state(a["bed_id"])) == "occupied"  # nothing moved
    moved = await world.client.post(
        f"/admissions/{a['id']}/transfer", json={"ward_id": ward}, headers=bearer(glass, "NURSE")
    )
    assert moved.status_code == 200, moved.text
    done = await world.client.post(f"/admissions/{a['id']}/discharge", headers=bearer(glass, "DOCTOR"))
    assert done.status_code == 200, done.text
    records = await world.outbox("his.admissions.record.accessed.v1")
    assert [(r["outcome"], r["purpose"]) for r in records if r["actor_id"] == str(stranger)] == [
        ("denied", "care"),
        ("denied", "care"),
        ("denied", "billing"),
        ("denied", "care"),
        ("denied", "care"),
    ] * 2
    assert [(r["action"], r["purpose"]) for r in records if r["actor_id"] == str(glass)] == [
        ("update", "emergency"),
        ("update", "emergency"),
    ]


async def test_a_ward_is_corrected_one_field_at_a_time(world: World) -> None:
    """A correction that leaves out the rate changes only what it names; one that names the
    ward's values as they are changes nothing and announces nothing."""
    ward = await world.ward(2, "1000.00")
    for body in ({}, {"name": "Ward general"}, {"currency": "TRY"}, {"name": "Surgery"}, {"type": "surgery"}):
        r = await world.client.patch(f"/wards/{ward}", json=body, headers=as_role("ADMIN"))
        assert r.status_code == 200, (body, r.text)
    got = r.json()
    assert (got["name"], got["type"], got["daily_rate"], got["currency"]) == ("Surgery", "surgery", "1000.00", "TRY")
    updates = await world.outbox("his.admissions.ward.updated.v1")
    assert [u["fields"] for u in updates] == [["name"], ["type"]]


GOOD_WARD = {"name": "Ward", "type": "general", "daily_rate": "100.00", "currency": "TRY", "beds": 2}


@pytest.mark.parametrize(
    "patch",
    [
        {"daily_rate": "-1"},
        {"daily_rate": "0.001"},
        {"daily_rate": "NaN"},
        {"daily_rate": "1e20"},
        {"daily_rate": "abc"},
        {"beds": 0},
        {"beds": -3},
        {"beds": 100000},
        {"beds": 2, "rooms": 3},
        {"rooms": 0},
        {"name": "x" * 5000},
        {"name": ""},
        {"type": "General Ward"},
        {"type": "x" * 5000},
        {"currency": "try"},
        {"currency": "TRYX"},
        {"id": str(uuid.uuid4())},  # ids are made by the server
        {"name": "nul\x00byte"},
    ],
)
async def test_bad_wards_are_a_4xx_problem(world: World, patch: dict[str, Any]) -> None:
    r = await world.client.post("/wards", json={**GOOD_WARD, **patch}, headers=as_role("ADMIN"))
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"] == "application/problem+json"


async def test_a_bed_the_database_says_is_taken_is_a_409_not_a_500(world: World) -> None:
    """A bed whose state says available while an admission holds it (what a race between two
    writers could leave for a moment) is refused by the one-admission-per-bed index: the caller
    gets a 409 to ask again, and nothing is written."""
    ward = await world.ward(1)
    first = await world.admitted(ward)
    bed = uuid.UUID(first["bed_id"])
    world.fake.state.beds[bed] = replace(world.fake.state.beds[bed], state=BedState.AVAILABLE)
    before = len(world.fake.state.admissions)
    r = await world.admit(ward)
    assert r.status_code == 409, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["conflict"] == {"with": "admission"}
    assert len(world.fake.state.admissions) == before
    # Named as the bed to move another patient into, it is refused the same way.
    elsewhere = await world.admitted(await world.ward(1))
    r = await world.client.post(
        f"/admissions/{elsewhere['id']}/transfer", json={"ward_id": ward, "bed_id": str(bed)}, headers=as_role("NURSE")
    )
    assert r.status_code == 409, r.text
    assert r.json()["conflict"] == {"with": "admission"}
    assert await world.bed_state(elsewhere["bed_id"]) == "occupied"


async def test_bad_admission_requests_are_a_4xx_problem(world: World) -> None:
    ward = await world.ward(2)
    reception = as_role("RECEPTIONIST")

    async def admit(**patch: Any) -> httpx.Response:
        body = {
            "patient_id": str(world.patients.add()),
            "practitioner_id": str(world.practitioners.add()),
            "ward_id": ward,
        }
        return await world.client.post("/admissions", json={**body, **patch}, headers=reception)

    for patch, status in (
        ({"ward_id": str(uuid.uuid4())}, 422),
        ({"ward_id": "not-a-uuid"}, 422),
        ({"patient_id": "x" * 5000}, 422),
        ({"patient_id": str(uuid.uuid4())}, 422),  # no such patient
        ({"practitioner_id": str(uuid.uuid4())}, 422),  # no such practitioner
        ({"status": "discharged"}, 422),  # statuses are never set by clients
        ({"bed_id": str(uuid.uuid4())}, 422),
    ):
        r = await admit(**patch)
        assert r.status_code == status, (patch, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    unknown = await admit(patient_id=str(uuid.uuid4()))
    assert "patient" in unknown.json()["detail"]
    unknown = await admit(practitioner_id=str(uuid.uuid4()))
    assert unknown.json()["detail"] == "unknown practitioner_id"
    assert (await world.client.post("/admissions", content=b"{not json", headers=reception)).status_code == 422

    for directory in (world.patients, world.practitioners):
        directory.down = True
        r = await admit()
        assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
        directory.down = False

    nurse = as_role("NURSE")
    for method, path, status in (
        ("GET", "/wards/not-a-uuid", 422),
        ("GET", f"/wards/{uuid.uuid4()}", 404),
        ("GET", f"/admissions/{uuid.uuid4()}", 404),
        ("GET", f"/admissions/{uuid.uuid4()}/charges", 404),
        ("POST", f"/admissions/{uuid.uuid4()}/discharge", 404),
        ("POST", f"/beds/{uuid.uuid4()}/release", 404),
        ("POST", f"/beds/{uuid.uuid4()}/explode", 422),
        ("POST", "/beds/1/release", 422),
        ("GET", "/beds?state=broken", 422),
        ("GET", f"/beds?ward_id={uuid.uuid4()}", 404),
        ("GET", "/admissions?active=maybe", 422),
        ("GET", "/admissions?limit=100000", 422),
    ):
        r = await world.client.request(method, path, headers=nurse)
        assert r.status_code == status, (path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    a = await world.admitted(ward)
    for body in ({"ward_id": str(uuid.uuid4())}, {"ward_id": "x"}, {}, {"ward_id": ward, "bed_id": "nope"}):
        r = await world.client.post(f"/admissions/{a['id']}/transfer", json=body, headers=nurse)
        assert r.status_code == 422, (body, r.text)
    r = await world.client.post(f"/admissions/{uuid.uuid4()}/transfer", json={"ward_id": ward}, headers=nurse)
    assert r.status_code == 404


@pytest.mark.parametrize(
    "night", ["2026-13-01", "yesterday", "", "2026-02-30", "99999-01-01", "today", "{today}", "{tomorrow}"]
)
async def test_bad_dates_for_the_nightly_job_are_a_4xx_problem(world: World, night: str) -> None:
    night = night.format(today=world.today.isoformat(), tomorrow=(world.today + timedelta(days=1)).isoformat())
    r = await world.client.post("/admissions/charges/run", params={"date": night}, headers=as_role("ADMIN"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    missing = await world.client.post("/admissions/charges/run", headers=as_role("ADMIN"))
    assert missing.status_code == 422


@pytest.mark.parametrize("night", ["0001-01-01", "1799-12-31", "9999-12-31"])
async def test_a_nightly_run_for_a_date_outside_the_calendar_is_a_422(world: World, night: str) -> None:
    r = await world.client.post("/admissions/charges/run", params={"date": night}, headers=as_role("ADMIN"))
    assert r.status_code == 422 and "dates from 1800-01-01 to 2999-12-31" in r.text, r.text
