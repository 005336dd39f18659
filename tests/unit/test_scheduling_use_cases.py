"""Scheduling's use cases through its routes, over the in-memory ports (no database, no network):
bookings never collide (a patient learns only that the time is taken, unless it is their own
appointment), statuses follow their state machine, who may book, read, move, cancel, check in
and complete (every decision audited), slots are working time minus appointments between the
hospital's two midnights, a practitioner's day list is what starts between them (read whole by
reception, by clinicians patient by patient, every patient on it recorded), freed time is
offered to the first patient waiting, bad input is a 4xx problem.

The routes are the service's own, mounted in-process over ``his.testing.scheduling``, whose
contract with the PostgreSQL store is ``tests/integration/test_scheduling_contract.py``; what
needs the database or NATS (bookings racing for one slot, locks, the waitlist's offer delivered
through NATS) stays in ``tests/integration/test_scheduling.py``. The practitioners' calendar and
the patient directory are the package's in-memory fakes. The appointments are on a hard date
(``tests.support.calendar``) in a hospital with daylight-saving time, booked the day before by
the service's clock; every unit runs on one of the hard dates, and the tests where the day
matters on each.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest

from his.access import Relationship
from his.clients.patients import CareBasis
from his.events.scheduling import AppointmentCancelled, AppointmentRescheduled, WaitlistOffered
from his.kernel.clock import FakeClock
from his.kernel.events import Event
from his.kernel.intervals import Interval
from his.scheduling import handlers
from his.scheduling.app import http_over
from his.scheduling.ports import FakeCalendar, FakePatients, FakePractitioners, PatientRef
from his.testing.scheduling import FakeScheduling
from tests.support.api import Bearer, bearer, serve
from tests.support.calendar import HARD_DATES, HardDate, day_length

CLERK = uuid.uuid4()
RECEPTION = Bearer(CLERK, "RECEPTIONIST")
ACCESSED = "his.scheduling.record.accessed.v1"
E = TypeVar("E", bound=Event)


@dataclass
class World:
    client: httpx.AsyncClient
    fake: FakeScheduling
    calendar: FakeCalendar
    patients: FakePatients
    hard: HardDate
    clock: FakeClock
    #: The practitioner directory: every ``practitioner`` is in it.
    directory: FakePractitioners
    #: The freed time's events already offered (``offer_freed_time``).
    handled: set[uuid.UUID] = field(default_factory=set)

    def at(self, hours: float) -> datetime:
        """``hours`` after the hard date's local midnight."""
        return self.hard.midnight() + timedelta(hours=hours)

    def practitioner(
        self,
        *spans: tuple[float, float],
        name: str | None = None,
        specialty: str = "internal_medicine",
        pid: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """A practitioner in the directory (with the id ``pid``, if given), working ``spans``
        (hours after the hard date's midnight)."""
        pid = self.directory.add(specialty, name=name, practitioner_id=pid)
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

    def published(self) -> list[str]:
        """The types of the committed events, in commit order (the outbox's subjects)."""
        return [e.type for e in self.fake.published]

    def events(self, kind: type[E]) -> list[E]:
        """The committed events of one type, as their models."""
        return [kind.model_validate(e.data) for e in self.fake.published if e.type == kind.type]

    def records(self, actor: uuid.UUID) -> list[tuple[uuid.UUID, str, str, str]]:
        """The (patient, action, outcome, purpose) of the committed access records of ``actor``, in order."""
        return [
            (
                uuid.UUID(str(e.data["patient_id"])),
                str(e.data["action"]),
                str(e.data["outcome"]),
                str(e.data["purpose"]),
            )
            for e in self.fake.published
            if e.type == ACCESSED and e.data["actor_id"] == str(actor)
        ]

    def accesses(self, actor: uuid.UUID) -> list[tuple[str, str]]:
        """The (outcome, purpose) of the committed access records of ``actor``, in order."""
        return [
            (str(e.data["outcome"]), str(e.data["purpose"]))
            for e in self.fake.published
            if e.type == ACCESSED and e.data["actor_id"] == str(actor)
        ]

    async def offer_freed_time(self) -> None:
        """Scheduling's own consumers of its cancellations and moves (``app.build``), as the
        consumer loop runs them: each event not handled yet, in a unit of its own."""
        freed = (AppointmentCancelled.type, AppointmentRescheduled.type)
        for env in [e for e in self.fake.published if e.type in freed and e.id not in self.handled]:
            self.handled.add(env.id)
            kind = AppointmentCancelled if env.type == AppointmentCancelled.type else AppointmentRescheduled
            async with self.fake.uow() as uow:
                await handlers.slot_freed(uow, env, kind.model_validate(env.data))


@pytest.fixture(params=[HARD_DATES[0], HARD_DATES[4]], ids=str)
def hard(request: pytest.FixtureRequest) -> HardDate:
    """The day the appointments are on: a new year's day, or the day the clocks go back; a test
    parametrised with ``hard`` runs on each hard date."""
    day: HardDate = request.param
    return day


@pytest.fixture
async def world(hard: HardDate) -> AsyncIterator[World]:
    clock = hard.clock(12, 0, days=-1)  # the day before, at noon
    fake, calendar, patients, directory = FakeScheduling(clock), FakeCalendar(), FakePatients(), FakePractitioners()
    routes = http_over(fake, calendar, patients, hard.zone, clock=fake.clock, practitioners=directory)
    async with serve(routes, base_url="http://scheduling") as client:
        yield World(client, fake, calendar, patients, hard, clock, directory)


async def test_a_patient_cannot_hold_two_overlapping_appointments(world: World) -> None:
    a, b = world.practitioner((8, 16)), world.practitioner((8, 16))
    patient = world.patient()
    assert (await world.book(patient, a, 10)).status_code == 201
    clash = await world.book(patient, b, 10.25)
    assert clash.status_code == 409 and clash.json()["conflict"]["with"] == "patient"
    # Back to back is fine, for the patient and for the practitioner.
    assert (await world.book(patient, b, 10 + 1 / 3)).status_code == 201
    assert (await world.book(world.patient(), a, 10 + 1 / 3)).status_code == 201


async def test_one_slot_is_booked_once_and_the_loser_learns_by_whom(world: World) -> None:
    """The sequential half of the race for one slot (the race itself is the database's, in the
    integration suite): the second booking is a 409 naming the first to reception."""
    doctor = world.practitioner((8, 16))
    winner = (await world.book(world.patient(), doctor, 9)).json()
    loser = await world.book(world.patient(), doctor, 9)
    assert loser.status_code == 409 and loser.headers["content-type"] == "application/problem+json"
    assert loser.json()["conflict"] == {
        "with": "practitioner",
        "appointment": {"id": winner["id"], "start": world.at(9).isoformat(), "end": world.at(9 + 1 / 3).isoformat()},
    }
    assert len(world.fake.state.appointments) == 1


async def test_outside_working_time_is_refused(world: World) -> None:
    doctor = world.practitioner((8, 12), (13, 16))  # the gap is approved leave, say
    r = await world.book(world.patient(), doctor, 12.5)
    assert r.status_code == 409 and r.json()["conflict"] == {"with": "availability"}
    r = await world.book(world.patient(), doctor, 11.9)  # runs past the end of the shift
    assert r.status_code == 409
    unknown = await world.book(world.patient(), uuid.uuid4(), 9)
    assert unknown.status_code == 422 and "practitioner" in unknown.json()["detail"]
    unknown = await world.book(uuid.uuid4(), doctor, 9)
    assert unknown.status_code == 422 and "patient" in unknown.json()["detail"]
    assert world.fake.state.appointments == {}


async def test_cancelling_frees_the_slot_and_states_follow_the_machine(world: World) -> None:
    doctor = world.practitioner((8, 16))
    physician = uuid.uuid4()  # the doctor's account, in the care of both patients
    patients = world.patient(), world.patient()
    for p in patients:
        world.patients.care[(p, physician)] = CareBasis(in_care=True, emergency=False)
    first = (await world.book(patients[0], doctor, 9)).json()
    assert first["status"] == "booked"
    aid = first["id"]
    assert (
        await world.client.post(f"/appointments/{aid}/complete", headers=bearer(physician, "DOCTOR"))
    ).status_code == 409
    assert (await world.client.post(f"/appointments/{aid}/cancel", headers=RECEPTION)).json()["status"] == "cancelled"
    assert (await world.client.post(f"/appointments/{aid}/check-in", headers=RECEPTION)).status_code == 409
    second = await world.book(patients[1], doctor, 9)
    assert second.status_code == 201
    sid = second.json()["id"]
    assert (await world.client.post(f"/appointments/{sid}/check-in", headers=RECEPTION)).json()[
        "status"
    ] == "checked_in"
    done = await world.client.post(f"/appointments/{sid}/complete", headers=bearer(physician, "DOCTOR"))
    assert done.json()["status"] == "completed"
    subjects = world.published()
    lifecycle = [s for s in subjects if ".appointment." in s]
    assert lifecycle == [
        "his.scheduling.appointment.booked.v1",
        "his.scheduling.appointment.cancelled.v1",
        "his.scheduling.appointment.booked.v1",
        "his.scheduling.appointment.checked_in.v1",
        "his.scheduling.appointment.completed.v1",
    ]
    assert subjects.count(ACCESSED) == 5  # every change audited


@pytest.mark.parametrize("step", ["cancel", "check-in", "complete", "no-show"])
async def test_a_step_answers_the_appointment_as_stored(world: World, step: str) -> None:
    """Its version one higher and its updated_at the step's (the service clock's)."""
    aid = (await world.book(world.patient(), world.practitioner((8, 16)), 9)).json()["id"]
    if step == "complete":
        assert (await world.client.post(f"/appointments/{aid}/check-in", headers=RECEPTION)).status_code == 200
    before = (await world.client.get(f"/appointments/{aid}", headers=RECEPTION)).json()
    world.clock.advance(timedelta(minutes=7))
    r = await world.client.post(f"/appointments/{aid}/{step}", headers=bearer(uuid.uuid4(), "ADMIN"))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == before["version"] + 1
    assert r.json()["updated_at"] == world.clock().isoformat() != before["updated_at"]
    assert r.json()["created_at"] == before["created_at"]
    assert r.json() == (await world.client.get(f"/appointments/{aid}", headers=RECEPTION)).json()


async def test_reschedule_moves_or_answers_409(world: World) -> None:
    doctor = world.practitioner((8, 16))
    mine = (await world.book(world.patient(), doctor, 9)).json()["id"]
    await world.book(world.patient(), doctor, 10)
    body = {"start": world.at(10.1).isoformat(), "end": (world.at(10.1) + timedelta(minutes=20)).isoformat()}
    r = await world.client.post(f"/appointments/{mine}/reschedule", json=body, headers=RECEPTION)
    assert r.status_code == 409 and r.json()["conflict"]["with"] == "practitioner"
    body = {"start": world.at(11).isoformat(), "end": (world.at(11) + timedelta(minutes=20)).isoformat()}
    r = await world.client.post(f"/appointments/{mine}/reschedule", json=body, headers=RECEPTION)
    assert r.status_code == 200 and r.json()["start"] == world.at(11).isoformat() and r.json()["version"] == 2
    assert world.events(AppointmentRescheduled)[-1].previous_start == world.at(9)
    await world.client.post(f"/appointments/{mine}/cancel", headers=RECEPTION)
    r = await world.client.post(f"/appointments/{mine}/reschedule", json=body, headers=RECEPTION)
    assert r.status_code == 409 and "cancelled" in r.json()["detail"]  # only a booked appointment moves


async def test_patients_book_and_see_only_their_own(world: World) -> None:
    doctor = world.practitioner((8, 16))
    me, other = uuid.uuid4(), uuid.uuid4()
    mine, theirs = world.patient(me), world.patient(other)
    as_me = bearer(me, "PATIENT")
    assert (await world.book(theirs, doctor, 9, headers=as_me)).status_code == 404
    r = await world.book(mine, doctor, 9, headers=as_me)
    assert r.status_code == 201
    theirs_appt = (await world.book(theirs, doctor, 10)).json()["id"]
    assert (await world.client.get(f"/appointments/{theirs_appt}", headers=as_me)).status_code == 404
    assert (await world.client.post(f"/appointments/{theirs_appt}/cancel", headers=as_me)).status_code == 404
    assert (
        await world.client.get("/appointments", params={"patient_id": str(theirs)}, headers=as_me)
    ).status_code == 404
    listed = await world.client.get("/appointments", params={"patient_id": str(mine)}, headers=as_me)
    assert [a["id"] for a in listed.json()["items"]] == [r.json()["id"]]
    assert (await world.client.post(f"/appointments/{r.json()['id']}/check-in", headers=as_me)).status_code == 403
    assert (await world.client.post(f"/appointments/{r.json()['id']}/cancel", headers=as_me)).json()[
        "status"
    ] == "cancelled"


async def test_a_clinician_reads_appointments_only_in_the_patients_care(world: World) -> None:
    """As for the chart: a DOCTOR or NURSE sees a patient's appointments with a care relationship
    or an emergency grant (audited as such); reception by role."""
    doctor = world.practitioner((8, 16))
    patient = world.patient()
    appt = (await world.book(patient, doctor, 9)).json()["id"]
    carer, glass, stranger = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    world.patients.care[(patient, carer)] = CareBasis(in_care=True, emergency=False)
    world.patients.care[(patient, glass)] = CareBasis(in_care=False, emergency=True)
    by_patient = {"patient_id": str(patient)}
    for stranger_as in (bearer(stranger, "DOCTOR"), bearer(stranger, "NURSE")):
        one = await world.client.get(f"/appointments/{appt}", headers=stranger_as)
        assert one.status_code == 403 and one.json()["emergency_access"]["method"] == "POST"
        refused = await world.client.get("/appointments", params=by_patient, headers=stranger_as)
        assert refused.status_code == 403 and "emergency-access" in refused.json()["detail"]
    for who in (bearer(carer, "DOCTOR"), bearer(glass, "NURSE"), RECEPTION, bearer(stranger, "DOCTOR", "ADMIN")):
        assert (await world.client.get(f"/appointments/{appt}", headers=who)).json()["id"] == appt
        listed = await world.client.get("/appointments", params=by_patient, headers=who)
        assert [a["id"] for a in listed.json()["items"]] == [appt]
    assert world.accesses(glass) == [("allowed", "emergency")] * 2
    world.patients.down = True  # patients cannot be asked: a 503, never a read on a guess
    assert (await world.client.get(f"/appointments/{appt}", headers=bearer(carer, "DOCTOR"))).status_code == 503


async def test_clinicians_check_in_and_complete_only_in_the_patients_care(world: World) -> None:
    """Check-in (RECEPTIONIST, ADMIN, a NURSE caring for the patient) and completion (ADMIN, a
    DOCTOR or NURSE caring for the patient): a clinician outside the patient's care is refused with
    an offer of emergency access, the appointment is unchanged, and the refusal is audited."""
    doctor = world.practitioner((8, 16))
    patient = world.patient()
    appt = (await world.book(patient, doctor, 9)).json()["id"]
    stranger, carer = uuid.uuid4(), uuid.uuid4()
    world.patients.care[(patient, carer)] = CareBasis(in_care=True, emergency=False)

    async def step(action: str, who: dict[str, str]) -> httpx.Response:
        return await world.client.post(f"/appointments/{appt}/{action}", headers=who)

    refused = await step("check-in", bearer(stranger, "NURSE"))
    assert refused.status_code == 403 and refused.json()["emergency_access"]["href"].endswith("/emergency-access")
    no_role = await step("check-in", bearer(carer, "DOCTOR"))  # doctors do not check in, in care or not
    assert no_role.status_code == 403 and "emergency_access" not in no_role.json()
    assert (await world.client.get(f"/appointments/{appt}", headers=RECEPTION)).json()["status"] == "booked"
    assert (await step("check-in", bearer(carer, "NURSE"))).json()["status"] == "checked_in"
    assert (await step("complete", bearer(stranger, "DOCTOR"))).status_code == 403
    assert (await step("complete", bearer(carer, "DOCTOR"))).json()["status"] == "completed"
    assert [outcome for outcome, _ in world.accesses(stranger)] == ["denied", "denied"]


async def test_a_clinician_who_is_also_a_patient_cancels_only_their_own_appointment(world: World) -> None:
    """Holding PATIENT lets one cancel one's own appointment; holding DOCTOR or NURSE as well
    does not make every patient's appointment one's own."""
    doctor = world.practitioner((8, 16))
    me, other = uuid.uuid4(), uuid.uuid4()
    world.patient(me)
    theirs = world.patient(other)
    for n, role in enumerate(("DOCTOR", "NURSE")):
        appt = (await world.book(theirs, doctor, 9 + n)).json()["id"]
        r = await world.client.post(f"/appointments/{appt}/cancel", headers=bearer(me, role, "PATIENT"))
        assert r.status_code == 403, (role, r.status_code, r.text)
        assert (await world.client.get(f"/appointments/{appt}", headers=RECEPTION)).json()["status"] == "booked"


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_slots_are_working_time_minus_appointments(world: World) -> None:
    doctor = world.practitioner((8, 9), (10, 11))
    await world.book(world.patient(), doctor, 8 + 1 / 3)
    r = await world.client.get(f"/slots/{doctor}", params={"date": world.hard.day.isoformat()}, headers=RECEPTION)
    starts = [s["start"] for s in r.json()["items"]]
    assert starts == [world.at(h).isoformat() for h in (8, 8 + 2 / 3, 10, 10 + 1 / 3, 10 + 2 / 3)]
    r = await world.client.get(
        f"/slots/{doctor}", params={"date": world.hard.day.isoformat(), "service": "procedure"}, headers=RECEPTION
    )
    assert [s["start"] for s in r.json()["items"]] == [world.at(10).isoformat()]
    assert (
        await world.client.get(f"/slots/{uuid.uuid4()}", params={"date": "2026-12-01"}, headers=RECEPTION)
    ).status_code == 404


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_a_days_slots_run_from_its_local_midnight_to_the_next(world: World) -> None:
    """A day of 23, 24 or 25 hours: its slots are those between the hospital's two midnights."""
    doctor = world.practitioner((-2, 30))  # from 22:00 the evening before to past the next midnight
    r = await world.client.get(f"/slots/{doctor}", params={"date": world.hard.day.isoformat()}, headers=RECEPTION)
    assert r.status_code == 200 and r.json()["timezone"] == world.hard.zone
    items = r.json()["items"]
    assert datetime.fromisoformat(items[0]["start"]) == world.hard.midnight()
    assert datetime.fromisoformat(items[-1]["end"]) == world.hard.midnight(days=1)
    assert len(items) == day_length(world.hard) / timedelta(minutes=20)


@pytest.mark.parametrize("hard", [HARD_DATES[0]], ids=str)
async def test_at_midnight_of_the_new_year_today_and_its_slots_move_on(world: World) -> None:
    """Just before midnight the last slot of the year can still be booked; just after, the year's
    last day has no slot left and the new one offers them from its first minute on."""
    assert world.hard.day.month == world.hard.day.day == 1
    doctor = world.practitioner((-2, 2))  # 22:00 on new year's eve to 02:00
    eve, new = (world.hard.day - timedelta(days=1)).isoformat(), world.hard.day.isoformat()
    world.clock.now = world.hard.at(23, 39, days=-1, second=59)

    async def starts(day: str) -> list[datetime]:
        r = await world.client.get(f"/slots/{doctor}", params={"date": day}, headers=RECEPTION)
        return [datetime.fromisoformat(s["start"]) for s in r.json()["items"]]

    assert await starts(eve) == [world.at(-1 / 3)]  # 23:40
    assert (await world.book(world.patient(), doctor, -1 / 3)).status_code == 201
    assert len(await starts(new)) == 6  # 00:00 to 02:00
    world.clock.advance(timedelta(minutes=20, seconds=2))  # 00:00:01 on new year's day
    assert await starts(eve) == []
    assert await starts(new) == [world.at(h) for h in (1 / 3, 2 / 3, 1, 4 / 3, 5 / 3)]
    body = {"patient_id": str(world.patient()), "practitioner_id": str(doctor), "service": "consultation"}
    assert (await world.client.post("/waitlist", json=body, headers=RECEPTION)).status_code == 201


@pytest.mark.parametrize(
    "patch",
    [
        {"end": "2026-12-01T08:00:00+00:00"},  # end before start
        {"start": "2026-12-01T08:00:00"},  # no offset
        {"start": "not a time"},
        {"service": "x" * 5000},
        {"service": "astrology"},
        {"practitioner_id": "not-a-uuid"},
        {"status": "completed"},  # clients never set statuses
    ],
)
async def test_bad_input_is_a_4xx_problem(world: World, patch: dict[str, str]) -> None:
    doctor, patient = world.practitioner((8, 16)), world.patient()
    body = {
        "patient_id": str(patient),
        "practitioner_id": str(doctor),
        "service": "consultation",
        "start": world.at(9).isoformat(),
        "end": (world.at(9) + timedelta(minutes=20)).isoformat(),
        **patch,
    }
    r = await world.client.post("/appointments", json=body, headers=RECEPTION)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert world.fake.state.appointments == {}


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_cancelling_offers_the_slot_to_the_first_waitlisted_patient(world: World) -> None:
    """Freed time goes to the first patient waiting (the service's consumer of its own
    cancellations, run here as the consumer loop would; its delivery through NATS is the
    integration suite's), who takes it up once; nobody else can."""
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
    dup = await world.client.post("/waitlist", json=body, headers=RECEPTION)
    assert dup.status_code == 409

    assert (await world.client.post(f"/appointments/{taken}/cancel", headers=RECEPTION)).status_code == 200
    await world.offer_freed_time()

    offer = (await world.client.get("/waitlist", params={"patient_id": str(first)}, headers=RECEPTION)).json()
    assert offer["items"][0]["status"] == "offered"
    assert offer["items"][0]["offer"]["start"] == world.at(9).isoformat()
    assert offer["items"][0]["offer"]["expires_at"] == (world.clock() + handlers.OFFER_TIME).isoformat()
    later = (await world.client.get("/waitlist", params={"patient_id": str(second)}, headers=RECEPTION)).json()
    assert later["items"][0]["status"] == "waiting"
    assert [e.patient_id for e in world.events(WaitlistOffered)] == [first]

    booked = await world.client.post(f"/waitlist/{entries[0]}/accept", json={}, headers=RECEPTION)
    assert booked.status_code == 201, booked.text
    assert (await world.client.post(f"/waitlist/{entries[0]}/accept", headers=RECEPTION)).status_code == 409
    assert (await world.client.post(f"/waitlist/{entries[1]}/accept", headers=RECEPTION)).status_code == 409
    appt = (await world.client.get(f"/appointments/{booked.json()['id']}", headers=RECEPTION)).json()
    assert appt["patient_id"] == str(first) and appt["start"] == world.at(9).isoformat()
    mine = (await world.client.get("/waitlist", params={"patient_id": str(first)}, headers=RECEPTION)).json()
    assert mine["items"][0]["status"] == "booked" and mine["items"][0]["offer"] is None


async def test_who_may_wait_and_withdraw_and_when_an_offer_lapses(world: World) -> None:
    """A patient waits for themself (another patient's id answers 404), reception for anyone,
    a clinician never; an entry is withdrawn once; an offer not taken up in time cannot be;
    every decision is audited on the waitlist."""
    doctor = world.practitioner((8, 16))
    me = uuid.uuid4()
    mine, theirs, as_me = world.patient(me), world.patient(), bearer(me, "PATIENT")

    def wanted(patient: uuid.UUID, practitioner: uuid.UUID = doctor, service: str = "consultation") -> dict[str, str]:
        return {"patient_id": str(patient), "practitioner_id": str(practitioner), "service": service}

    assert (await world.client.post("/waitlist", json=wanted(theirs), headers=as_me)).status_code == 404
    doctors = bearer(uuid.uuid4(), "DOCTOR")
    assert (await world.client.post("/waitlist", json=wanted(mine), headers=doctors)).status_code == 403
    for bad in (wanted(mine, uuid.uuid4()), wanted(mine, service="astrology")):
        assert (await world.client.post("/waitlist", json=bad, headers=as_me)).status_code == 422
    joined = await world.client.post("/waitlist", json=wanted(mine), headers=as_me)
    assert joined.status_code == 201 and joined.json()["status"] == "waiting" and joined.json()["offer"] is None
    assert joined.json()["created_at"] == world.clock().isoformat()  # the service's clock
    entry = joined.json()["id"]
    theirs_entry = (await world.client.post("/waitlist", json=wanted(theirs), headers=RECEPTION)).json()["id"]
    listed = await world.client.get("/waitlist", params={"patient_id": str(mine)}, headers=as_me)
    assert [e["id"] for e in listed.json()["items"]] == [entry]
    assert (await world.client.get("/waitlist", params={"patient_id": str(theirs)}, headers=as_me)).status_code == 404
    for path in (f"/waitlist/{theirs_entry}/withdraw", f"/waitlist/{theirs_entry}/accept", "/waitlist/{}/withdraw"):
        assert (await world.client.post(path.format(uuid.uuid4()), headers=as_me)).status_code == 404
    assert (await world.client.post(f"/waitlist/{entry}/accept", headers=as_me)).status_code == 409  # no offer
    gone = await world.client.post(f"/waitlist/{entry}/withdraw", headers=as_me)
    assert gone.json() == {"id": entry, "status": "withdrawn"}
    again = await world.client.post(f"/waitlist/{entry}/withdraw", headers=as_me)
    assert again.status_code == 409 and "withdrawn" in again.json()["detail"]
    # An offer lapses: taken up after it expired, it is a 409 and books nothing.
    taken = (await world.book(world.patient(), doctor, 9)).json()["id"]
    await world.client.post(f"/appointments/{taken}/cancel", headers=RECEPTION)
    await world.offer_freed_time()
    [offer] = world.events(WaitlistOffered)
    assert offer.entry_id == uuid.UUID(theirs_entry)
    world.clock.now = offer.expires_at
    late = await world.client.post(f"/waitlist/{theirs_entry}/accept", headers=RECEPTION)
    assert late.status_code == 409 and "no open offer" in late.json()["detail"]
    assert [a.status.value for a in world.fake.state.appointments.values()] == ["cancelled"]
    resources = [e.data["resource"] for e in world.fake.published if e.type == ACCESSED]
    assert resources.count("waitlist") >= 8 and set(resources) == {"waitlist", "appointment"}


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01"])
async def test_slots_on_the_first_or_last_representable_day_are_not_a_500(world: World, day: str) -> None:
    doctor = world.practitioner((8, 16))
    r = await world.client.get(f"/slots/{doctor}", params={"date": day}, headers=RECEPTION)
    assert r.status_code < 500, r.text
    assert r.status_code == 200 or r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("day", ["9999-12-30", "9999-12-01", "9999-12-31", "0001-01-02", "3000-01-01", "1799-12-31"])
async def test_slots_on_a_day_outside_the_calendar_the_system_works_with_are_a_422(world: World, day: str) -> None:
    """``date=9999-12-30`` was a 500 under `his up` (the calendar's month window passed year 9999)."""
    doctor = world.practitioner((8, 16))
    r = await world.client.get(f"/slots/{doctor}", params={"date": day}, headers=RECEPTION)
    assert r.status_code == 422 and "dates from 1800-01-01 to 2999-12-31" in r.text, r.text


async def test_an_unknown_service_is_a_422_naming_the_services(world: World) -> None:
    doctor = world.practitioner((8, 16))
    r = await world.client.get(
        f"/slots/{doctor}", params={"date": world.hard.day.isoformat(), "service": "massage"}, headers=RECEPTION
    )
    assert r.status_code == 422 and {"consultation", "procedure", "follow_up"} <= set(r.json()["valid"])


async def test_a_patient_learns_only_that_the_time_is_taken_unless_it_is_their_own_appointment(world: World) -> None:
    """A collision told a patient another patient's appointment id and times; reception still
    sees which appointment it is, and a patient sees their own."""
    doctor, other_doctor = world.practitioner((8, 16)), world.practitioner((8, 16))
    account = uuid.uuid4()
    me, them, as_me = world.patient(account), world.patient(), Bearer(account, "PATIENT")
    theirs = (await world.book(them, doctor, 9)).json()

    taken = await world.book(me, doctor, 9, headers=as_me)
    assert taken.status_code == 409 and taken.headers["content-type"] == "application/problem+json"
    assert taken.json()["conflict"] == {"with": "practitioner"}
    assert theirs["id"] not in taken.text and world.at(9).isoformat() not in taken.text

    mine = (await world.book(me, other_doctor, 11, headers=as_me)).json()
    twice = await world.book(me, doctor, 11, headers=as_me)  # the doctor is free then; the patient is not
    assert twice.status_code == 409
    assert twice.json()["conflict"] == {
        "with": "patient",
        "appointment": {"id": mine["id"], "start": world.at(11).isoformat(), "end": world.at(11 + 1 / 3).isoformat()},
    }
    busy = (await world.book(world.patient(), other_doctor, 13)).json()
    later = {"start": world.at(13).isoformat(), "end": world.at(13 + 1 / 3).isoformat()}
    moved = await world.client.post(f"/appointments/{mine['id']}/reschedule", headers=as_me, json=later)
    assert moved.status_code == 409 and moved.json()["conflict"] == {"with": "practitioner"}  # moving tells no more
    assert busy["id"] not in moved.text

    staff = await world.book(world.patient(), doctor, 9)
    assert staff.json()["conflict"]["appointment"]["id"] == theirs["id"]


# --- A practitioner's day list: GET /appointments?practitioner_id=…&date=… ------------------------


async def day_list(
    world: World, practitioner: uuid.UUID, who: Mapping[str, str] = RECEPTION, *, days: int = 0, **params: str
) -> httpx.Response:
    """The practitioner's day list on the hard date (``days`` later or earlier), asked by ``who``."""
    day = world.hard.day + timedelta(days=days)
    query = {"practitioner_id": str(practitioner), "date": day.isoformat(), **params}
    return await world.client.get("/appointments", params=query, headers=who)


def ids(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return [a["id"] for a in r.json()["items"]]


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_a_day_list_is_what_starts_between_the_hospitals_two_midnights_earliest_first(world: World) -> None:
    """In every state, from the day's local midnight up to the next (23, 24 or 25 hours on): one
    that starts the evening before and runs into the day is the day before's, one that starts in
    the day's last minutes is the day's; the repeated hour of the day the clocks go back is there
    twice. At one start (a cancelled appointment and the one booked in its place), by id."""
    doctor, other = world.practitioner((-2, 30)), world.practitioner((-2, 30))
    hours = day_length(world.hard) / timedelta(hours=1)

    async def booked(start: float, practitioner: uuid.UUID = doctor) -> str:
        r = await world.book(world.patient(), practitioner, start)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def cancelled(aid: str) -> str:
        assert (await world.client.post(f"/appointments/{aid}/cancel", headers=RECEPTION)).status_code == 200
        return aid

    # Booked out of order, so that the order of the answer is the list's own.
    last = await booked(hours - 1 / 3)  # 23:40, until the next midnight
    evening = await cancelled(await booked(-1 / 6))  # 23:50 the evening before, until 00:10
    tomorrow = await booked(hours)  # the next midnight
    first = await booked(0)
    at_nine = sorted([await cancelled(await booked(9)), await booked(9)])
    repeated = [await booked(3.5), await booked(2.5)]  # 02:30 twice on the day the clocks go back
    await booked(9, other)

    listed = await day_list(world, doctor, limit="200")
    assert ids(listed) == [first, *reversed(repeated), *at_nine, last]
    starts = [datetime.fromisoformat(a["start"]) for a in listed.json()["items"]]
    assert starts[0] == world.hard.midnight() and starts[-1] == world.hard.midnight(days=1) - timedelta(minutes=20)
    assert [a["status"] for a in listed.json()["items"]].count("cancelled") == 1
    assert ids(await day_list(world, doctor, days=-1)) == [evening]
    assert ids(await day_list(world, doctor, days=1)) == [tomorrow]
    assert ids(await day_list(world, doctor, limit="2")) == [first, repeated[1]]
    assert ids(await day_list(world, uuid.uuid4())) == []  # a practitioner with none, or no such practitioner


async def test_who_reads_a_day_list_and_every_patient_on_it_is_recorded(world: World) -> None:
    """Reception and ADMIN read the whole list by role; a DOCTOR or NURSE the appointments of the
    patients in their care or under an emergency grant, the others left out (recorded as
    refused); other staff roles and patients are refused before anything is read, a patient
    even for a day that holds their own appointment. One record per patient on the list."""
    doctor = world.practitioner((8, 16))
    me = uuid.uuid4()
    cared, granted, mine = world.patient(), world.patient(), world.patient(me)
    appts = {}
    for patient, hour in ((cared, 9), (granted, 10), (mine, 11), (cared, 12)):
        r = await world.book(patient, doctor, hour)
        appts[(patient, hour)] = r.json()["id"]
    carer, glass, stranger = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    world.patients.care[(cared, carer)] = CareBasis(in_care=True, emergency=False)
    world.patients.care[(granted, glass)] = CareBasis(in_care=False, emergency=True)
    every = list(appts.values())
    on_it = [cared, granted, mine]

    for role in ("RECEPTIONIST", "ADMIN"):
        actor = uuid.uuid4()
        assert ids(await day_list(world, doctor, bearer(actor, role))) == every
        assert world.records(actor) == [(p, "read", "allowed", "care") for p in on_it]
    both = uuid.uuid4()
    assert ids(await day_list(world, doctor, bearer(both, "DOCTOR", "RECEPTIONIST"))) == every
    assert ids(await day_list(world, doctor, bearer(carer, "DOCTOR"))) == [appts[(cared, 9)], appts[(cared, 12)]]
    assert world.records(carer) == [
        (cared, "read", "allowed", "care"),
        (granted, "read", "denied", "care"),
        (mine, "read", "denied", "care"),
    ]
    assert ids(await day_list(world, doctor, bearer(glass, "NURSE"))) == [appts[(granted, 10)]]
    assert [(p, o, why) for p, _, o, why in world.records(glass)] == [
        (cared, "denied", "care"),
        (granted, "allowed", "emergency"),
        (mine, "denied", "care"),
    ]
    assert ids(await day_list(world, doctor, bearer(stranger, "NURSE"))) == []
    assert [o for _, _, o, _ in world.records(stranger)] == ["denied"] * 3

    for who in (bearer(me, "PATIENT"), *(bearer(uuid.uuid4(), r) for r in ("LAB_TECH", "BILLING", "AUDITOR"))):
        refused = await day_list(world, doctor, who)
        assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
        assert "patient_id" in refused.json()["detail"] and str(mine) not in refused.text
    assert world.records(me) == []  # refused before anything was read: nothing of a patient reached
    assert (await day_list(world, doctor, {})).status_code == 401

    world.patients.down = True  # a clinician's list needs patients' answer: a 503, never a guess
    assert (await day_list(world, doctor, bearer(carer, "DOCTOR"))).status_code == 503
    assert ids(await day_list(world, doctor)) == every  # reception's does not ask


async def test_an_appointment_booked_while_patients_are_asked_is_left_out_of_a_clinicians_list(
    world: World,
) -> None:
    """A clinician's list is decided patient by patient before the read that answers; a patient
    booked in between was never decided: not shown, and no record says it was read."""
    doctor = world.practitioner((8, 16))
    carer, cared, late = uuid.uuid4(), world.patient(), world.patient()
    world.patients.care[(cared, carer)] = CareBasis(in_care=True, emergency=False)
    world.patients.care[(late, carer)] = CareBasis(in_care=True, emergency=False)
    shown = (await world.book(cared, doctor, 9)).json()["id"]
    asked = world.patients.relationship

    async def booking_meanwhile(patient_id: uuid.UUID, user_id: uuid.UUID) -> Relationship | None:
        assert (await world.book(late, doctor, 10)).status_code == 201
        return await asked(patient_id, user_id)

    world.patients.relationship = booking_meanwhile  # type: ignore[method-assign]
    assert ids(await day_list(world, doctor, bearer(carer, "DOCTOR"))) == [shown]
    assert world.records(carer) == [(cared, "read", "allowed", "care")]
    world.patients.relationship = asked  # type: ignore[method-assign]
    assert len(ids(await day_list(world, doctor, bearer(carer, "DOCTOR")))) == 2


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({}, ["patient_id"]),
        ({"practitioner_id": "p"}, ["date"]),
        ({"date": "d"}, ["practitioner_id"]),
        ({"patient_id": "a", "practitioner_id": "p"}, ["practitioner_id"]),
        ({"patient_id": "a", "date": "d"}, ["date"]),
        ({"patient_id": "a", "practitioner_id": "p", "date": "d"}, ["practitioner_id", "date"]),
        ({"specialty": "s"}, ["date"]),
        ({"practitioner_id": "p", "specialty": "s", "date": "d"}, ["specialty"]),
        ({"patient_id": "a", "specialty": "s"}, ["specialty"]),
    ],
    ids=[
        "none",
        "practitioner",
        "date",
        "patient+practitioner",
        "patient+date",
        "all three",
        "specialty",
        "practitioner+specialty",
        "patient+specialty",
    ],
)
@pytest.mark.parametrize("hard", [HARD_DATES[4]], ids=str)
async def test_anything_but_a_patient_or_a_practitioners_day_is_a_422_naming_what_is_expected(
    world: World, params: dict[str, str], named: list[str]
) -> None:
    patient, doctor = world.patient(), world.practitioner((8, 16))
    await world.book(patient, doctor, 9)
    values = {"a": str(patient), "p": str(doctor), "d": world.hard.day.isoformat(), "s": "cardiology"}
    r = await world.client.get("/appointments", params={k: values[v] for k, v in params.items()}, headers=RECEPTION)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert "patient_id alone, or practitioner_id or specialty together with date" in problem["detail"]
    assert problem["expected"] == [["patient_id"], ["practitioner_id", "date"], ["specialty", "date"]]
    assert [e["loc"] for e in problem["errors"]] == [[n] for n in named]
    assert not [e for e in world.fake.published if e.type == ACCESSED and e.data["action"] == "read"]


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_a_clinics_day_is_every_practitioner_of_the_specialty_on_it_earliest_first(world: World) -> None:
    """The day lists of the specialty's practitioners as one, between the day's two local
    midnights, earliest first; another specialty's practitioner is not on it, nor another day."""
    a = world.practitioner((-2, 30), name="Dr. Ay", specialty="cardiology")
    b = world.practitioner((-2, 30), name="Dr. Bulut", specialty="cardiology")
    other = world.practitioner((-2, 30), specialty="internal_medicine")

    async def booked(practitioner: uuid.UUID, start: float) -> str:
        r = await world.book(world.patient(), practitioner, start)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    late, early, middle = await booked(a, 15), await booked(b, 0), await booked(b, 9)
    await booked(other, 8)
    await booked(a, -1)  # the evening before
    query = {"specialty": "cardiology", "date": world.hard.day.isoformat()}
    r = await world.client.get("/appointments", params=query, headers=RECEPTION)
    assert ids(r) == [early, middle, late]
    r = await world.client.get("/appointments", params={**query, "limit": "2"}, headers=RECEPTION)
    assert ids(r) == [early, middle]
    unknown = await world.client.get("/appointments", params={**query, "specialty": "astrology"}, headers=RECEPTION)
    assert unknown.status_code == 422 and "cardiology" in unknown.json()["valid"]


@pytest.mark.parametrize("hard", [HARD_DATES[0]], ids=str)
async def test_a_clinics_day_is_read_and_recorded_as_a_practitioners_is(world: World) -> None:
    """A clinician sees on it only the patients in their care; a patient or another role is
    refused before the directory is asked; every patient shown is recorded as read."""
    doctor = world.practitioner((8, 16), specialty="cardiology")
    cared, stranger = world.patient(), world.patient()
    carer = uuid.uuid4()
    world.patients.care[(cared, carer)] = CareBasis(in_care=True, emergency=False)
    mine = (await world.book(cared, doctor, 9)).json()["id"]
    await world.book(stranger, doctor, 10)
    query = {"specialty": "cardiology", "date": world.hard.day.isoformat()}
    assert ids(await world.client.get("/appointments", params=query, headers=bearer(carer, "DOCTOR"))) == [mine]
    asked = world.directory.rosters
    for role in ("PATIENT", "BILLING", "LAB_TECH"):
        refused = await world.client.get("/appointments", params=query, headers=bearer(uuid.uuid4(), role))
        assert refused.status_code == 403, role
    assert world.directory.rosters == asked
    assert world.records(carer) == [(cared, "read", "allowed", "care"), (stranger, "read", "denied", "care")]


@pytest.mark.parametrize("day", ["2027-02-29", "28.03.2027", "2027-3-28", "9999-12-31", "1799-12-31", ""])
@pytest.mark.parametrize("hard", [HARD_DATES[4]], ids=str)
async def test_a_day_list_of_no_such_day_is_a_422(world: World, day: str) -> None:
    doctor = world.practitioner((8, 16))
    r = await world.client.get("/appointments", params={"practitioner_id": str(doctor), "date": day}, headers=RECEPTION)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    assert "date" in r.text, r.text


@pytest.mark.parametrize("hard", [HARD_DATES[0]], ids=str)
async def test_the_api_documents_the_three_ways_to_list_appointments(world: World) -> None:
    document = (await world.client.get("/openapi.json")).json()
    operation = document["paths"]["/appointments"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert list(params) == ["patient_id", "practitioner_id", "specialty", "date", "limit"]
    assert not any(p.get("required") for p in params.values())
    assert "`practitioner_id` or `specialty` together with `date`" in operation["description"]
    assert {"403", "404", "422"} <= set(operation["responses"])


# --- the first free slots across practitioners ----------------------------------------------------


async def first_available(
    world: World, first_day: str | None = None, who: Mapping[str, str] = RECEPTION, /, **params: object
) -> httpx.Response:
    """``GET /appointments/first-available`` with ``from=first_day`` (if given) and ``params``."""
    query = {k: str(v) for k, v in params.items()} | ({"from": first_day} if first_day is not None else {})
    return await world.client.get("/appointments/first-available", params=query, headers=who)


def starts(r: httpx.Response) -> list[tuple[datetime, str]]:
    """(start, practitioner name) of each slot answered."""
    assert r.status_code == 200, r.text
    return [(datetime.fromisoformat(s["start"]), s["practitioner_name"]) for s in r.json()["items"]]


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_the_first_free_slots_across_practitioners_are_the_earliest_ties_by_name(world: World) -> None:
    """Each practitioner's slots as their own slots route computes them (working time minus
    appointments); across practitioners the earliest first, a tie in the order of their names.
    A practitioner the calendar no longer knows has none; one of another specialty is left out
    when a specialty is asked for."""
    # Their ids in the other order than their names, so that a tie told by id would show.
    zeynep = world.practitioner((9, 10), name="Dr. Zeynep Zor", pid=uuid.UUID(int=1))
    ali = world.practitioner((9, 10), name="Dr. Ali Acar", specialty="cardiology", pid=uuid.UUID(int=2))
    world.practitioner((8, 9), name="Dr. Can Cem", specialty="cardiology")
    world.directory.add("cardiology", name="Dr. Gone Away")  # in the directory, not in the calendar
    await world.book(world.patient(), ali, 9)
    day = world.hard.day.isoformat()
    r = await first_available(world, day, days=1, limit=5)
    assert starts(r) == [
        (world.at(8), "Dr. Can Cem"),
        (world.at(8 + 1 / 3), "Dr. Can Cem"),
        (world.at(8 + 2 / 3), "Dr. Can Cem"),
        (world.at(9), "Dr. Zeynep Zor"),
        (world.at(9 + 1 / 3), "Dr. Ali Acar"),
    ]
    body = r.json()
    assert body["from"] == day and body["days"] == 1 and body["timezone"] == world.hard.zone
    assert body["service"] == "consultation" and body["specialty"] is None
    first = body["items"][3]
    assert set(first) == {"practitioner_id", "practitioner_name", "specialty", "start", "end"}
    assert first["practitioner_id"] == str(zeynep) and first["specialty"] == "internal_medicine"
    assert datetime.fromisoformat(first["end"]) == world.at(9 + 1 / 3)

    cardiology = await first_available(world, day, specialty="cardiology", days=1, limit=50)
    assert {name for _, name in starts(cardiology)} == {"Dr. Can Cem", "Dr. Ali Acar"}
    assert len(starts(cardiology)) == 3 + 2  # Ali's 09:00 is booked
    procedures = await first_available(world, day, service="procedure", days=1)
    assert starts(procedures) == [(world.at(8), "Dr. Can Cem"), (world.at(9), "Dr. Zeynep Zor")]
    assert procedures.json()["items"][0]["end"] == (world.at(8) + timedelta(minutes=45)).isoformat()


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_days_are_searched_from_today_between_local_midnights_until_enough_are_found(world: World) -> None:
    """From today by the service's clock (noon the day before the hard date): the day before's
    slots (22:00 to its midnight), then the hard date's, its 23, 24 or 25 hours cut at its two
    midnights as the slots route cuts them. The search stops after the day that brings enough:
    each practitioner was asked once for each of the two days, the directory once."""
    night = world.practitioner((-2, 30), name="Dr. Gece")
    idle = world.practitioner(name="Dr. Idle")
    r = await first_available(world, limit=50)
    assert r.json()["from"] == (world.hard.day - timedelta(days=1)).isoformat()
    found = starts(r)
    assert len(found) == 50
    assert [s for s, _ in found[:7]] == [world.at(h) for h in (-2, -5 / 3, -4 / 3, -1, -2 / 3, -1 / 3, 0)]
    assert [s for s, _ in found] == sorted(s for s, _ in found)
    day_before, hard_day = (handlers.local_day(world.hard.day + timedelta(days=d), world.hard.tz) for d in (-1, 0))
    assert sorted(world.calendar.asked, key=lambda q: (q[1].start, str(q[0]))) == sorted(
        [(p, w) for w in (day_before, hard_day) for p in (night, idle)], key=lambda q: (q[1].start, str(q[0]))
    )
    assert world.directory.rosters == 1
    everything = await first_available(world, world.hard.day.isoformat(), days=1, limit=50)
    whole_day = day_length(world.hard) / timedelta(minutes=20)
    assert len(starts(everything)) == min(50, whole_day)


async def test_a_search_asks_only_for_days_still_ahead_and_stops_at_the_first_day_with_enough(world: World) -> None:
    """Three practitioners, one working on the fifth day only: the days already over are not
    asked about, then three questions a day up to the fifth, and none after it."""
    late = world.practitioner((4 * 24 + 9, 4 * 24 + 10), name="Dr. Late")
    world.practitioner(name="Dr. Never")
    world.practitioner(name="Dr. Nor")
    r = await first_available(world, (world.hard.day - timedelta(days=3)).isoformat(), days=31, limit=2)
    assert starts(r) == [(world.at(4 * 24 + 9), "Dr. Late"), (world.at(4 * 24 + 9 + 1 / 3), "Dr. Late")]
    asked_days = sorted({w.start for _, w in world.calendar.asked})
    first_asked = handlers.local_day(world.hard.day - timedelta(days=1), world.hard.tz).start  # today
    assert asked_days[0] == first_asked and len(asked_days) == 6  # today, the hard date and four more
    assert len(world.calendar.asked) == 3 * 6
    assert r.json()["items"][0]["practitioner_id"] == str(late)
    world.calendar.asked.clear()
    nothing = await first_available(world, days=3)
    assert starts(nothing) == [] and len(world.calendar.asked) == 3 * 3


@pytest.mark.parametrize("hard", [HARD_DATES[0]], ids=str)
async def test_at_midnight_of_the_new_year_the_first_free_slots_move_on(world: World) -> None:
    """Today is the year's last day until its midnight: its last slot first; a second after it,
    today is new year's day, whose first slot has begun."""
    world.practitioner((-2, 2), name="Dr. Yılbaşı")
    world.clock.now = world.hard.at(23, 39, days=-1, second=59)
    r = await first_available(world, limit=3)
    assert r.json()["from"] == (world.hard.day - timedelta(days=1)).isoformat()
    assert [s for s, _ in starts(r)] == [world.at(h) for h in (-1 / 3, 0, 1 / 3)]
    world.clock.advance(timedelta(seconds=2))  # 23:40:01
    world.clock.advance(timedelta(minutes=20))  # 00:00:01 on new year's day
    r = await first_available(world, limit=3)
    assert r.json()["from"] == world.hard.day.isoformat()
    assert [s for s, _ in starts(r)] == [world.at(h) for h in (1 / 3, 2 / 3, 1)]


async def test_any_signed_in_user_asks_for_the_first_free_slots(world: World) -> None:
    world.practitioner((8, 9))
    day = world.hard.day.isoformat()
    for who in (bearer(uuid.uuid4(), "PATIENT"), bearer(uuid.uuid4(), "DOCTOR"), bearer(uuid.uuid4(), "AUDITOR")):
        assert len(starts(await first_available(world, day, who))) == 3
    r = await world.client.get("/appointments/first-available")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"service": "massage"}, "consultation"),
        ({"specialty": "astrology"}, "cardiology"),
        ({"days": "32"}, "days"),
        ({"days": "0"}, "days"),
        ({"limit": "51"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"from": "9999-12-30"}, "dates from 1800-01-01 to 2999-12-31"),
        ({"from": "2027-02-30"}, "from"),
        ({"service": "x" * 5000}, "service"),
    ],
)
async def test_bad_input_to_the_first_free_slots_is_a_422_problem(
    world: World, params: dict[str, str], says: str
) -> None:
    world.practitioner((8, 9))
    r = await first_available(world, params.get("from"), RECEPTION, **{k: v for k, v in params.items() if k != "from"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json" and says in r.text, r.text
    if params.get("service") == "massage" or "specialty" in params:
        assert says in r.json()["valid"]


async def test_the_first_free_slots_end_at_year_2999_without_a_500(world: World) -> None:
    world.practitioner((8, 9))
    r = await first_available(world, "2999-12-31", days=31)
    assert r.status_code == 200 and starts(r) == [], r.text


async def test_an_unreachable_directory_is_a_503(world: World) -> None:
    world.practitioner((8, 9))
    world.directory.down = True
    r = await first_available(world)
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json", r.text
