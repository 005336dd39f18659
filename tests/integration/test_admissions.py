"""Admissions on the real database: a bed never holds two patients however many admissions race
for it, transfers and discharges move beds atomically, and the nightly job charges each night of
an admission exactly once, catching up nights it missed.

The patient directory is the package's in-memory fake here; its real gRPC adapter is exercised
under `his up`. The service's clock stands at noon of a hard date (``tests.support.calendar``) in
a hospital with daylight-saving time; the tests of nightly charges run on every hard date.
Admission times are set back with SQL where a test needs nights that are over.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NATS

from his.admissions.app import NIGHTLY_DELAY, nightly_charges
from his.admissions.app import http as admissions_http
from his.admissions.domain import AlreadyAdmittedError, BedTakenError
from his.admissions.handlers import Directories
from his.admissions.store import AdmissionsStore
from his.clients.billing import FakeBillingTerms
from his.clients.patients import CareBasis, FakePatients
from his.clients.practitioners import FakePractitioners
from his.kernel import migrations, streams
from his.kernel.clock import FakeClock
from his.kernel.db import Database
from his.kernel.events import stream_name
from his.kernel.outbox import OutboxRelay
from tests.support.api import bearer, serve
from tests.support.calendar import HARD_DATES, HardDate
from tests.support.waiting import wait_for

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
    db: Database
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
        state: str = await self.db.pool.fetchval("SELECT state FROM bed WHERE id = $1", uuid.UUID(bed))
        return state

    async def backdate(self, admission: str, days: int, hour: int = 10) -> None:
        """Make the admission begin ``days`` days ago (at ``hour`` local time), with its first bed stay."""
        at = self.hard.at(hour, days=-days)
        aid = uuid.UUID(admission)
        async with self.db.uow() as uow:
            await uow.conn.execute("UPDATE admission SET admitted_at = $2 WHERE id = $1", aid, at)
            await uow.conn.execute(
                "UPDATE bed_stay SET started_at = $2 WHERE id = (SELECT min(id) FROM bed_stay WHERE admission_id = $1)",
                aid,
                at,
            )

    async def run(self, night: date) -> dict[str, Any]:
        r = await self.client.post(
            "/admissions/charges/run", params={"date": night.isoformat()}, headers=as_role("ADMIN")
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def outbox(self, subject: str) -> list[dict[str, Any]]:
        rows = await self.db.pool.fetch("SELECT payload FROM outbox WHERE subject = $1 ORDER BY id", subject)
        return [json.loads(bytes(r["payload"]))["data"] for r in rows]


@pytest.fixture
def hard() -> HardDate:
    return HARD_DATES[0]


@pytest.fixture
async def world(admin_dsn: str, hard: HardDate) -> AsyncIterator[World]:
    dsn = await migrations.provision(admin_dsn, "admissions", "pw-admissions-test")
    await migrations.upgrade(admin_dsn, "admissions")
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(
        "TRUNCATE admissions.bed_charge, admissions.bed_stay, admissions.admission, admissions.bed, admissions.room, "
        "admissions.ward, admissions.outbox, admissions.inbox"
    )
    await conn.close()
    clock = hard.clock(12, 0)
    db = Database(dsn, schema="admissions", max_size=24, clock=clock)
    await db.open()
    patients, practitioners = FakePatients(), FakePractitioners()
    async with serve(
        admissions_http(db, Directories(patients, practitioners, FakeBillingTerms()), hard.zone),
        base_url="http://admissions",
    ) as client:
        yield World(client, db, patients, practitioners, hard, clock)
    await db.close()


async def test_fifty_concurrent_admissions_to_ten_free_beds(world: World) -> None:
    ward = await world.ward(10, rooms=5)
    results = await asyncio.gather(*(world.admit(ward) for _ in range(50)))
    codes = sorted(r.status_code for r in results)
    assert codes == [201] * 10 + [409] * 40, codes
    refused = next(r for r in results if r.status_code == 409)
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["detail"] == "the ward has no free bed"
    beds = {r.json()["bed_id"] for r in results if r.status_code == 201}
    assert len(beds) == 10
    doubled = await world.db.pool.fetch(
        "SELECT bed_id FROM admission WHERE status = 'active' GROUP BY bed_id HAVING count(*) > 1"
    )
    assert doubled == []
    assert (
        await world.db.pool.fetchval(
            "SELECT count(*) FROM bed WHERE ward_id = $1 AND state = 'occupied'", uuid.UUID(ward)
        )
        == 10
    )
    assert len(await world.outbox(ADMITTED)) == 10
    listed = await world.client.get(f"/wards/{ward}", headers=as_role("LAB_TECH"))
    assert listed.json()["beds"] == {
        "total": 10,
        "available": 0,
        "occupied": 10,
        "cleaning": 0,
        "closed": 0,
        "isolation": 0,
    }
    assert listed.json()["rooms"] == ["R1", "R2", "R3", "R4", "R5"]


async def test_a_patient_is_admitted_once_at_a_time(world: World) -> None:
    ward = await world.ward(10)
    patient = world.patients.add()
    results = await asyncio.gather(*(world.admit(ward, patient) for _ in range(5)))
    assert sorted(r.status_code for r in results) == [201] + [409] * 4
    refused = next(r for r in results if r.status_code == 409)
    assert refused.json()["detail"] == "the patient is already admitted"
    assert await world.db.pool.fetchval("SELECT count(*) FROM admission WHERE patient_id = $1", patient) == 1
    # No bed was left occupied by a refused admission.
    assert await world.db.pool.fetchval("SELECT count(*) FROM bed WHERE state = 'occupied'") == 1
    # Once discharged, the patient can come back.
    aid = next(r for r in results if r.status_code == 201).json()["id"]
    assert (await world.client.post(f"/admissions/{aid}/discharge", headers=as_role("DOCTOR"))).status_code == 200
    assert (await world.admit(ward, patient)).status_code == 201


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


async def test_concurrent_transfers_into_one_free_bed(world: World) -> None:
    general, icu = await world.ward(6), await world.ward(1, kind="icu")
    admitted = [await world.admitted(general) for _ in range(5)]
    results = await asyncio.gather(
        *(
            world.client.post(f"/admissions/{a['id']}/transfer", json={"ward_id": icu}, headers=as_role("DOCTOR"))
            for a in admitted
        )
    )
    assert sorted(r.status_code for r in results) == [200] + [409] * 4
    states = await world.db.pool.fetch("SELECT state, count(*) AS n FROM bed GROUP BY state ORDER BY state")
    assert {r["state"]: r["n"] for r in states} == {"available": 1, "cleaning": 1, "occupied": 5}


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
    rows = await world.db.pool.fetchval("SELECT count(*) FROM bed_charge")
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
    subjects = [r["subject"] for r in await world.db.pool.fetch("SELECT subject FROM outbox ORDER BY id")]
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
    aid = uuid.UUID(a["id"])
    await world.db.pool.execute(
        "UPDATE bed_stay SET ended_at = $2 WHERE admission_id = $1 AND ended_at IS NOT NULL", aid, noon
    )
    await world.db.pool.execute(
        "UPDATE bed_stay SET started_at = $2 WHERE admission_id = $1 AND ended_at IS NULL", aid, noon
    )
    await world.run(world.today - timedelta(days=1))
    charged = [(e["night"], e["ward_type"], e["amount"]) for e in await world.outbox(CHARGED)]
    assert charged == [
        ((world.today - timedelta(days=2)).isoformat(), "general", "1000.00"),
        ((world.today - timedelta(days=1)).isoformat(), "icu", "9000.00"),
    ]


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
        await nightly_charges(AdmissionsStore(world.db), world.hard.tz, clock=world.clock, sleep=sleep)
    assert waits[0] == (NIGHTLY_DELAY + timedelta(seconds=1)).total_seconds()
    eve = world.hard.day - timedelta(days=1)
    nights = [(e["admission_id"], e["night"]) for e in await world.outbox(CHARGED)]
    assert nights == [(a["id"], (eve - timedelta(days=1)).isoformat()), (a["id"], eve.isoformat())]
    assert world.today == world.hard.day and eve.year == world.today.year - 1


async def test_the_database_itself_holds_one_active_admission_per_bed_and_per_patient(world: World) -> None:
    """Admissions that got past the bed's lock and the patient's check (inserted through the
    store's own path) are refused by the partial unique indexes."""
    ward, patient = await world.ward(2), world.patients.add()
    first = dict((await world.admit(ward, patient)).json())
    free = await world.client.get("/beds", params={"ward_id": ward, "state": "available"}, headers=as_role("NURSE"))
    other_bed = uuid.UUID(free.json()["items"][0]["id"])

    async def insert(patient: uuid.UUID, bed: uuid.UUID) -> None:
        async with AdmissionsStore(world.db).uow() as uow:
            await uow.admissions.add(
                admission_id=uuid.uuid4(),
                patient_id=patient,
                practitioner_id=CARER,
                ward_id=uuid.UUID(ward),
                bed_id=bed,
                admitted_at=world.clock(),
                admitted_by=CARER,
            )

    with pytest.raises(BedTakenError) as taken:
        await insert(world.patients.add(), uuid.UUID(first["bed_id"]))
    assert isinstance(taken.value.__cause__, asyncpg.UniqueViolationError)
    assert taken.value.__cause__.constraint_name == "admission_one_per_bed"
    with pytest.raises(AlreadyAdmittedError):
        await insert(patient, other_bed)
    assert await world.db.pool.fetchval("SELECT count(*) FROM admission") == 1


async def test_the_database_itself_charges_a_night_once(world: World) -> None:
    """Two posts of the same night that both got past the check (as two runs would without the
    admission's row lock) charge it once: the second insert is refused by the database, and so is
    any insert that does not ask for ``ON CONFLICT``."""
    ward = await world.ward(1, "1000.00")
    aid = uuid.UUID((await world.admitted(ward))["id"])
    night = world.today - timedelta(days=1)
    checked = asyncio.Barrier(2)

    async def post() -> bool:
        async with AdmissionsStore(world.db).uow() as uow:
            assert night not in await uow.charges.nights(aid)
            await checked.wait()  # both found the night unposted
            charge = await uow.charges.add(
                charge_id=uuid.uuid4(),
                admission_id=aid,
                night=night,
                ward_id=uuid.UUID(ward),
                ward_type="general",
                amount=Decimal("1000.00"),
                currency="TRY",
                at=world.clock(),
            )
            return charge is not None

    assert sorted(await asyncio.gather(post(), post())) == [False, True]
    with pytest.raises(asyncpg.UniqueViolationError, match="bed_charge_once_per_night"):
        await world.db.pool.execute(
            """INSERT INTO bed_charge (id, admission_id, night, ward_id, ward_type, amount, currency)
               SELECT $1, admission_id, night, ward_id, ward_type, amount, currency FROM bed_charge""",
            uuid.uuid4(),
        )
    assert await world.db.pool.fetchval("SELECT count(*) FROM bed_charge WHERE admission_id = $1", aid) == 1


async def test_one_bad_admission_does_not_sink_the_night(world: World) -> None:
    ward = await world.ward(3)
    good, bad, other = [await world.admitted(ward) for _ in range(3)]
    for x in (good, bad, other):
        await world.backdate(x["id"], 1)
    await world.db.pool.execute("DELETE FROM bed_stay WHERE admission_id = $1", uuid.UUID(bad["id"]))
    summary = await world.run(world.today - timedelta(days=1))
    assert (summary["posted"], summary["failed"]) == (2, 1)
    assert {e["admission_id"] for e in await world.outbox(CHARGED)} == {good["id"], other["id"]}


async def test_events_reach_the_stream_through_the_relay(world: World, nc: NATS) -> None:
    js = nc.jetstream(timeout=5.0)
    await streams.declare(js, ["admissions"])
    relay = OutboxRelay(world.db.dsn, js, schema="admissions", signal=world.db.signal, poll_seconds=0.2)
    task = asyncio.create_task(relay.run())
    try:
        ward = await world.ward(2)
        a = await world.admitted(ward)
        await world.backdate(a["id"], 2)
        await world.run(world.today - timedelta(days=1))
        await world.run(world.today - timedelta(days=1))
        await world.client.post(f"/admissions/{a['id']}/discharge", headers=as_role("DOCTOR"))

        async def published() -> bool:
            info = await js.stream_info(stream_name("admissions"), subjects_filter="his.admissions.>")
            subjects = info.state.subjects or {}
            return subjects.get(DISCHARGED) == 1

        await wait_for(published, timeout=20, what="the discharge event on the stream")
        info = await js.stream_info(stream_name("admissions"), subjects_filter="his.admissions.>")
        assert info.state.subjects is not None
        assert info.state.subjects[CHARGED] == 2 and info.state.subjects[ADMITTED] == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


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
