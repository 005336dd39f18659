"""Every statement a service runs has a deadline (``HIS_DB_TIMEOUT``): a request stuck behind a
lock held elsewhere (a long migration, an administrator's open transaction) is answered 503 at the
deadline, never left hanging, and it changes nothing; once the lock is gone the same pool serves
the next requests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from his.clients.patients import CareBasis, FakePatients, PatientRef
from his.kernel import migrations
from his.kernel.db import Database
from his.laboratory.app import http as lab_http
from tests.support.api import bearer, serve
from tests.support.sealing import SEAL

DEADLINE = 1.0


@dataclass
class Lab:
    client: httpx.AsyncClient
    db: Database
    admin: asyncpg.Connection
    patients: FakePatients


@pytest.fixture
async def lab(admin_dsn: str) -> AsyncIterator[Lab]:
    dsn = await migrations.provision(admin_dsn, "laboratory", "pw-laboratory-deadline-test")
    await migrations.upgrade(admin_dsn, "laboratory")
    db = Database(dsn, schema="laboratory", max_size=4, timeout=DEADLINE)
    await db.open()
    admin = await asyncpg.connect(admin_dsn)
    patients = FakePatients()
    try:
        async with serve(lab_http(db, patients, SEAL)) as client:
            yield Lab(client, db, admin, patients)
    finally:
        await admin.close()
        await db.close()


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


async def test_a_request_stuck_behind_a_lock_is_a_503_at_the_deadline_and_changes_nothing(lab: Lab) -> None:
    me = uuid.uuid4()
    doctor = bearer(me, "DOCTOR")
    patient = uuid.uuid4()
    lab.patients.patients[patient] = PatientRef(patient, None)
    lab.patients.care[(patient, me)] = CareBasis(in_care=True, emergency=False)  # orders only in care
    orders_before = await lab.admin.fetchval("SELECT count(*) FROM laboratory.lab_order")
    events_before = await lab.admin.fetchval("SELECT count(*) FROM laboratory.outbox")

    holder = lab.admin.transaction()
    await holder.start()
    await lab.admin.execute("LOCK TABLE laboratory.lab_test, laboratory.lab_order IN ACCESS EXCLUSIVE MODE")
    try:
        reads = [lab.client.get("/lab/catalog", headers=doctor) for _ in range(3)]
        write = lab.client.post("/lab/orders", json={"patient_id": str(patient), "tests": ["K"]}, headers=doctor)
        answers = await asyncio.wait_for(asyncio.gather(*(timed(c) for c in [*reads, write])), timeout=10 * DEADLINE)
    finally:
        await holder.rollback()

    for response, took in answers:
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"]
        assert DEADLINE * 0.9 <= took < DEADLINE * 5, f"answered after {took:.2f}s"
    assert await lab.admin.fetchval("SELECT count(*) FROM laboratory.lab_order") == orders_before
    assert await lab.admin.fetchval("SELECT count(*) FROM laboratory.outbox") == events_before

    # The lock is gone: the pool whose every connection timed out serves the next requests.
    again = await asyncio.gather(*(lab.client.get("/lab/catalog", headers=doctor) for _ in range(8)))
    assert [r.status_code for r in again] == [200] * 8
    r = await lab.client.post("/lab/orders", json={"patient_id": str(patient), "tests": ["K"]}, headers=doctor)
    assert r.status_code == 201, r.text
