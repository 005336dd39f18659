"""The practitioners' use cases through their routes, over the in-memory ports (no database, no
network): who may register, give shifts and request, decide and read leave; shifts never
overlap (the 409 names the shift hit); leave follows its state machine; availability is shifts
minus approved leave minus booked time; bad input is a 4xx problem.

The routes are the service's own, mounted in-process over ``his.testing.practitioners``, whose
contract with the PostgreSQL store is ``tests/integration/test_practitioners_contract.py``; what
needs the database (overlapping shifts added at once, the gRPC calendar) stays in
``tests/integration/test_practitioners.py``. Shifts are planned the day before a hard date, by
the service's clock, and every unit runs on one of the hard dates.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import pytest

from his.events.practitioners import LeaveApproved, LeaveCancelled, PractitionerRegistered, ShiftScheduled
from his.events.scheduling import AppointmentBooked, AppointmentCancelled, AppointmentRescheduled
from his.kernel.clock import FakeClock
from his.kernel.consumer import PermanentError
from his.kernel.events import Envelope, Event
from his.practitioners import handlers
from his.practitioners.app import http_over
from his.testing.practitioners import FakePractitioners
from tests.support.api import bearer, serve
from tests.support.calendar import HARD_DATES, HardDate

ADMIN = uuid.uuid4()
E = TypeVar("E", bound=Event)


@dataclass
class Staff:
    client: httpx.AsyncClient
    fake: FakePractitioners
    clock: FakeClock
    hard: HardDate

    def at(self, hours: float) -> str:
        """``hours`` after the local midnight of the hard date."""
        return (self.hard.midnight() + timedelta(hours=hours)).isoformat()

    async def practitioner(self, user: uuid.UUID | None = None, specialty: str = "cardiology") -> str:
        body: dict[str, Any] = {"full_name": "Dr. Elif Şahin", "specialty": specialty}
        if user:
            body["user_id"] = str(user)
        r = await self.client.post("/practitioners", json=body, headers=bearer(ADMIN, "ADMIN"))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def shift(self, pid: str, start: float, end: float, who: uuid.UUID = ADMIN, role: str = "ADMIN") -> str:
        body = {"start": self.at(start), "end": self.at(end)}
        r = await self.client.post(f"/practitioners/{pid}/shifts", json=body, headers=bearer(who, role))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def published(self) -> list[str]:
        """The types of the committed events, in commit order (the outbox's subjects)."""
        return [e.type for e in self.fake.published]

    def events(self, kind: type[E]) -> list[E]:
        """The committed events of one type, as their models."""
        return [kind.model_validate(e.data) for e in self.fake.published if e.type == kind.type]

    async def announce(self, ev: Event) -> None:
        """Scheduling's event, handled as the consumer loop would, in a unit of its own."""
        async with self.fake.uow() as uow:
            await handlers.appointment_changed(uow, Envelope.wrap(ev, aggregate_id=uuid.uuid4()), ev)


@pytest.fixture(params=[HARD_DATES[0], HARD_DATES[4]], ids=str)
def hard(request: pytest.FixtureRequest) -> HardDate:
    """A new year's day, or the day the clocks go back."""
    day: HardDate = request.param
    return day


@pytest.fixture
async def api(hard: HardDate) -> AsyncIterator[Staff]:
    """The practitioners' routes at noon the day before ``hard``."""
    clock = hard.clock(12, 0, days=-1)
    fake = FakePractitioners(clock)
    async with serve(http_over(fake), base_url="http://practitioners") as client:
        yield Staff(client, fake, clock, hard)


async def test_profile_needs_admin_and_a_known_specialty(api: Staff) -> None:
    client = api.client
    body = {"full_name": "Dr. A", "specialty": "cardiology"}
    assert (await client.post("/practitioners", json=body, headers=bearer(uuid.uuid4(), "DOCTOR"))).status_code == 403
    r = await client.post("/practitioners", json={**body, "specialty": "astrology"}, headers=bearer(ADMIN, "ADMIN"))
    assert r.status_code == 422 and "specialty" in r.json()["detail"]
    r = await client.post("/practitioners", json={**body, "id": str(uuid.uuid4())}, headers=bearer(ADMIN, "ADMIN"))
    assert r.status_code == 422  # ids are the server's to choose
    r = await client.post("/practitioners", json={**body, "full_name": "   "}, headers=bearer(ADMIN, "ADMIN"))
    assert r.status_code == 422 and "blank" in r.json()["detail"]
    assert api.published() == [] and api.fake.state.practitioners == {}
    pid = await api.practitioner()
    r = await client.get(f"/practitioners/{pid}", headers=bearer(uuid.uuid4(), "PATIENT"))
    assert r.status_code == 200 and r.json()["specialty"] == "cardiology"
    assert r.json()["created_at"] == api.clock().isoformat()  # the service's clock, not the database's
    assert api.published()[-1] == "his.practitioners.practitioner.registered.v1"
    assert [e.practitioner_id for e in api.events(PractitionerRegistered)] == [uuid.UUID(pid)]
    assert (await client.get(f"/practitioners/{uuid.uuid4()}", headers=bearer(ADMIN, "ADMIN"))).status_code == 404


async def test_a_user_account_is_linked_to_one_practitioner(api: Staff) -> None:
    me = uuid.uuid4()
    mine = await api.practitioner(me)
    body = {"full_name": "Dr. Twin", "specialty": "neurology", "user_id": str(me)}
    r = await api.client.post("/practitioners", json=body, headers=bearer(ADMIN, "ADMIN"))
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    assert "already linked" in r.json()["detail"]
    assert list(api.fake.state.practitioners) == [uuid.UUID(mine)]
    assert api.published() == [PractitionerRegistered.type]


async def test_overlapping_shifts_are_refused_naming_the_collision(api: Staff) -> None:
    client, at = api.client, api.at
    pid = await api.practitioner()
    admin = bearer(ADMIN, "ADMIN")
    first = await client.post(f"/practitioners/{pid}/shifts", json={"start": at(8), "end": at(16)}, headers=admin)
    assert first.status_code == 201
    # Back to back is fine; overnight is fine.
    r = await client.post(f"/practitioners/{pid}/shifts", json={"start": at(16), "end": at(20)}, headers=admin)
    assert r.status_code == 201
    r = await client.post(f"/practitioners/{pid}/shifts", json={"start": at(22), "end": at(30)}, headers=admin)
    assert r.status_code == 201
    clash = await client.post(f"/practitioners/{pid}/shifts", json={"start": at(12), "end": at(14)}, headers=admin)
    assert clash.status_code == 409
    assert clash.headers["content-type"] == "application/problem+json"
    assert clash.json()["conflict"] == {"id": first.json()["id"], "start": at(8), "end": at(16)}
    # Another practitioner may work the same hours.
    other = await api.practitioner()
    r = await client.post(f"/practitioners/{other}/shifts", json={"start": at(12), "end": at(14)}, headers=admin)
    assert r.status_code == 201
    assert api.published().count(ShiftScheduled.type) == 4  # none for the refused shift
    listed = await client.get(f"/practitioners/{pid}/shifts", params={"from": at(0), "to": at(48)}, headers=admin)
    assert [(s["start"], s["end"]) for s in listed.json()["items"]] == [
        (at(8), at(16)),
        (at(16), at(20)),
        (at(22), at(30)),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"start": "2026-12-01T08:00:00", "end": "2026-12-01T16:00:00"},  # no offset
        {"start": "tomorrow", "end": "later"},
        {"start": "2026-12-01T16:00:00+00:00", "end": "2026-12-01T08:00:00+00:00"},
        {"start": "2026-12-01T08:00:00+00:00", "end": "2026-12-03T08:00:00+00:00"},
        {"start": "2026-12-01T08:00:00+00:00"},
    ],
)
async def test_bad_shift_input_is_a_4xx_problem(api: Staff, body: dict[str, str]) -> None:
    client = api.client
    pid = await api.practitioner()
    r = await client.post(f"/practitioners/{pid}/shifts", json=body, headers=bearer(ADMIN, "ADMIN"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    unknown = await client.post(
        f"/practitioners/{uuid.uuid4()}/shifts",
        json={"start": api.at(8), "end": api.at(9)},
        headers=bearer(ADMIN, "ADMIN"),
    )
    assert unknown.status_code == 404
    assert api.fake.state.shifts == {}


@pytest.mark.parametrize(
    ("start", "end", "rule"),
    [
        (8, 8.2, "at least 15 minutes"),
        (-24 * 8, -24 * 8 + 8, "7 days in the past"),
        (24 * 402, 24 * 402 + 8, "400 days ahead"),
    ],
)
async def test_a_shift_is_15_minutes_to_24_hours_not_long_past_nor_too_far_ahead(
    api: Staff, start: float, end: float, rule: str
) -> None:
    pid = await api.practitioner()
    body = {"start": api.at(start), "end": api.at(end)}
    r = await api.client.post(f"/practitioners/{pid}/shifts", json=body, headers=bearer(ADMIN, "ADMIN"))
    assert r.status_code == 422 and rule in r.json()["detail"], r.text
    assert api.fake.state.shifts == {} and ShiftScheduled.type not in api.published()


async def test_a_practitioner_manages_only_their_own_shifts_and_leave(api: Staff) -> None:
    client, at = api.client, api.at
    me, colleague = uuid.uuid4(), uuid.uuid4()
    mine, theirs = await api.practitioner(me), await api.practitioner(colleague)
    doctor = bearer(me, "DOCTOR")
    assert (
        await client.post(f"/practitioners/{mine}/shifts", json={"start": at(8), "end": at(9)}, headers=doctor)
    ).status_code == 201
    r = await client.post(f"/practitioners/{theirs}/shifts", json={"start": at(8), "end": at(9)}, headers=doctor)
    assert r.status_code == 403
    r = await client.post(
        f"/practitioners/{theirs}/leave-requests", json={"start": at(8), "end": at(9)}, headers=doctor
    )
    assert r.status_code == 403
    assert (await client.get(f"/practitioners/{theirs}/leave-requests", headers=doctor)).status_code == 403
    r = await client.post(f"/practitioners/{mine}/leave-requests", json={"start": at(8), "end": at(9)}, headers=doctor)
    assert r.status_code == 201
    # Nobody approves their own leave.
    approve = await client.post(f"/practitioners/{mine}/leave-requests/{r.json()['id']}/approve", headers=doctor)
    assert approve.status_code == 403
    assert [x.status.value for _, x in api.fake.state.leave.values()] == ["requested"]
    # Shifts are for staff and the practitioner to see; a patient sees none, even their own.
    window = {"from": at(0), "to": at(24)}
    assert (await client.get(f"/practitioners/{mine}/shifts", params=window, headers=doctor)).status_code == 200
    assert (await client.get(f"/practitioners/{theirs}/shifts", params=window, headers=doctor)).status_code == 200
    patient = bearer(uuid.uuid4(), "PATIENT")
    assert (await client.get(f"/practitioners/{mine}/shifts", params=window, headers=patient)).status_code == 403


async def test_leave_requests_are_listed_with_when_they_were_made_and_decided(api: Staff) -> None:
    client, at = api.client, api.at
    me = uuid.uuid4()
    pid = await api.practitioner(me)
    doctor, admin = bearer(me, "DOCTOR"), bearer(ADMIN, "ADMIN")
    first = await client.post(
        f"/practitioners/{pid}/leave-requests", json={"start": at(8), "end": at(9)}, headers=doctor
    )
    assert first.json()["status"] == "requested"
    made = api.clock().isoformat()
    api.clock.advance(timedelta(hours=2))
    later = await client.post(
        f"/practitioners/{pid}/leave-requests", json={"start": at(30), "end": at(40)}, headers=admin
    )
    r = await client.post(f"/practitioners/{pid}/leave-requests/{first.json()['id']}/reject", headers=admin)
    assert r.json() == {"id": first.json()["id"], "status": "rejected"}
    listed = (await client.get(f"/practitioners/{pid}/leave-requests", headers=doctor)).json()["items"]
    now = api.clock().isoformat()
    assert listed == [
        {
            "id": later.json()["id"],
            "status": "requested",
            "start": at(30),
            "end": at(40),
            "created_at": now,
            "decided_at": None,
        },
        {
            "id": first.json()["id"],
            "status": "rejected",
            "start": at(8),
            "end": at(9),
            "created_at": made,
            "decided_at": now,
        },
    ]
    # Leave wholly in the past cannot be requested; a rejected request is not approved later.
    past = {"start": at(-48), "end": at(-30)}
    r = await client.post(f"/practitioners/{pid}/leave-requests", json=past, headers=doctor)
    assert r.status_code == 422 and "past" in r.json()["detail"]
    r = await client.post(f"/practitioners/{pid}/leave-requests/{first.json()['id']}/approve", headers=admin)
    assert r.status_code == 409 and "rejected" in r.json()["detail"]
    assert api.published() == [PractitionerRegistered.type]


async def test_approved_leave_removes_availability_and_cancelling_restores_it(api: Staff) -> None:
    client, at = api.client, api.at
    me = uuid.uuid4()
    pid = await api.practitioner(me)
    admin, doctor = bearer(ADMIN, "ADMIN"), bearer(me, "DOCTOR")
    await client.post(f"/practitioners/{pid}/shifts", json={"start": at(8), "end": at(16)}, headers=admin)
    window = {"from": at(0), "to": at(24)}
    free = await client.get(f"/practitioners/{pid}/availability", params=window, headers=admin)
    assert free.json()["items"] == [{"start": at(8), "end": at(16)}]

    leave = await client.post(
        f"/practitioners/{pid}/leave-requests", json={"start": at(12), "end": at(24)}, headers=doctor
    )
    lid = leave.json()["id"]
    # Requested leave does not yet change anything.
    assert (await client.get(f"/practitioners/{pid}/availability", params=window, headers=admin)).json() == free.json()
    r = await client.post(f"/practitioners/{pid}/leave-requests/{lid}/approve", headers=admin)
    assert r.json() == {"id": lid, "status": "approved"}
    free = await client.get(f"/practitioners/{pid}/availability", params=window, headers=admin)
    assert free.json()["items"] == [{"start": at(8), "end": at(12)}]
    # Invalid transitions answer 409.
    assert (await client.post(f"/practitioners/{pid}/leave-requests/{lid}/approve", headers=admin)).status_code == 409
    assert (await client.post(f"/practitioners/{pid}/leave-requests/{lid}/reject", headers=admin)).status_code == 409
    assert (
        await client.post(f"/practitioners/{pid}/leave-requests/{lid}/frobnicate", headers=admin)
    ).status_code == 422
    assert (
        await client.post(f"/practitioners/{pid}/leave-requests/{uuid.uuid4()}/cancel", headers=admin)
    ).status_code == 404
    # The practitioner cancels it: the time is free again.
    assert (await client.post(f"/practitioners/{pid}/leave-requests/{lid}/cancel", headers=doctor)).status_code == 200
    free = await client.get(f"/practitioners/{pid}/availability", params=window, headers=admin)
    assert free.json()["items"] == [{"start": at(8), "end": at(16)}]
    assert api.published()[-2:] == ["his.practitioners.leave.approved.v1", "his.practitioners.leave.cancelled.v1"]
    [approved] = api.events(LeaveApproved)
    assert [str(approved.leave_id), approved.start.isoformat(), approved.end.isoformat()] == [lid, at(12), at(24)]
    assert len(api.events(LeaveCancelled)) == 1
    # Windows are bounded and need offsets.
    r = await client.get(f"/practitioners/{pid}/availability", params={"from": at(0), "to": at(24 * 40)}, headers=admin)
    assert r.status_code == 422
    r = await client.get(
        f"/practitioners/{pid}/availability", params={"from": "2026-12-01T00:00:00", "to": at(5)}, headers=admin
    )
    assert r.status_code == 422
    assert (
        await client.get(f"/practitioners/{pid}/availability", params=window, headers=bearer(me, "PATIENT"))
    ).status_code == 403
    unknown = await client.get(f"/practitioners/{uuid.uuid4()}/availability", params=window, headers=admin)
    assert unknown.status_code == 404


async def test_cancelling_leave_that_was_never_approved_announces_nothing(api: Staff) -> None:
    pid = await api.practitioner()
    admin = bearer(ADMIN, "ADMIN")
    body = {"start": api.at(12), "end": api.at(24)}
    lid = (await api.client.post(f"/practitioners/{pid}/leave-requests", json=body, headers=admin)).json()["id"]
    r = await api.client.post(f"/practitioners/{pid}/leave-requests/{lid}/cancel", headers=admin)
    assert r.json() == {"id": lid, "status": "cancelled"}
    assert api.published() == [PractitionerRegistered.type]
    # Another practitioner's leave request is not found through this one.
    other = await api.practitioner()
    assert (
        await api.client.post(f"/practitioners/{other}/leave-requests/{lid}/cancel", headers=admin)
    ).status_code == 404


async def test_booked_time_announced_by_scheduling_leaves_availability(api: Staff) -> None:
    client, at = api.client, api.at
    pid = await api.practitioner()
    admin = bearer(ADMIN, "ADMIN")
    await client.post(f"/practitioners/{pid}/shifts", json={"start": at(8), "end": at(12)}, headers=admin)
    day = api.hard.midnight()
    common = {
        "appointment_id": uuid.uuid4(),
        "patient_id": uuid.uuid4(),
        "practitioner_id": uuid.UUID(pid),
        "service": "consultation",
        "start": day + timedelta(hours=9),
        "end": day + timedelta(hours=9, minutes=20),
    }
    for ev in (AppointmentBooked(**common), AppointmentBooked(**common)):  # a redelivery changes nothing
        await api.announce(ev)
    window = {"from": at(0), "to": at(24)}
    free = (await client.get(f"/practitioners/{pid}/availability", params=window, headers=admin)).json()["items"]
    assert free == [{"start": at(8), "end": at(9)}, {"start": at(9 + 1 / 3), "end": at(12)}]
    moved = {**common, "start": day + timedelta(hours=10), "end": day + timedelta(hours=10, minutes=20)}
    await api.announce(AppointmentRescheduled(**moved, previous_start=common["start"], previous_end=common["end"]))
    free = (await client.get(f"/practitioners/{pid}/availability", params=window, headers=admin)).json()["items"]
    assert free == [{"start": at(8), "end": at(10)}, {"start": at(10 + 1 / 3), "end": at(12)}]
    await api.announce(AppointmentCancelled(**moved))
    free = (await client.get(f"/practitioners/{pid}/availability", params=window, headers=admin)).json()["items"]
    assert free == [{"start": at(8), "end": at(12)}]
    assert api.fake.state.booked == {}
    with pytest.raises(PermanentError):
        await api.announce(LeaveCancelled(leave_id=uuid.uuid4(), practitioner_id=uuid.UUID(pid)))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("9999-12-01T00:00:00+00:00", "9999-12-31T00:00:00+00:00"),  # the month after it does not exist
        ("9999-12-31T00:00:00-05:00", "9999-12-31T10:00:00-05:00"),  # its UTC form is in year 10000
        ("0001-01-01T00:00:00+05:00", "0001-01-02T00:00:00+05:00"),  # its UTC form is before year 1
        ("3000-01-01T00:00:00+00:00", "3000-01-02T00:00:00+00:00"),
    ],
)
async def test_windows_at_the_ends_of_the_calendar_are_a_422_naming_the_range(api: Staff, start: str, end: str) -> None:
    pid = await api.practitioner()
    for what in ("shifts", "availability"):
        r = await api.client.get(
            f"/practitioners/{pid}/{what}", params={"from": start, "to": end}, headers=bearer(ADMIN, "ADMIN")
        )
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
        assert "dates from 1800-01-01 to 2999-12-31" in r.text, r.text


async def test_an_unknown_specialty_filter_is_a_422_naming_the_specialties(api: Staff) -> None:
    client = api.client
    await api.practitioner()
    r = await client.get("/practitioners", params={"specialty": "astrology"}, headers=bearer(ADMIN, "ADMIN"))
    assert r.status_code == 422 and "cardiology" in r.json()["detail"] and "cardiology" in r.json()["valid"]
    r = await client.get("/practitioners", params={"specialty": "cardiology"}, headers=bearer(ADMIN, "ADMIN"))
    assert r.status_code == 200 and r.json()["items"]


async def test_the_directory_is_open_to_any_signed_in_user(api: Staff) -> None:
    cardiologist = await api.practitioner()
    neurologist = await api.practitioner(specialty="neurology")
    patient = bearer(uuid.uuid4(), "PATIENT")
    everyone = (await api.client.get("/practitioners", headers=patient)).json()["items"]
    assert sorted(p["id"] for p in everyone) == sorted([cardiologist, neurologist])
    r = await api.client.get("/practitioners", params={"specialty": "neurology"}, headers=patient)
    assert [p["id"] for p in r.json()["items"]] == [neurologist]
    r = await api.client.get("/practitioners", params={"limit": 1}, headers=patient)
    assert len(r.json()["items"]) == 1
    specialties = (await api.client.get("/practitioners/specialties", headers=patient)).json()["items"]
    assert {"code": "cardiology", "name": "Cardiology"} in specialties
    assert (await api.client.get("/practitioners")).status_code == 401


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_a_days_shifts_leave_and_availability_on_every_hard_date(api: Staff) -> None:
    """A night shift into the day, a day shift and leave on it, planned the day before: the day's
    availability (its local midnight to the next) is the shifts minus the leave."""
    client, at, hard = api.client, api.at, api.hard
    me = uuid.uuid4()
    pid = await api.practitioner(me)
    admin, doctor = bearer(ADMIN, "ADMIN"), bearer(me, "DOCTOR")
    for start, end in ((-2, 6), (14, 22)):  # 22:00 the evening before to 06:00 elapsed, then an evening shift
        r = await client.post(f"/practitioners/{pid}/shifts", json={"start": at(start), "end": at(end)}, headers=admin)
        assert r.status_code == 201, r.text
    leave = await client.post(
        f"/practitioners/{pid}/leave-requests", json={"start": at(3), "end": at(16)}, headers=doctor
    )
    assert (
        await client.post(f"/practitioners/{pid}/leave-requests/{leave.json()['id']}/approve", headers=admin)
    ).status_code == 200
    day = {"from": hard.midnight().isoformat(), "to": hard.midnight(days=1).isoformat()}
    free = (await client.get(f"/practitioners/{pid}/availability", params=day, headers=admin)).json()["items"]
    assert free == [{"start": at(0), "end": at(3)}, {"start": at(16), "end": at(22)}]
