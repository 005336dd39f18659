"""Admissions on the real database and NATS: a bed never holds two patients however many
admissions race for it, a patient is admitted once however many requests race, concurrent
transfers into one free bed move one patient, the database itself refuses a second active
admission of a bed or a patient and a second charge of a night (two posts that both got past the
check), and the events reach the stream through the relay.

Who may do what, validation, the bed state rules, transfers, discharges, the nightly charge runs
on every hard date and the audit records are the use cases' unit tests
(``tests/unit/test_admissions_use_cases.py``, over the in-memory ports whose contract with this
database is ``test_admissions_contract.py``).

The patient directory is the package's in-memory fake here; its real gRPC adapter is exercised
under `his up`. The service's clock stands at noon of a hard date (``tests.support.calendar``) in
a hospital with daylight-saving time. Admission times are set back with SQL where a test needs
nights that are over.
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
