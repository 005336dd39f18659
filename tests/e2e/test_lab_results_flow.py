"""A lab order under `his up`, through the gateway: the real patient directory (gRPC), the
results in the chart, the ordering doctor's alert and the audit trail, with nothing dead-lettered."""

from __future__ import annotations

import httpx

from tests.e2e.harness import Hospital, assign, create_user, register_patient
from tests.support.waiting import wait_until

NOBODY = "00000000-0000-0000-0000-000000000000"


def test_a_critical_result_reaches_the_chart_the_doctor_and_the_audit_log(shared_hospital: Hospital) -> None:
    gw, admin = shared_hospital.gateway, shared_hospital.login()
    doctor_id, doctor = create_user(shared_hospital, admin, "DOCTOR", "lab")
    _, tech = create_user(shared_hospital, admin, "LAB_TECH", "lab")
    nurse_id, nurse = create_user(shared_hospital, admin, "NURSE", "lab")
    patient = register_patient(shared_hospital, admin, "Labflow")
    for clinician in (doctor_id, nurse_id):  # clinicians act on a patient in their care
        assign(shared_hospital, admin, patient["id"], clinician)

    catalog = httpx.get(f"{gw}/api/lab/catalog", headers=nurse, timeout=10).json()["items"]
    assert {"K", "TROPI"} <= {t["code"] for t in catalog}
    order = {"patient_id": patient["id"], "tests": ["K", "TROPI"], "priority": "stat"}
    r = httpx.post(f"{gw}/api/lab/orders", json=order, headers=doctor, timeout=10)
    assert r.status_code == 201, r.text
    oid = r.json()["id"]
    unknown = httpx.post(f"{gw}/api/lab/orders", json=order | {"patient_id": NOBODY}, headers=doctor, timeout=10)
    assert unknown.status_code == 422, unknown.text

    def act(action: str, who: dict[str, str]) -> int:
        return httpx.post(f"{gw}/api/lab/orders/{oid}/{action}", headers=who, timeout=10).status_code

    assert act("start", tech) == 409
    assert act("collect", nurse) == 200
    assert act("start", tech) == 200
    results = {"results": [{"code": "K", "value": "7.0"}, {"code": "TROPI", "value": "12"}]}
    r = httpx.post(f"{gw}/api/lab/orders/{oid}/results", json=results, headers=tech, timeout=10)
    assert r.status_code == 200, r.text
    assert [x["flag"] for x in r.json()["results"]] == ["HH", "N"]

    def chart() -> list[dict[str, object]]:
        r = httpx.get(f"{gw}/api/patients/{patient['id']}/lab-results", headers=doctor, timeout=10)
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    wait_until(lambda: len(chart()) == 1, what="the results in the chart")
    assert chart()[0]["order_id"] == oid

    def alerts() -> list[dict[str, object]]:
        r = httpx.get(f"{gw}/api/notifications/alerts", headers=doctor, timeout=10)
        assert r.status_code == 200, r.text
        return [a for a in r.json()["items"] if a["detail"].get("order_id") == oid]

    wait_until(lambda: len(alerts()) == 1, what="the ordering doctor's alert")
    detail = alerts()[0]["detail"]
    assert isinstance(detail, dict) and detail["critical"] is True

    def audited() -> bool:
        r = httpx.get(f"{gw}/api/audit", params={"patient_id": str(patient["id"])}, headers=admin, timeout=10)
        return any(e["resource"] == "lab_order/result" for e in r.json()["items"])

    wait_until(audited, what="the lab's audit records")
    assert shared_hospital.status()["dlq_depth"] == 0
