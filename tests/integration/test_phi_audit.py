"""Every read or write of patient data leaves exactly one audit record; reads are fail-closed.

The patients API runs in-process on its real runtime role; its outbox relay publishes to a real
JetStream; the audit service's consumer appends to the real hash chain.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NATS

from his.audit import handlers as audit_handlers
from his.audit.domain import verify
from his.audit.store import PgChain
from his.events.audit import PatientsRecordAccessed, PatientsRecordsAccessed, batch_accesses
from his.identity.keys import SigningKey, sign_access_token
from his.kernel import migrations, problems, streams
from his.kernel.consumer import ConsumerLoop, Subscription
from his.kernel.db import Database
from his.kernel.outbox import OutboxRelay
from his.kernel.security import AUDIENCE, ISSUER, TokenVerifier
from his.kernel.web import mount
from his.patients.app import http as patients_http
from tests.support.portal import CODES, link_account
from tests.support.waiting import wait_for

KEY = SigningKey.generate(datetime.now(UTC))


def bearer(sub: uuid.UUID, *roles: str) -> dict[str, str]:
    token, _ = sign_access_token(
        KEY, subject=str(sub), roles=list(roles), issuer=ISSUER, audience=AUDIENCE, now=datetime.now(UTC)
    )
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
async def hospital(admin_dsn: str, nc: NATS) -> AsyncIterator[tuple[httpx.AsyncClient, Database, Database]]:
    dsns = {}
    for svc in ("patients", "audit"):
        dsns[svc] = await migrations.provision(admin_dsn, svc, f"pw-{svc}-phi")
        await migrations.upgrade(admin_dsn, svc)
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute("TRUNCATE audit.audit_log, audit.inbox, patients.outbox")
    await conn.execute("UPDATE patients.producer_seq SET last = 0")  # a new chain: numbered from 1 again
    await conn.close()
    js = nc.jetstream(timeout=5.0)
    await streams.declare(js, ["patients"])
    patients = Database(dsns["patients"], schema="patients", max_size=8, combine_reads=batch_accesses)
    audit = Database(dsns["audit"], schema="audit", max_size=4)
    await patients.open()
    await audit.open()

    async def jwks() -> dict[str, Any]:
        return {"keys": [KEY.public_jwk()]}

    app = FastAPI()
    problems.install(app)
    mount(
        app,
        patients_http(patients, invitation_codes=CODES),
        verifier=TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE),
    )
    relay = OutboxRelay(patients.dsn, js, schema="patients", signal=patients.signal, poll_seconds=0.2)
    consumers = [
        ConsumerLoop(
            audit,
            nc,
            js,
            Subscription.of(
                "audit_patients_record_accessed_test", PatientsRecordAccessed, audit_handlers.on_record_accessed
            ),
        ),
        ConsumerLoop(
            audit,
            nc,
            js,
            Subscription.of(
                "audit_patients_records_accessed_test", PatientsRecordsAccessed, audit_handlers.on_records_accessed
            ),
        ),
    ]
    tasks = [asyncio.create_task(relay.run()), *(asyncio.create_task(c.run()) for c in consumers)]
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://patients"
        ) as c:
            yield c, patients, audit
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await patients.close()
        await audit.close()


async def test_a_thousand_mixed_operations_leave_a_thousand_audit_records(
    hospital: tuple[httpx.AsyncClient, Database, Database],
) -> None:
    client, _, audit = hospital
    rng = random.Random(1234)
    clerk, doctor, stranger = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    owners: dict[str, uuid.UUID] = {}
    expected = 0
    for i in range(1000):
        kind = "create" if i < 50 or not owners else rng.choice(["read", "read", "denied", "uncared", "me", "search"])
        if kind == "create":
            owner = uuid.uuid4()
            r = await client.post(
                "/patients",
                headers=bearer(clerk, "RECEPTIONIST"),
                json={
                    "given_name": "Test",
                    "family_name": f"Audit{i:04d}",
                    "birth_date": "1970-01-01",
                    "sex": "unknown",
                    "email": f"audit{i}@example.org",
                    "confirm_duplicate": True,
                },
            )
            assert r.status_code == 201
            # The patient links their account: an invitation issued, then redeemed (two more records).
            await link_account(
                client, r.json()["id"], owner, clerk=bearer(clerk, "RECEPTIONIST"), patient=bearer(owner, "PATIENT")
            )
            owners[r.json()["id"]] = owner
            expected += 3
        elif kind == "read":
            r = await client.get(f"/patients/{rng.choice(list(owners))}", headers=bearer(clerk, "RECEPTIONIST"))
            assert r.status_code == 200
            expected += 1
        elif kind == "uncared":
            r = await client.get(f"/patients/{rng.choice(list(owners))}", headers=bearer(doctor, "DOCTOR"))
            assert r.status_code == 403  # no care relationship: denied, and audited
            expected += 1
        elif kind == "denied":
            r = await client.get(f"/patients/{rng.choice(list(owners))}", headers=bearer(stranger, "PATIENT"))
            assert r.status_code == 404  # denied, and the denial is audited too
            expected += 1
        elif kind == "me":
            pid, owner = rng.choice(list(owners.items()))
            r = await client.get("/patients/me", headers=bearer(owner, "PATIENT"))
            assert r.status_code == 200 and r.json()["id"] == pid
            expected += 1
        else:
            r = await client.get("/patients", params={"q": "MRN-00000001"}, headers=bearer(doctor, "NURSE"))
            assert r.status_code == 200
            expected += len(r.json()["items"])

    async def all_recorded() -> bool:
        return int(await audit.pool.fetchval("SELECT count(*) FROM audit_log")) >= expected

    await wait_for(all_recorded, timeout=60, what=f"{expected} audit records")
    assert await audit.pool.fetchval("SELECT count(*) FROM audit_log") == expected
    assert await audit.pool.fetchval("SELECT count(*) FROM audit_log WHERE outcome = 'denied'") > 0


async def test_a_read_whose_audit_record_cannot_be_written_returns_nothing(
    hospital: tuple[httpx.AsyncClient, Database, Database], admin_dsn: str
) -> None:
    client, _, _ = hospital
    clerk = uuid.uuid4()
    r = await client.post(
        "/patients",
        headers=bearer(clerk, "RECEPTIONIST"),
        json={"given_name": "Fail", "family_name": "Closed", "birth_date": "1970-01-01", "sex": "unknown"},
    )
    pid = r.json()["id"]
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("REVOKE INSERT ON patients.outbox FROM his_patients")
        denied = await client.get(f"/patients/{pid}", headers=bearer(clerk, "RECEPTIONIST"))
    finally:
        await conn.execute("GRANT INSERT ON patients.outbox TO his_patients")
        await conn.close()
    assert denied.status_code >= 500
    assert "Closed" not in denied.text
    ok = await client.get(f"/patients/{pid}", headers=bearer(clerk, "RECEPTIONIST"))
    assert ok.status_code == 200 and ok.json()["family_name"] == "Closed"


async def test_concurrent_reads_leave_one_record_each_in_batched_events(
    hospital: tuple[httpx.AsyncClient, Database, Database],
) -> None:
    """Reads committed together travel as batched events; each read is still one record, with
    its own id, in one unbroken chain."""
    client, patients, audit = hospital
    clerk, stranger = uuid.uuid4(), uuid.uuid4()
    r = await client.post(
        "/patients",
        headers=bearer(clerk, "RECEPTIONIST"),
        json={"given_name": "Busy", "family_name": "Chart", "birth_date": "1970-01-01", "sex": "unknown"},
    )
    pid = r.json()["id"]
    reads = [bearer(clerk, "RECEPTIONIST") if i % 3 else bearer(stranger, "PATIENT") for i in range(300)]
    answers = await asyncio.gather(*(client.get(f"/patients/{pid}", headers=h) for h in reads))
    assert sorted({a.status_code for a in answers}) == [200, 404]

    async def all_recorded() -> bool:
        query = "SELECT count(*) FROM audit_log WHERE patient_id = $1 AND action = 'read'"
        return int(await audit.pool.fetchval(query, uuid.UUID(pid))) >= 300

    await wait_for(all_recorded, timeout=60, what="300 read records")
    rows = await audit.pool.fetch(
        "SELECT event_id, outcome FROM audit_log WHERE patient_id = $1 AND action = 'read'", uuid.UUID(pid)
    )
    assert len(rows) == 300 and len({r["event_id"] for r in rows}) == 300
    assert sum(r["outcome"] == "denied" for r in rows) == 100
    batches = await patients.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE subject = 'his.patients.records.accessed.v1'"
    )
    assert batches >= 1  # committed together, published together
    async with audit.pool.acquire() as conn:
        verdict = verify([r async for r in PgChain(conn).rows()])
    assert verdict.ok, verdict
