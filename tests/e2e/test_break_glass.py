"""Break-the-glass under `his up`: refused without a care relationship, granted with a reason for
one patient and a short time, audited and flagged, reported to administrators, reason kept off
the bus."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

import httpx

from tests.e2e.conftest import EMERGENCY_MINUTES
from tests.e2e.harness import HIS, Hospital, assign, create_user, his_env, published_events, register_patient
from tests.support.waiting import wait_until

REASON = "Collapsed in the waiting room, unresponsive, no one to ask about allergies"


def test_break_the_glass_end_to_end(shared_hospital: Hospital) -> None:
    h, gw = shared_hospital, shared_hospital.gateway
    admin = h.login()
    doctor_id, doctor = create_user(h, admin, "DOCTOR", "glass")
    a = register_patient(h, admin, "Glass-Ayaz")
    b = register_patient(h, admin, "Glass-Bora")

    # No care relationship: 403, offering emergency access, and nothing of the patient.
    denied = httpx.get(f"{gw}/api/patients/{a['id']}", headers=doctor, timeout=10)
    assert denied.status_code == 403 and denied.headers["content-type"] == "application/problem+json"
    offer = denied.json()["emergency_access"]
    assert offer["href"] == f"/api/patients/{a['id']}/emergency-access" and offer["method"] == "POST"
    assert "reason" in offer["requires"]
    assert "Glass-Ayaz" not in denied.text and str(a["mrn"]) not in denied.text

    # Too short a reason is refused; a real one opens that patient for a short time.
    short = httpx.post(f"{gw}{offer['href']}", headers=doctor, json={"reason": "urgent"}, timeout=10)
    assert short.status_code == 422
    asked = datetime.now(UTC)
    r = httpx.post(f"{gw}{offer['href']}", headers=doctor, json={"reason": REASON}, timeout=10)
    assert r.status_code == 201, r.text
    grant = r.json()
    expires = datetime.fromisoformat(grant["expires_at"])
    lifetime = timedelta(minutes=EMERGENCY_MINUTES)
    assert grant["patient_id"] == a["id"] and asked < expires <= datetime.now(UTC) + lifetime
    got = httpx.get(f"{gw}/api/patients/{a['id']}", headers=doctor, timeout=10)
    assert got.status_code == 200 and got.json()["family_name"] == "Glass-Ayaz"
    assert httpx.get(f"{gw}/api/patients/{b['id']}", headers=doctor, timeout=10).status_code == 403

    # The grant and the read under it are in the patient's audit trail, flagged.
    def trail() -> list[dict[str, object]]:
        r = httpx.get(f"{gw}/api/audit", params={"patient_id": str(a["id"])}, headers=admin, timeout=10)
        assert r.status_code == 200, r.text
        return [e for e in r.json()["items"] if e["actor_id"] == doctor_id]

    wait_until(lambda: len(trail()) >= 3, what="the doctor's audit records")
    seen = {(e["action"], e["purpose"], e["outcome"], e["flagged"]) for e in trail()}
    assert ("break_glass", "emergency", "allowed", True) in seen
    assert ("read", "emergency", "allowed", True) in seen
    assert ("read", "care", "denied", False) in seen

    # Administrators are alerted, with ids only.
    def alert() -> dict[str, object] | None:
        r = httpx.get(f"{gw}/api/notifications/alerts", headers=admin, timeout=10)
        assert r.status_code == 200, r.text
        return next((x for x in r.json()["items"] if x["detail"].get("grant_id") == grant["grant_id"]), None)

    wait_until(lambda: alert() is not None, what="the administrators' alert")
    found = alert()
    assert found is not None and found["kind"] == "break_glass"
    assert found["patient_id"] == a["id"] and found["actor_id"] == doctor_id
    # The doctor's own alerts (abnormal results of their lab orders) never include administrators' ones.
    own = httpx.get(f"{gw}/api/notifications/alerts", headers=doctor, timeout=10)
    assert own.status_code == 200 and all(x["kind"] != "break_glass" for x in own.json()["items"])

    # The reason is for administrators and auditors, through patients only.
    oversight = httpx.get(
        f"{gw}/api/patients/emergency-access", params={"patient_id": str(a["id"])}, headers=admin, timeout=10
    )
    assert [g["reason"] for g in oversight.json()["items"]] == [REASON]

    # When the grant expires, the door closes again.
    def closed() -> bool:
        return httpx.get(f"{gw}/api/patients/{a['id']}", headers=doctor, timeout=10).status_code == 403

    wait_until(closed, timeout=lifetime.total_seconds() + 20, what="the emergency grant to expire")
    assert datetime.now(UTC) >= expires - timedelta(seconds=1)

    # The reason and the patient's details never travelled on the bus; the grant's id did.
    bus = published_events(h)
    assert grant["grant_id"] in bus and "his.patients.emergency_access.granted.v1" in bus
    for secret in ("Collapsed", "allergies", "Glass-Ayaz", "glass-ayaz@", "555 246"):
        assert secret not in bus

    # The audit chain, now holding flagged records, still verifies.
    out = subprocess.run(
        [HIS, "audit", "verify"], env=his_env(h.data, h.port), capture_output=True, timeout=60, check=False
    )
    assert out.returncode == 0, (out.stdout + out.stderr).decode()
    assert b"audit chain intact" in out.stdout
    assert b"streams were not asked" not in out.stderr  # the producers' streams were compared too


def test_the_patient_sees_who_read_their_record_by_name(shared_hospital: Hospital) -> None:
    """ "Who saw my record" through the gateway names staff from identity's staff directory and
    services in words, never a SPIFFE URI; and reading the trail is itself in the trail."""
    h, gw = shared_hospital, shared_hospital.gateway
    admin = h.login()
    doctor_id, doctor = create_user(h, admin, "DOCTOR", "named")
    patient = register_patient(h, admin, "Named-Ceren")
    assign(h, admin, patient["id"], doctor_id)
    assert httpx.get(f"{gw}/api/patients/{patient['id']}", headers=doctor, timeout=10).status_code == 200

    def trail() -> list[dict[str, object]]:
        r = httpx.get(f"{gw}/api/audit", params={"patient_id": str(patient["id"])}, headers=admin, timeout=10)
        assert r.status_code == 200, r.text
        items: list[dict[str, object]] = r.json()["items"]
        return items

    wait_until(lambda: any(e["actor_id"] == doctor_id for e in trail()), what="the doctor's read in the trail")
    items = trail()
    read = next(e for e in items if e["actor_id"] == doctor_id)
    assert (read["actor_kind"], read["actor_name"], read["actor_roles"]) == ("staff", "Doctor named", ["DOCTOR"])
    assert any(e["resource"] == "audit_trail" and e["outcome"] == "allowed" for e in items)  # the reads above
    for e in items:
        assert e["actor_kind"] in {"staff", "patient", "service"}
        assert not str(e["actor_name"] or "").startswith("spiffe:")
