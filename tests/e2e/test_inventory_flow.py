"""Inventory under `his up`, through the gateway: stock used for a real patient (checked with the
patient directory over gRPC) and billed when chargeable, audited; a resulted lab order uses its
seeded reagents at LAB exactly once; nothing is dead-lettered (billing prices the new item from
a new version of its price list)."""

from __future__ import annotations

import uuid

import httpx

from tests.e2e.harness import Hospital, assign, create_user, register_patient
from tests.support.waiting import wait_until

NOBODY = "00000000-0000-0000-0000-000000000000"


def test_stock_used_for_a_patient_and_reagents_used_by_a_resulted_order(shared_hospital: Hospital) -> None:
    gw, admin = shared_hospital.gateway, shared_hospital.login()
    nurse_id, nurse = create_user(shared_hospital, admin, "NURSE", "inv")
    doctor_id, doctor = create_user(shared_hospital, admin, "DOCTOR", "inv")
    _, tech = create_user(shared_hospital, admin, "LAB_TECH", "inv")
    patient = register_patient(shared_hospital, admin, "Stockflow")
    for clinician in (nurse_id, doctor_id):  # clinicians act on a patient in their care
        assign(shared_hospital, admin, patient["id"], clinician)

    code = f"IV-{uuid.uuid4().hex[:8].upper()}"
    item = {
        "code": code,
        "description": "IV infusion set",
        "unit": "set",
        "chargeable": True,
        "thresholds": {"WARD-GEN": 2},
    }
    assert httpx.post(f"{gw}/api/inventory/items", json=item, headers=admin, timeout=10).status_code == 201
    # Billing prices it from today: a new version of the price list, the current one plus this item.
    current = httpx.get(f"{gw}/api/price-list", headers=admin, timeout=10).json()
    lines = [{k: x[k] for k in ("code", "category", "amount", "currency")} for x in current["lines"]]
    lines.append({"code": f"item.{code}", "category": "supplies", "amount": "42.50", "currency": "TRY"})
    r = httpx.post(
        f"{gw}/api/price-list", json={"effective_from": current["date"], "lines": lines}, headers=admin, timeout=10
    )
    assert r.status_code == 201, r.text
    receipt = {"item_code": code, "location": "WARD-GEN", "lot": "B1", "quantity": "5", "expires_on": "2099-01-31"}
    r = httpx.post(f"{gw}/api/inventory/receipts", json=receipt, headers=nurse, timeout=10)
    assert r.status_code == 201, r.text

    use = {"item_code": code, "location": "WARD-GEN", "quantity": "3", "reason": "patient"}
    r = httpx.post(
        f"{gw}/api/inventory/consumptions", json=use | {"patient_id": patient["id"]}, headers=nurse, timeout=10
    )
    assert r.status_code == 201, r.text
    assert r.json()["chargeable"] is True and r.json()["on_hand"] == "2"
    r = httpx.post(f"{gw}/api/inventory/consumptions", json=use | {"patient_id": NOBODY}, headers=nurse, timeout=10)
    assert r.status_code == 422, r.text
    r = httpx.post(
        f"{gw}/api/inventory/consumptions", json=use | {"patient_id": patient["id"]}, headers=nurse, timeout=10
    )
    assert r.status_code == 409 and r.json()["available"] == "2"
    alerts = httpx.get(f"{gw}/api/inventory/alerts", params={"item_code": code}, headers=nurse, timeout=10).json()
    assert [a["on_hand"] for a in alerts["items"]] == ["2"]

    def charged() -> list[str]:
        r = httpx.get(f"{gw}/api/charges", params={"patient_id": str(patient["id"])}, headers=admin, timeout=10)
        assert r.status_code == 200, r.text
        return [f"{c['code']} {c['quantity']} {c['amount']}" for c in r.json()["items"] if c["code"] == f"item.{code}"]

    wait_until(lambda: bool(charged()), what="billing to charge the item used for the patient")
    assert charged() == [f"item.{code} 3 127.50"]

    def glucose_reagent() -> str:
        r = httpx.get(
            f"{gw}/api/inventory/stock", params={"item_code": "RGT-GLU", "location": "LAB"}, headers=tech, timeout=10
        )
        assert r.status_code == 200, r.text
        return str(r.json()["items"][0]["on_hand"])

    before = int(glucose_reagent())
    order = {"patient_id": patient["id"], "tests": ["GLU"], "priority": "routine"}
    r = httpx.post(f"{gw}/api/lab/orders", json=order, headers=doctor, timeout=10)
    assert r.status_code == 201, r.text
    oid = r.json()["id"]
    assert httpx.post(f"{gw}/api/lab/orders/{oid}/collect", headers=nurse, timeout=10).status_code == 200
    assert httpx.post(f"{gw}/api/lab/orders/{oid}/start", headers=tech, timeout=10).status_code == 200
    results = {"results": [{"code": "GLU", "value": "92"}]}
    r = httpx.post(f"{gw}/api/lab/orders/{oid}/results", json=results, headers=tech, timeout=10)
    assert r.status_code == 200, r.text
    wait_until(lambda: glucose_reagent() == str(before - 1), what="the order's reagent used at LAB")

    def audited() -> bool:
        r = httpx.get(f"{gw}/api/audit", params={"patient_id": str(patient["id"])}, headers=admin, timeout=10)
        return any(e["resource"] == "inventory/consumption" for e in r.json()["items"])

    wait_until(audited, what="the consumption's audit record")
    forged = {"authorization": "Bearer not-a-token"}
    assert httpx.get(f"{gw}/api/inventory/stock", headers=forged, timeout=10).status_code == 401
    assert shared_hospital.status()["dlq_depth"] == 0
    assert glucose_reagent() == str(before - 1)
