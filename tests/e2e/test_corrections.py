"""A dead letter replays cleanly once staff have corrected the data it died on, under `his up`.

A patient's coverage names a payer the hospital has no plan for, entered before patients checked
payers against billing (written straight into both services' tables here, as an old version
would have left it). Their stay's invoice cannot be priced: billing dead-letters the event that
would issue it instead of billing the patient as self-pay, and no invoice is issued.
Reception corrects the coverage through the API; the operator replays the dead letter with
`his dlq replay`; the invoice is issued once, split under the corrected plan.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from typing import Any

import asyncpg
import httpx

from tests.e2e.harness import HIS, Hospital, his_env, register_patient
from tests.support.waiting import wait_until


def sql(h: Hospital, statement: str, *args: object) -> Any:
    async def run() -> Any:
        conn = await asyncpg.connect(str(h.state()["admin_dsn"]))
        try:
            return await conn.fetchval(statement, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def his(h: Hospital, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HIS, *args], env=his_env(h.data, h.port), capture_output=True, text=True, timeout=60, check=False
    )


def dead_letters_of(h: Hospital, patient_id: str) -> list[dict[str, Any]]:
    listed = his(h, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return [d for d in json.loads(listed.stdout) if patient_id in d["error"]]


def test_a_stay_billed_under_an_unknown_payer_is_issued_once_after_the_coverage_is_corrected(
    shared_hospital: Hospital,
) -> None:
    h, gw = shared_hospital, shared_hospital.gateway
    admin = h.login()
    patient = register_patient(h, admin, f"Legacy{uuid.uuid4().hex[:6]}")
    pid = str(patient["id"])
    # What an old version accepted: a payer without a plan, in patients and in billing's history.
    sql(
        h,
        "UPDATE patients.patient SET coverage_payer = 'ACME', coverage_member_id = 'AC-1' WHERE id = $1",
        uuid.UUID(pid),
    )
    sql(
        h,
        """INSERT INTO billing.coverage (patient_id, payer, effective_from, event_id, changed_at)
              VALUES ($1, 'ACME', current_date - 30, $2, now() - interval '30 days')""",
        uuid.UUID(pid),
        uuid.uuid4(),
    )

    ward = httpx.post(
        f"{gw}/api/wards",
        json={
            "name": f"Legacy {uuid.uuid4().hex[:6]}",
            "type": "general",
            "daily_rate": "1000.00",
            "currency": "TRY",
            "beds": 1,
        },
        headers=admin,
        timeout=10,
    )
    doctor = httpx.post(
        f"{gw}/api/practitioners",
        json={"full_name": "Dr. Legacy", "specialty": "internal_medicine"},
        headers=admin,
        timeout=10,
    )
    stay = httpx.post(
        f"{gw}/api/admissions",
        json={"patient_id": pid, "ward_id": ward.json()["id"], "practitioner_id": doctor.json()["id"]},
        headers=admin,
        timeout=10,
    )
    assert stay.status_code == 201, stay.text
    assert (
        httpx.post(f"{gw}/api/admissions/{stay.json()['id']}/discharge", headers=admin, timeout=10).status_code == 200
    )

    wait_until(lambda: bool(dead_letters_of(h, pid)), every=1.0, what="the invoice's event dead-lettered")
    [dead] = dead_letters_of(h, pid)
    assert dead["consumer"] in ("billing_discharged", "billing_bed_charge_posted"), dead
    assert "'ACME' has no plan" in dead["error"] and f"PATCH /api/patients/{pid}" in dead["error"]

    def invoices() -> list[dict[str, Any]]:
        r = httpx.get(f"{gw}/api/invoices", params={"patient_id": pid}, headers=admin, timeout=10)
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    assert all(i["status"] == "draft" for i in invoices())  # nothing billed as self-pay

    # Reception corrects the coverage; billing learns it from patients' event.
    fixed = httpx.patch(
        f"{gw}/api/patients/{pid}", json={"coverage": {"payer": "SGK", "member_id": "SG-77"}}, headers=admin, timeout=10
    )
    assert fixed.status_code == 200, fixed.text
    wait_until(
        lambda: (
            sql(h, "SELECT count(*) FROM billing.coverage WHERE patient_id = $1 AND payer = 'SGK'", uuid.UUID(pid)) == 1
        ),
        every=0.2,
        what="billing to learn the corrected coverage",
    )

    replayed = his(h, "dlq", "replay", str(dead["id"]))
    assert replayed.returncode == 0 and f"replayed to {dead['consumer']}" in replayed.stdout, replayed.stdout
    wait_until(lambda: [i["status"] for i in invoices()] == ["open"], every=0.2, what="the invoice issued, replayed")
    [inv] = invoices()
    assert (inv["payer"], inv["total"], inv["insurer_share"], inv["patient_share"]) == (
        "SGK",
        "1000.00",
        "800.00",
        "200.00",
    )
    again = his(h, "dlq", "replay", str(dead["id"]))  # it left the DLQ: nothing to replay twice
    assert again.returncode == 0 and "not found" in again.stdout, again.stdout
    assert dead_letters_of(h, pid) == []
    assert [(i["status"], i["total"]) for i in invoices()] == [("open", "1000.00")]


def test_a_payer_currency_or_unit_the_hospital_does_not_know_is_refused_at_the_gateway(
    shared_hospital: Hospital,
) -> None:
    """The 422s name the valid values, which patients and admissions learnt from billing over gRPC."""
    gw, admin = shared_hospital.gateway, shared_hospital.login()
    payers = sorted(p["code"] for p in httpx.get(f"{gw}/api/payers", headers=admin, timeout=10).json()["items"])
    body = {
        "given_name": "Deniz",
        "family_name": "Unknownpayer",
        "birth_date": "1969-07-21",
        "sex": "female",
        "confirm_duplicate": True,
        "coverage": {"payer": "ACME", "member_id": "AC-2"},
    }
    r = httpx.post(f"{gw}/api/patients", json=body, headers=admin, timeout=10)
    assert r.status_code == 422 and r.json()["valid_values"] == payers, r.text

    ward = {"name": f"Unknown {uuid.uuid4().hex[:6]}", "type": "general", "daily_rate": "10.00", "beds": 1}
    r = httpx.post(f"{gw}/api/wards", json=ward | {"currency": "XYZ"}, headers=admin, timeout=10)
    assert r.status_code == 422 and r.json()["valid_values"] == ["TRY"], r.text
    made = httpx.post(f"{gw}/api/wards", json=ward | {"currency": "TRY"}, headers=admin, timeout=10)
    assert made.status_code == 201, made.text
    r = httpx.patch(f"{gw}/api/wards/{made.json()['id']}", json={"currency": "XYZ"}, headers=admin, timeout=10)
    assert r.status_code == 422 and r.json()["valid_values"] == ["TRY"], r.text
    r = httpx.patch(f"{gw}/api/wards/{made.json()['id']}", json={"daily_rate": "12.50"}, headers=admin, timeout=10)
    assert r.status_code == 200 and r.json()["daily_rate"] == "12.50", r.text

    code = f"U-{uuid.uuid4().hex[:8].upper()}"
    item = {"code": code, "description": "Unit check", "unit": "widget", "chargeable": False}
    r = httpx.post(f"{gw}/api/inventory/items", json=item, headers=admin, timeout=10)
    assert r.status_code == 422 and "piece" in r.json()["valid_values"], r.text
    assert (
        httpx.post(f"{gw}/api/inventory/items", json=item | {"unit": "piece"}, headers=admin, timeout=10).status_code
        == 201
    )
    lot = {"item_code": code, "location": "WARD-GEN", "lot": "U1", "quantity": "4"}
    assert httpx.post(f"{gw}/api/inventory/receipts", json=lot, headers=admin, timeout=10).status_code == 201
    half = {"item_code": code, "location": "WARD-GEN", "quantity": "0.5", "reason": "other"}
    r = httpx.post(f"{gw}/api/inventory/consumptions", json=half, headers=admin, timeout=10)
    assert r.status_code == 422 and "cannot be split" in r.json()["detail"], r.text
