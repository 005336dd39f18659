"""Scheduling on the real database and NATS: bookings racing for one slot can never collide (the
exclusion constraints decide) and only the committed one is counted, concurrent steps on one
appointment are serialised by its row lock, the waitlist skips entries another unit holds
(``SKIP LOCKED``), and freed time reaches the first patient waiting through NATS.

Who may do what, the state machine, collisions one after the other, slots on the hard dates,
waitlist offers and bad input are the use cases' unit tests (``tests/unit/test_scheduling_use_cases.py``,
over the in-memory ports whose contract with this database is ``test_scheduling_contract.py``).

The practitioners' calendar and the patient directory are the package's in-memory fakes here;
their real gRPC adapters are exercised under `his up`. The appointments are on a hard date
(``tests.support.calendar``) in a hospital with daylight-saving time, booked the day before by the
service's clock.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from nats.aio.client import Client as NATS
from prometheus_client import REGISTRY

from his.kernel import migrations, streams
from his.kernel.clock import FakeClock
from his.kernel.consumer import ConsumerLoop, Subscription
from his.kernel.db import Database
from his.kernel.intervals import Interval
from his.kernel.outbox import OutboxRelay
from his.scheduling import handlers
from his.scheduling.app import http as scheduling_http
from his.scheduling.domain import Status
from his.scheduling.ports import FakeCalendar, FakePatients, FakePractitioners, PatientRef
from his.scheduling.store import SchedulingStore
from tests.support.api import Bearer, serve
from tests.support.calendar import HARD_DATES, HardDate
from tests.support.waiting import wait_for

CLERK = uuid.uuid4()
RECEPTION = Bearer(CLERK, "RECEPTIONIST")


@dataclass
class World:
    client: httpx.AsyncClient
    db: Database
    calendar: FakeCalendar
    patients: FakePatients
    hard: HardDate
    clock: FakeClock

    def at(self, hours: float) -> datetime:
        """``hours`` after the hard date's local midnight."""
        return self.hard.midnight() + timedelta(hours=hours)

    def practitioner(self, *spans: tuple[float, float]) -> uuid.UUID:
        pid = uuid.uuid4()
        self.calendar.working[pid] = [Interval(self.at(a), self.at(b)) for a, b in spans]
        return pid

    def patient(self, account: uuid.UUID | None = None) -> uuid.UUID:
        pid = uuid.uuid4()
        self.patients.patients[pid] = PatientRef(pid, account)
        return pid

    async def book(
        self, patient: uuid.UUID, practitioner: uuid.UUID, start: float, service: str = "consultation", **kw: Any
    ) -> httpx.Response:
        minutes = {"consultation": 20, "procedure": 45, "follow_up": 15}[service]
        body = {
            "patient_id": str(patient),
            "practitioner_id": str(practitioner),
            "service": service,
            "start": self.at(start).isoformat(),
            "end": (self.at(start) + timedelta(minutes=minutes)).isoformat(),
        }
        return await self.client.post("/appointments", json=body, headers=kw.get("headers", RECEPTION))


@pytest.fixture
def hard() -> HardDate:
    """The day the appointments are on; a test parametrised with ``hard`` runs on each hard date."""
    return HARD_DATES[0]


@pytest.fixture
async def world(admin_dsn: str, hard: HardDate) -> AsyncIterator[World]:
    dsn = await migrations.provision(admin_dsn, "scheduling", "pw-scheduling-test")
    await migrations.upgrade(admin_dsn, "scheduling")
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(
        "TRUNCATE scheduling.appointment, scheduling.known_patient, scheduling.outbox, scheduling.inbox, "
        "scheduling.waitlist_entry"
    )
    await conn.close()
    clock = hard.clock(12, 0, days=-1)  # the day before, at noon
    db = Database(dsn, schema="scheduling", max_size=24, clock=clock)
    await db.open()

    calendar, patients = FakeCalendar(), FakePatients()
    async with serve(
        scheduling_http(db, calendar, patients, hard.zone, practitioners=FakePractitioners()),
        base_url="http://scheduling",
    ) as client:
        yield World(client, db, calendar, patients, hard, clock)
    await db.close()


async def test_twenty_requests_for_one_slot_one_wins(world: World) -> None:
    doctor = world.practitioner((8, 16))
    patients = [world.patient() for _ in range(20)]
    results = await asyncio.gather(*(world.book(p, doctor, 9) for p in patients))
    codes = sorted(r.status_code for r in results)
    assert codes == [201] + [409] * 19, codes
    assert await world.db.pool.fetchval("SELECT count(*) FROM appointment") == 1
    loser = next(r for r in results if r.status_code == 409)
    assert loser.headers["content-type"] == "application/problem+json"
    winner = next(r for r in results if r.status_code == 201).json()
    assert loser.json()["conflict"] == {
        "with": "practitioner",
        "appointment": {"id": winner["id"], "start": world.at(9).isoformat(), "end": world.at(9 + 1 / 3).isoformat()},
    }


async def test_cancelling_offers_the_slot_to_the_first_waitlisted_patient(world: World, nc: NATS) -> None:
    """Through the outbox, NATS and scheduling's own consumer of its cancellations (the offer's
    rules, on every hard date, are the unit tests')."""
    js = nc.jetstream(timeout=5.0)
    await streams.declare(js, ["scheduling"])
    relay = OutboxRelay(world.db.dsn, js, schema="scheduling", signal=world.db.signal, poll_seconds=0.2)
    sub = Subscription("scheduling_offer_test", "his.scheduling.appointment.cancelled.v1", handlers.on_slot_freed)
    consumer = ConsumerLoop(world.db, nc, js, sub)
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(consumer.run())]
    try:
        doctor = world.practitioner((8, 16))
        taken = (await world.book(world.patient(), doctor, 9)).json()["id"]
        first, second = world.patient(), world.patient()
        entries = []
        for p in (first, second):
            body = {"patient_id": str(p), "practitioner_id": str(doctor), "service": "consultation"}
            r = await world.client.post("/waitlist", json=body, headers=RECEPTION)
            assert r.status_code == 201, r.text
            entries.append(r.json()["id"])
            world.clock.advance(timedelta(seconds=1))  # the second patient joins after the first

        assert (await world.client.post(f"/appointments/{taken}/cancel", headers=RECEPTION)).status_code == 200

        async def offered() -> bool:
            r = await world.client.get("/waitlist", params={"patient_id": str(first)}, headers=RECEPTION)
            return bool(r.json()["items"][0]["status"] == "offered")

        await wait_for(offered, timeout=20, what="the waitlist offer")
        offer = (await world.client.get("/waitlist", params={"patient_id": str(first)}, headers=RECEPTION)).json()
        assert offer["items"][0]["offer"]["start"] == world.at(9).isoformat()
        later = (await world.client.get("/waitlist", params={"patient_id": str(second)}, headers=RECEPTION)).json()
        assert later["items"][0]["status"] == "waiting"
        events = await world.db.pool.fetch(
            "SELECT payload FROM outbox WHERE subject = 'his.scheduling.waitlist.offered.v1'"
        )
        assert len(events) == 1 and str(first) in bytes(events[0]["payload"]).decode()

        booked = await world.client.post(f"/waitlist/{entries[0]}/accept", json={}, headers=RECEPTION)
        assert booked.status_code == 201, booked.text
        appt = (await world.client.get(f"/appointments/{booked.json()['id']}", headers=RECEPTION)).json()
        assert appt["patient_id"] == str(first) and appt["start"] == world.at(9).isoformat()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_only_committed_bookings_are_counted(world: World) -> None:
    before = REGISTRY.get_sample_value("his_appointments_booked_total") or 0.0
    doctor = world.practitioner((8, 16))
    results = await asyncio.gather(*(world.book(world.patient(), doctor, 10) for _ in range(5)))
    assert sorted(r.status_code for r in results) == [201] + [409] * 4
    assert REGISTRY.get_sample_value("his_appointments_booked_total") == before + 1


async def test_a_step_waits_for_the_appointments_lock_and_sees_the_state_it_was_left_in(world: World) -> None:
    """Steps on one appointment are serialised by its row lock: a cancellation that arrives while
    another unit holds the appointment (and checks it in) waits, then finds it checked in (409),
    rather than cancelling what it read before."""
    aid = uuid.UUID((await world.book(world.patient(), world.practitioner((8, 16)), 9)).json()["id"])
    store = SchedulingStore(world.db)
    async with store.uow() as holder:
        held = await holder.appointments.get(aid, lock=True)
        assert held is not None
        cancel = asyncio.create_task(world.client.post(f"/appointments/{aid}/cancel", headers=RECEPTION))
        await asyncio.sleep(0.5)
        assert not cancel.done()
        await holder.appointments.set_status(held, Status.CHECKED_IN, holder.clock())
    refused = await cancel
    assert refused.status_code == 409 and "checked_in" in refused.json()["detail"]
    async with store.read() as u:
        after = await u.appointments.get(aid)
    assert after is not None and (after.status, after.version) == (Status.CHECKED_IN, 2)
    cancelled = "SELECT count(*) FROM outbox WHERE subject = 'his.scheduling.appointment.cancelled.v1'"
    assert await world.db.pool.fetchval(cancelled) == 0


async def test_the_waitlist_skips_entries_another_unit_holds(world: World) -> None:
    """Two offers never race for one entry: while one unit holds the first patient's entry, another
    unit's queue goes on without it instead of waiting for it."""
    doctor = world.practitioner((8, 16))
    entries = []
    for _ in range(2):
        body = {"patient_id": str(world.patient()), "practitioner_id": str(doctor), "service": "consultation"}
        entries.append(uuid.UUID((await world.client.post("/waitlist", json=body, headers=RECEPTION)).json()["id"]))
        world.clock.advance(timedelta(seconds=1))
    store = SchedulingStore(world.db)
    async with store.uow() as holder:
        assert await holder.waitlist.get(entries[0], lock=True) is not None
        async with store.uow() as other:
            queue = await asyncio.wait_for(other.waitlist.waiting_for(doctor), timeout=10)
        assert [e.id for e in queue] == entries[1:]
    async with store.uow() as after:
        assert [e.id for e in await after.waitlist.waiting_for(doctor)] == entries
