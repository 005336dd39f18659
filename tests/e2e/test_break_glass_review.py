"""The break-the-glass review under `his up` (ADR 0030): a placeholder reason is refused, a real
one granted; the administrators' review queue lists the grant with the patient's MRN and what was
read under it; an administrator's review is an event on the bus (no note) and a record in the
audit trail; a clinician over the limit (3 grants in 24 hours) raises an alert that reaches the
administrators' alerts, and the queue marks that grant."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from tests.e2e.harness import Hospital, create_user, published_events, register_patient
from tests.support.waiting import wait_until

REASONS = [
    "Found collapsed in the car park, unresponsive, no identification on him",
    "Hasta acil serviste bilinci kapalı, yakınlarına ulaşılamıyor",
    "Seizure in the pharmacy queue, need to know his epilepsy medication",
    "Called to ward six overnight, the covering team cannot be reached",
]
NOTE = "Checked with the night rota: the doctor was covering the car park call"


def subject(headers: dict[str, str]) -> str:
    """The user id in a bearer token (its ``sub``), read without checking the signature."""
    payload = headers["authorization"].removeprefix("Bearer ").split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])


def test_break_the_glass_review_end_to_end(shared_hospital: Hospital) -> None:
    h, gw = shared_hospital, shared_hospital.gateway
    admin = h.login()
    admin_id = subject(admin)
    doctor_id, doctor = create_user(h, admin, "DOCTOR", "review")
    patients = [register_patient(h, admin, f"Review-{n}") for n in ("Ada", "Baran", "Cem", "Derya")]
    first = patients[0]
    glass = f"{gw}/api/patients/{first['id']}/emergency-access"

    # Placeholders are refused with a 422 naming why; a real reason opens the record.
    for placeholder, rule in (
        ("test", "placeholder"),
        ("acil acil acil acil acil", "placeholder"),
        ("n/a", "placeholder"),
    ):
        refused = httpx.post(glass, headers=doctor, json={"reason": placeholder}, timeout=10)
        assert refused.status_code == 422 and refused.json()["rule"] == rule, refused.text
    granted = httpx.post(glass, headers=doctor, json={"reason": REASONS[0]}, timeout=10)
    assert granted.status_code == 201, granted.text
    grant_id = granted.json()["grant_id"]
    assert httpx.get(f"{gw}/api/patients/{first['id']}", headers=doctor, timeout=10).status_code == 200
    assert httpx.get(f"{gw}/api/patients/{first['id']}/care-team", headers=doctor, timeout=10).status_code == 200
    reused = httpx.post(
        f"{gw}/api/patients/{patients[1]['id']}/emergency-access",
        headers=doctor,
        json={"reason": REASONS[0]},
        timeout=10,
    )
    assert reused.status_code == 422 and reused.json()["rule"] == "reused"

    # The queue lists it with the patient's MRN, the reason and what was read under it.
    queue = f"{gw}/api/patients/emergency-access"
    r = httpx.get(queue, params={"patient_id": str(first["id"])}, headers=admin, timeout=10)
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert (item["grant_id"], item["user_id"], item["mrn"], item["reason"]) == (
        grant_id,
        doctor_id,
        first["mrn"],
        REASONS[0],
    )
    assert [(x["resource"], x["action"]) for x in item["reads"]] == [("patient", "read"), ("care_team", "read")]
    assert item["review_state"] == "pending" and item["over_limit"] is False
    assert httpx.get(queue, headers=doctor, timeout=10).status_code == 403

    # An administrator's review: an event without the note, and an update in the audit trail.
    review = f"{queue}/{grant_id}/review"
    body = {"decision": "reviewed", "note": NOTE}
    assert httpx.post(review, headers=doctor, json=body, timeout=10).status_code == 403
    done = httpx.post(review, headers=admin, json=body, timeout=10)
    assert done.status_code == 200, done.text
    assert (done.json()["review_state"], done.json()["reviewed_by"], done.json()["review_note"]) == (
        "reviewed",
        admin_id,
        NOTE,
    )
    assert httpx.post(review, headers=admin, json=body, timeout=10).status_code == 409

    def reviewed_in_trail() -> bool:
        r = httpx.get(f"{gw}/api/audit", params={"patient_id": str(first["id"])}, headers=admin, timeout=10)
        assert r.status_code == 200, r.text
        return any(
            (e["actor_id"], e["action"], e["resource"], e["purpose"], e["outcome"])
            == (admin_id, "update", "emergency_access", "review", "allowed")
            for e in r.json()["items"]
        )

    wait_until(reviewed_in_trail, what="the review's record in the audit trail")

    # Three more grants within the day: the fourth of the day goes over the limit of three; it
    # stands, the queue marks it, and the administrators are alerted.
    later = []
    for patient, reason in zip(patients[1:], REASONS[1:], strict=True):
        r = httpx.post(
            f"{gw}/api/patients/{patient['id']}/emergency-access", headers=doctor, json={"reason": reason}, timeout=10
        )
        assert r.status_code == 201, r.text
        later.append(r.json()["grant_id"])
    marked = {x["grant_id"]: x["over_limit"] for x in httpx.get(queue, headers=admin, timeout=10).json()["items"]}
    assert [marked[g] for g in (grant_id, *later)] == [False, False, False, True]

    def limit_alert() -> dict[str, Any] | None:
        r = httpx.get(f"{gw}/api/notifications/alerts", headers=admin, timeout=10)
        assert r.status_code == 200, r.text
        return next(
            (a for a in r.json()["items"] if a["kind"] == "break_glass_limit" and a["detail"]["grant_id"] == later[-1]),
            None,
        )

    wait_until(lambda: limit_alert() is not None, what="the administrators' alert of the limit")
    alert = limit_alert()
    assert alert is not None and alert["actor_id"] == doctor_id and alert["patient_id"] == patients[3]["id"]
    assert (alert["detail"]["grants_in_window"], alert["detail"]["limit"]) == (4, 3)
    own = httpx.get(f"{gw}/api/notifications/alerts", headers=doctor, timeout=10)
    assert own.status_code == 200 and all(a["kind"] != "break_glass_limit" for a in own.json()["items"])

    # On the bus: the review and the limit by ids and codes; never the note nor the reasons.
    bus = published_events(h)
    assert "his.patients.emergency_access.reviewed.v1" in bus and "his.patients.emergency_access.over_limit.v1" in bus
    for secret in ("night rota", "car park", "epilepsy", "bilinci"):
        assert secret not in bus
