"""Practitioners on the real database: overlapping shifts added at once (the exclusion constraint
lets one through), and the gRPC calendar scheduling books against and the directory it lists
practitioners from.

The use cases themselves (who may do what, validation, leave's state machine, availability on
every hard date) are tested over the in-memory ports in
``tests/unit/test_practitioners_use_cases.py``; the store and those ports share one contract,
``tests/integration/test_practitioners_contract.py``. Shifts are planned on a hard date
(``tests.support.calendar``) the day before, by the service's clock."""

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
from tests.support.calendar import HARD_DATES

ADMIN = uuid.uuid4()
HARD = HARD_DATES[0]
DAY = HARD.midnight()


def at(hours: float) -> str:
    """``hours`` after the local midnight of the hard date."""
    return (DAY + timedelta(hours=hours)).isoformat()


@pytest.fixture
async def api(admin_dsn: str) -> AsyncIterator[tuple[httpx.AsyncClient, Database]]:
    dsn = await migrations.provision(admin_dsn, "practitioners", "pw-practitioners-test")
    await migrations.upgrade(admin_dsn, "practitioners")
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(
        "TRUNCATE practitioners.shift, practitioners.leave_request, practitioners.booked_time, "
        "practitioners.practitioner CASCADE"
    )
    await conn.close()
    db = Database(dsn, schema="practitioners", max_size=24, clock=HARD.clock(12, 0, days=-1))
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


async def test_the_directory_lists_practitioners_by_name_to_scheduling_only(
    api: tuple[httpx.AsyncClient, Database], tmp_path: Path
) -> None:
    """Over gRPC, through the client scheduling uses: every practitioner (or one specialty's) by
    name, ties by id, with every specialty code; an unknown specialty lists no one. Admissions,
    which looks one practitioner up, may not list them all."""
    from his.clients.practitioners import GrpcPractitioners, Listed
    from his.kernel.resilience import DependencyRefusedError
    from his.practitioners.domain import SPECIALTIES

    client, db = api
    admin = bearer(ADMIN, "ADMIN")
    made = {}
    for name, specialty in (
        ("Dr. Zehra Ün", "cardiology"),
        ("Dr. Ahmet Baş", "neurology"),
        ("Dr. Ahmet Baş", "cardiology"),
    ):
        r = await client.post("/practitioners", json={"full_name": name, "specialty": specialty}, headers=admin)
        made[uuid.UUID(r.json()["id"])] = (name, specialty)
    ca = LocalCA(tmp_path / "pki").ensure()
    server = rpc.RpcServer(
        ca.issue("practitioners", spiffe_id("practitioners")),
        practitioners_grpc.services(SimpleNamespace(db=db)),  # type: ignore[arg-type]
    )
    port = await server.start()
    try:
        scheduling = GrpcPractitioners(f"127.0.0.1:{port}", ca.issue("scheduling", spiffe_id("scheduling")))
        everyone = await scheduling.roster()
        expected = sorted(
            (Listed(pid, n, s) for pid, (n, s) in made.items()), key=lambda p: (p.full_name, p.practitioner_id)
        )
        assert list(everyone.practitioners) == expected
        assert everyone.specialties == tuple(SPECIALTIES)
        cardiology = await scheduling.roster("cardiology")
        assert [p.full_name for p in cardiology.practitioners] == ["Dr. Ahmet Baş", "Dr. Zehra Ün"]
        nobody = await scheduling.roster("astrology")
        assert nobody.practitioners == () and "astrology" not in nobody.specialties
        admissions = GrpcPractitioners(f"127.0.0.1:{port}", ca.issue("admissions", spiffe_id("admissions")))
        with pytest.raises(DependencyRefusedError, match="PERMISSION_DENIED"):
            await admissions.roster()
    finally:
        await server.stop(0)
