"""Practitioners on the real database: shifts never overlap (the database forbids it), leave
follows its state machine, and availability is shifts minus approved leave.

Shifts are planned on a hard date (``tests.support.calendar``) the day before, by the service's
clock; a day's shifts, leave and availability are checked on every hard date."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import grpc
import httpx
import pytest

from his.kernel import migrations, rpc
from his.kernel.db import Database
from his.kernel.pki import LocalCA, spiffe_id
from his.practitioners.api import grpc as practitioners_grpc
from his.practitioners.app import http as practitioners_http
from his.proto.practitioners.v1 import practitioners_pb2 as calendar_pb
from his.proto.practitioners.v1 import practitioners_pb2_grpc as calendar_grpc
from tests.support.api import bearer, serve
from tests.support.calendar import HARD_DATES, HardDate

ADMIN = uuid.uuid4()
DAY = HARD_DATES[0].midnight()


def at(hours: float, day: HardDate = HARD_DATES[0]) -> str:
    """``hours`` after the local midnight of ``day``."""
    return (day.midnight() + timedelta(hours=hours)).isoformat()


@pytest.fixture
def hard() -> HardDate:
    return HARD_DATES[0]


@pytest.fixture
async def api(admin_dsn: str, hard: HardDate) -> AsyncIterator[tuple[httpx.AsyncClient, Database]]:
    dsn = await migrations.provision(admin_dsn, "practitioners", "pw-practitioners-test")
    await migrations.upgrade(admin_dsn, "practitioners")
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(
        "TRUNCATE practitioners.shift, practitioners.leave_request, practitioners.booked_time, "
        "practitioners.practitioner CASCADE"
    )
    await conn.close()
    db = Database(dsn, schema="practitioners", max_size=24, clock=hard.clock(12, 0, days=-1))
    await db.open()

    service = practitioners_http(db)
    async with serve(service, base_url="http://practitioners") as client:
        yield client, db
    await db.close()


async def new_practitioner(client: httpx.AsyncClient, user: uuid.UUID | None = None) -> str:
    body: dict[str, Any] = {"full_name": "Dr. Elif Şahin", "specialty": "cardiology"}
    if user:
        body["user_id"] = str(user)
    r = await client.post("/practitioners", json=body, headers=bearer(ADMIN, "ADMIN"))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_profile_needs_admin_and_a_known_specialty(api: tuple[httpx.AsyncClient, Database]) -> None:
    client, db = api
    body = {"full_name": "Dr. A", "specialty": "cardiology"}
    assert (await client.post("/practitioners", json=body, headers=bearer(uuid.uuid4(), "DOCTOR"))).status_code == 403
    r = await client.post("/practitioners", json={**body, "specialty": "astrology"}, headers=bearer(ADMIN, "ADMIN"))
    assert r.status_code == 422 and "specialty" in r.json()["detail"]
    r = await client.post("/practitioners", json={**body, "id": str(uuid.uuid4())}, headers=bearer(ADMIN, "ADMIN"))
    assert r.status_code == 422  # ids are the server's to choose
    pid = await new_practitioner(client)
    r = await client.get(f"/practitioners/{pid}", headers=bearer(uuid.uuid4(), "PATIENT"))
    assert r.status_code == 200 and r.json()["specialty"] == "cardiology"
    event = await db.pool.fetchval("SELECT subject FROM outbox ORDER BY id DESC LIMIT 1")
    assert event == "his.practitioners.practitioner.registered.v1"


async def test_overlapping_shifts_are_refused_naming_the_collision(api: tuple[httpx.AsyncClient, Database]) -> None:
    client, _ = api
    pid = await new_practitioner(client)
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
    assert clash.json()["conflict"]["id"] == first.json()["id"]
    # Another practitioner may work the same hours.
    other = await new_practitioner(client)
    r = await client.post(f"/practitioners/{other}/shifts", json={"start": at(12), "end": at(14)}, headers=admin)
    assert r.status_code == 201


async def test_twenty_concurrent_overlapping_shifts_one_wins(api: tuple[httpx.AsyncClient, Database]) -> None:
    client, db = api
    pid = await new_practitioner(client)
    admin = bearer(ADMIN, "ADMIN")
    results = await asyncio.gather(
        *(
            client.post(f"/practitioners/{pid}/shifts", json={"start": at(8 + i * 0.1), "end": at(12)}, headers=admin)
            for i in range(20)
        )
    )
    codes = sorted(r.status_code for r in results)
    assert codes == [201] + [409] * 19, codes
    assert await db.pool.fetchval("SELECT count(*) FROM shift WHERE practitioner_id = $1", uuid.UUID(pid)) == 1


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
async def test_bad_shift_input_is_a_4xx_problem(api: tuple[httpx.AsyncClient, Database], body: dict[str, str]) -> None:
    client, _ = api
    pid = await new_practitioner(client)
    r = await client.post(f"/practitioners/{pid}/shifts", json=body, headers=bearer(ADMIN, "ADMIN"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    unknown = await client.post(
        f"/practitioners/{uuid.uuid4()}/shifts", json={"start": at(8), "end": at(9)}, headers=bearer(ADMIN, "ADMIN")
    )
    assert unknown.status_code == 404


async def test_a_practitioner_manages_only_their_own_shifts_and_leave(api: tuple[httpx.AsyncClient, Database]) -> None:
    client, _ = api
    me, colleague = uuid.uuid4(), uuid.uuid4()
    mine, theirs = await new_practitioner(client, me), await new_practitioner(client, colleague)
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


async def test_approved_leave_removes_availability_and_cancelling_restores_it(
    api: tuple[httpx.AsyncClient, Database],
) -> None:
    client, db = api
    me = uuid.uuid4()
    pid = await new_practitioner(client, me)
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
    subjects = [r["subject"] for r in await db.pool.fetch("SELECT subject FROM outbox ORDER BY id")]
    assert subjects[-2:] == ["his.practitioners.leave.approved.v1", "his.practitioners.leave.cancelled.v1"]
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


async def test_booked_time_announced_by_scheduling_leaves_availability(api: tuple[httpx.AsyncClient, Database]) -> None:
    from his.events.scheduling import AppointmentBooked, AppointmentCancelled
    from his.kernel.events import Envelope
    from his.practitioners import handlers

    client, db = api
    pid = await new_practitioner(client)
    admin = bearer(ADMIN, "ADMIN")
    await client.post(f"/practitioners/{pid}/shifts", json={"start": at(8), "end": at(12)}, headers=admin)
    appt = uuid.uuid4()
    common = {
        "appointment_id": appt,
        "patient_id": uuid.uuid4(),
        "practitioner_id": uuid.UUID(pid),
        "service": "consultation",
        "start": DAY + timedelta(hours=9),
        "end": DAY + timedelta(hours=9, minutes=20),
    }
    for ev in (AppointmentBooked(**common), AppointmentBooked(**common)):  # a redelivery changes nothing
        async with db.uow() as uow:
            await handlers.on_appointment_changed(uow, Envelope.wrap(ev, aggregate_id=appt), ev)
    window = {"from": at(0), "to": at(24)}
    free = (await client.get(f"/practitioners/{pid}/availability", params=window, headers=admin)).json()["items"]
    assert free == [{"start": at(8), "end": at(9)}, {"start": at(9 + 1 / 3), "end": at(12)}]
    gone = AppointmentCancelled(**common)
    async with db.uow() as uow:
        await handlers.on_appointment_changed(uow, Envelope.wrap(gone, aggregate_id=appt), gone)
    free = (await client.get(f"/practitioners/{pid}/availability", params=window, headers=admin)).json()["items"]
    assert free == [{"start": at(8), "end": at(12)}]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("9999-12-01T00:00:00+00:00", "9999-12-31T00:00:00+00:00"),  # the month after it does not exist
        ("9999-12-31T00:00:00-05:00", "9999-12-31T10:00:00-05:00"),  # its UTC form is in year 10000
        ("0001-01-01T00:00:00+05:00", "0001-01-02T00:00:00+05:00"),  # its UTC form is before year 1
        ("3000-01-01T00:00:00+00:00", "3000-01-02T00:00:00+00:00"),
    ],
)
async def test_windows_at_the_ends_of_the_calendar_are_a_422_naming_the_range(
    api: tuple[httpx.AsyncClient, Database], start: str, end: str
) -> None:
    client, _ = api
    pid = await new_practitioner(client)
    for what in ("shifts", "availability"):
        r = await client.get(
            f"/practitioners/{pid}/{what}", params={"from": start, "to": end}, headers=bearer(ADMIN, "ADMIN")
        )
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
        assert "dates from 1800-01-01 to 2999-12-31" in r.text, r.text


async def test_an_unknown_specialty_filter_is_a_422_naming_the_specialties(
    api: tuple[httpx.AsyncClient, Database],
) -> None:
    client, _ = api
    await new_practitioner(client)
    r = await client.get("/practitioners", params={"specialty": "astrology"}, headers=bearer(ADMIN, "ADMIN"))
    assert r.status_code == 422 and "cardiology" in r.json()["detail"] and "cardiology" in r.json()["valid"]
    r = await client.get("/practitioners", params={"specialty": "cardiology"}, headers=bearer(ADMIN, "ADMIN"))
    assert r.status_code == 200 and r.json()["items"]


@asynccontextmanager
async def calendar_of(db: Database, tmp_path: Path) -> AsyncIterator[calendar_grpc.CalendarAsyncStub]:
    """The practitioners' gRPC calendar over ``db``, as scheduling calls it (mutual TLS)."""
    ca = LocalCA(tmp_path / "pki").ensure()
    server = rpc.RpcServer(
        ca.issue("practitioners", spiffe_id("practitioners")),
        practitioners_grpc.services(SimpleNamespace(db=db)),  # type: ignore[arg-type]
    )
    port = await server.start()
    channel = rpc.channel(f"127.0.0.1:{port}", ca.issue("scheduling", spiffe_id("scheduling")))
    try:
        yield calendar_grpc.CalendarStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


def ask(pid: str | uuid.UUID, start: datetime, end: datetime) -> calendar_pb.GetWorkingTimeRequest:
    request = calendar_pb.GetWorkingTimeRequest(practitioner_id=str(pid))
    request.start.FromDatetime(start)
    request.end.FromDatetime(end)
    return request


def spans(answer: calendar_pb.WorkingTime) -> list[tuple[datetime, datetime]]:
    return [(i.start.ToDatetime(tzinfo=UTC), i.end.ToDatetime(tzinfo=UTC)) for i in answer.intervals]


async def test_the_calendar_answers_a_window_at_the_end_of_year_9999(admin_dsn: str, tmp_path: Path) -> None:
    """Scheduling asks for a day's working time; the last days of the calendar were a 500 (a month
    added to the window's start passed year 9999). A valid window there is answered."""
    dsn = await migrations.provision(admin_dsn, "practitioners", "pw-practitioners-test")
    db = Database(dsn, schema="practitioners", max_size=2)
    await db.open()
    try:
        async with calendar_of(db, tmp_path) as stub:
            request = ask(uuid.uuid4(), datetime(9999, 12, 30, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC))
            with pytest.raises(grpc.aio.AioRpcError) as answered:
                await stub.GetWorkingTime(request, timeout=5)
            assert answered.value.code() == grpc.StatusCode.NOT_FOUND  # an unknown practitioner, not an internal error
    finally:
        await db.close()


async def test_the_calendar_tells_scheduling_working_time_and_what_is_still_free(
    api: tuple[httpx.AsyncClient, Database], tmp_path: Path
) -> None:
    """Over gRPC, from the database: working time is shifts minus approved leave; availability
    also leaves out the time scheduling's events booked, which the consumer's handler holds once
    however often an event is delivered and gives back when the appointment is cancelled."""
    from his.events.scheduling import AppointmentBooked, AppointmentCancelled
    from his.kernel.events import Envelope
    from his.practitioners import handlers

    client, db = api
    pid = await new_practitioner(client)
    admin = bearer(ADMIN, "ADMIN")
    for start, end in ((8, 16), (20, 22)):
        r = await client.post(f"/practitioners/{pid}/shifts", json={"start": at(start), "end": at(end)}, headers=admin)
        assert r.status_code == 201, r.text
    leave = await client.post(
        f"/practitioners/{pid}/leave-requests", json={"start": at(12), "end": at(21)}, headers=admin
    )
    await client.post(f"/practitioners/{pid}/leave-requests/{leave.json()['id']}/approve", headers=admin)
    appt = uuid.uuid4()
    common = {
        "appointment_id": appt,
        "patient_id": uuid.uuid4(),
        "practitioner_id": uuid.UUID(pid),
        "service": "consultation",
        "start": DAY + timedelta(hours=9),
        "end": DAY + timedelta(hours=9, minutes=20),
    }
    for ev in (AppointmentBooked(**common), AppointmentBooked(**common)):  # a redelivery changes nothing
        async with db.uow() as uow:
            await handlers.on_appointment_changed(uow, Envelope.wrap(ev, aggregate_id=appt), ev)
    assert await db.pool.fetchval("SELECT count(*) FROM booked_time WHERE appointment_id = $1", appt) == 1
    h = timedelta(hours=1)
    day = ask(pid, DAY, DAY + 24 * h)
    async with calendar_of(db, tmp_path) as stub:
        working = [(DAY + 8 * h, DAY + 12 * h), (DAY + 21 * h, DAY + 22 * h)]
        assert spans(await stub.GetWorkingTime(day, timeout=5)) == working
        free = [(DAY + 8 * h, DAY + 9 * h), (DAY + 9 * h + 20 * h / 60, DAY + 12 * h), working[1]]
        assert spans(await stub.GetAvailability(day, timeout=5)) == free
        # Clipped to the window asked about.
        assert spans(await stub.GetWorkingTime(ask(pid, DAY + 10 * h, DAY + 21.5 * h), timeout=5)) == [
            (DAY + 10 * h, DAY + 12 * h),
            (DAY + 21 * h, DAY + 21.5 * h),
        ]
        gone = AppointmentCancelled(**common)
        async with db.uow() as uow:
            await handlers.on_appointment_changed(uow, Envelope.wrap(gone, aggregate_id=appt), gone)
        assert spans(await stub.GetAvailability(day, timeout=5)) == working
        for bad in (ask("not-a-uuid", DAY, DAY + h), ask(pid, DAY, DAY + 32 * 24 * h), ask(pid, DAY + h, DAY)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetAvailability(bad, timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.GetWorkingTime(ask(uuid.uuid4(), DAY, DAY + h), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_a_days_shifts_leave_and_availability_on_every_hard_date(
    api: tuple[httpx.AsyncClient, Database], hard: HardDate
) -> None:
    """A night shift into the day, a day shift and leave on it, planned the day before: the day's
    availability (its local midnight to the next) is the shifts minus the leave."""
    client, _ = api
    me = uuid.uuid4()
    pid = await new_practitioner(client, me)
    admin, doctor = bearer(ADMIN, "ADMIN"), bearer(me, "DOCTOR")
    for start, end in ((-2, 6), (14, 22)):  # 22:00 the evening before to 06:00 elapsed, then an evening shift
        r = await client.post(
            f"/practitioners/{pid}/shifts", json={"start": at(start, hard), "end": at(end, hard)}, headers=admin
        )
        assert r.status_code == 201, r.text
    leave = await client.post(
        f"/practitioners/{pid}/leave-requests", json={"start": at(3, hard), "end": at(16, hard)}, headers=doctor
    )
    assert (
        await client.post(f"/practitioners/{pid}/leave-requests/{leave.json()['id']}/approve", headers=admin)
    ).status_code == 200
    day = {"from": hard.midnight().isoformat(), "to": hard.midnight(days=1).isoformat()}
    free = (await client.get(f"/practitioners/{pid}/availability", params=day, headers=admin)).json()["items"]
    assert free == [{"start": at(0, hard), "end": at(3, hard)}, {"start": at(16, hard), "end": at(22, hard)}]
