"""What the hospital can bill, checked where data enters: patients refuses a coverage whose payer
billing has no plan for, admissions a ward whose rate is in a currency billing does not invoice
in, each with a 422 naming the valid values. Both learn them from billing's gRPC contract
(``his.billing.v1.BillingTerms``) on a real server: mutual TLS with certificates from a local CA,
the per-method allowlist, billing's real schema; a short cache in the caller.

Staff correct what was entered before the checks existed: a patient's coverage (PATCH, which
announces the change to billing) and a ward's name, type, rate and currency (PATCH, which
announces the ward's tariff).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from his.admissions.app import http as admissions_http
from his.admissions.handlers import Directories
from his.billing.api import grpc as billing_grpc
from his.clients.billing import GrpcBillingTerms
from his.clients.patients import FakePatients
from his.clients.practitioners import FakePractitioners
from his.kernel import migrations, rpc
from his.kernel.db import Database
from his.kernel.pki import LocalCA, spiffe_id
from his.kernel.resilience import DependencyUnavailableError
from his.patients.app import http as patients_http
from tests.support.api import bearer, serve

PAYERS = ["ALLIANZ", "NOVA", "SELF", "SGK"]
CLERK = bearer(uuid.uuid4(), "RECEPTIONIST")
ADMIN = bearer(uuid.uuid4(), "ADMIN")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    patients: httpx.AsyncClient
    admissions: httpx.AsyncClient
    patients_db: Database
    admissions_db: Database
    server: rpc.RpcServer
    target: str
    ca: LocalCA
    clock: Clock
    admin_dsn: str

    async def outbox(self, db: Database, subject: str) -> list[dict[str, Any]]:
        rows = await db.pool.fetch("SELECT payload FROM outbox WHERE subject = $1 ORDER BY id", subject)
        return [orjson.loads(r["payload"])["data"] for r in rows]


async def open_schema(admin_dsn: str, service: str, truncate: str) -> Database:
    dsn = await migrations.provision(admin_dsn, service, f"pw-{service}-terms")
    await migrations.upgrade(admin_dsn, service)
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(truncate)
    await conn.close()
    db = Database(dsn, schema=service, max_size=4)
    await db.open()
    return db


@pytest.fixture
async def world(admin_dsn: str, tmp_path: Path) -> AsyncIterator[World]:
    billing = await open_schema(admin_dsn, "billing", "DELETE FROM billing.payer_plan WHERE code = 'ACME'")
    # The outboxes too: the tests read the events they caused there, and no other file's.
    patients = await open_schema(admin_dsn, "patients", "TRUNCATE patients.patient, patients.outbox CASCADE")
    admissions = await open_schema(admin_dsn, "admissions", "TRUNCATE admissions.ward, admissions.outbox CASCADE")
    ca = LocalCA(tmp_path / "pki").ensure()
    services = billing_grpc.services(SimpleNamespace(db=billing))  # type: ignore[arg-type]
    server = rpc.RpcServer(ca.issue("billing", spiffe_id("billing")), services)
    target = f"127.0.0.1:{await server.start()}"
    clock = Clock()
    payers = GrpcBillingTerms(target, ca.issue("patients", spiffe_id("patients")), ttl=30.0, clock=clock)
    currencies = GrpcBillingTerms(target, ca.issue("admissions", spiffe_id("admissions")), clock=clock)
    known = Directories(FakePatients(), FakePractitioners(), currencies)
    try:
        async with (
            serve(patients_http(patients, payers=payers)) as p,
            serve(admissions_http(admissions, known)) as a,
        ):
            yield World(p, a, patients, admissions, server, target, ca, clock, admin_dsn)
    finally:
        await server.stop(0)
        for db in (billing, patients, admissions):
            await db.close()
        conn = await asyncpg.connect(admin_dsn)
        await conn.execute("DELETE FROM billing.plan_coverage WHERE plan_code = 'ACME'")
        await conn.execute("DELETE FROM billing.payer_plan WHERE code = 'ACME'")
        await conn.close()


def patient(**extra: Any) -> dict[str, Any]:
    return {
        "given_name": "Deniz",
        "family_name": f"Terms{uuid.uuid4().hex[:6]}",
        "birth_date": "1970-03-04",
        "sex": "female",
        "confirm_duplicate": True,
        **extra,
    }


async def test_a_payer_billing_has_no_plan_for_is_refused_with_the_valid_ones(world: World) -> None:
    r = await world.patients.post(
        "/patients", json=patient(coverage={"payer": "ACME", "member_id": "A1"}), headers=CLERK
    )
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert (r.json()["field"], r.json()["valid_values"]) == ("payer", PAYERS)
    assert "ALLIANZ, NOVA, SELF, SGK" in r.json()["detail"]
    assert await world.patients_db.pool.fetchval("SELECT count(*) FROM patient") == 0
    ok = await world.patients.post(
        "/patients", json=patient(coverage={"payer": "sgk", "member_id": "S1"}), headers=CLERK
    )
    assert ok.status_code == 201, ok.text
    pid = ok.json()["id"]
    changes = await world.outbox(world.patients_db, "his.patients.coverage.changed.v1")
    assert [(c["patient_id"], c["payer"]) for c in changes] == [(pid, "SGK")]  # as billing spells it

    # Staff correct the coverage; billing learns it from the event. A bad payer is refused here too.
    bad = await world.patients.patch(
        f"/patients/{pid}", json={"coverage": {"payer": "ACME", "member_id": "A1"}}, headers=CLERK
    )
    assert bad.status_code == 422 and bad.json()["valid_values"] == PAYERS
    fixed = await world.patients.patch(
        f"/patients/{pid}", json={"coverage": {"payer": "NOVA", "member_id": "N1"}}, headers=CLERK
    )
    assert fixed.status_code == 200 and fixed.json()["coverage"]["payer"] == "NOVA", fixed.text
    changes = await world.outbox(world.patients_db, "his.patients.coverage.changed.v1")
    assert [c["payer"] for c in changes] == ["SGK", "NOVA"]

    # A plan billing adds is accepted once the callers' short cache has expired.
    conn = await asyncpg.connect(world.admin_dsn)
    await conn.execute("INSERT INTO billing.payer_plan (code, title) VALUES ('ACME', 'Acme Health')")
    await conn.close()
    acme = patient(coverage={"payer": "ACME", "member_id": "A2"})
    assert (await world.patients.post("/patients", json=acme, headers=CLERK)).status_code == 422  # cached
    world.clock.now += 31
    assert (await world.patients.post("/patients", json=acme, headers=CLERK)).status_code == 201


async def test_without_billing_a_coverage_cannot_be_checked_and_is_not_accepted(world: World) -> None:
    await world.server.stop(0)
    r = await world.patients.post(
        "/patients", json=patient(coverage={"payer": "SGK", "member_id": "S1"}), headers=CLERK
    )
    assert r.status_code == 503, r.text
    assert (await world.patients.post("/patients", json=patient(), headers=CLERK)).status_code == 201  # self-pay


async def test_only_patients_and_admissions_may_ask_billing_for_its_terms(world: World) -> None:
    for caller in ("patients", "admissions"):
        terms = await GrpcBillingTerms(world.target, world.ca.issue(caller, spiffe_id(caller))).terms()
        assert (list(terms.payers), list(terms.currencies)) == (PAYERS, ["TRY"])
    outsider = GrpcBillingTerms(world.target, world.ca.issue("scheduling", spiffe_id("scheduling")))
    with pytest.raises(DependencyUnavailableError, match="PERMISSION_DENIED"):
        await outsider.terms()


def ward(**extra: Any) -> dict[str, Any]:
    return {"name": "General", "type": "general", "daily_rate": "1500.00", "currency": "TRY", "beds": 2, **extra}


async def test_a_ward_in_a_currency_billing_does_not_invoice_in_is_refused_and_wards_can_be_corrected(
    world: World,
) -> None:
    r = await world.admissions.post("/wards", json=ward(currency="XYZ"), headers=ADMIN)
    assert r.status_code == 422, r.text
    assert (r.json()["field"], r.json()["valid_values"]) == ("currency", ["TRY"])
    assert await world.admissions_db.pool.fetchval("SELECT count(*) FROM ward") == 0
    made = await world.admissions.post("/wards", json=ward(), headers=ADMIN)
    assert made.status_code == 201, made.text
    wid = made.json()["id"]

    bad = await world.admissions.patch(f"/wards/{wid}", json={"currency": "EUR"}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["valid_values"] == ["TRY"]
    for body in ({"beds": 4}, {"daily_rate": "-1"}, {"daily_rate": "1.001"}, {"type": "Intensive Care"}):
        r = await world.admissions.patch(f"/wards/{wid}", json=body, headers=ADMIN)
        assert r.status_code == 422, (body, r.text)
    nurse = bearer(uuid.uuid4(), "NURSE")
    assert (await world.admissions.patch(f"/wards/{wid}", json={"name": "x"}, headers=nurse)).status_code == 403
    unknown = await world.admissions.patch(f"/wards/{uuid.uuid4()}", json={"name": "x"}, headers=ADMIN)
    assert unknown.status_code == 404

    fixed = await world.admissions.patch(
        f"/wards/{wid}",
        json={"name": "General Medicine", "daily_rate": "1750.50", "type": "general_med"},
        headers=ADMIN,
    )
    assert fixed.status_code == 200, fixed.text
    got = fixed.json()
    assert (got["name"], got["type"], got["daily_rate"], got["currency"], got["beds"]["total"]) == (
        "General Medicine",
        "general_med",
        "1750.50",
        "TRY",
        2,
    )
    same = await world.admissions.patch(f"/wards/{wid}", json={"daily_rate": "1750.5"}, headers=ADMIN)
    assert same.status_code == 200  # nothing changed: nothing announced
    updates = await world.outbox(world.admissions_db, "his.admissions.ward.updated.v1")
    assert updates == [
        {
            "ward_id": wid,
            "fields": ["daily_rate", "name", "type"],
            "ward_type": "general_med",
            "daily_rate": "1750.50",
            "currency": "TRY",
        }
    ]
