"""Under `his up`: a doctor's appointment with a patient puts the doctor in the patient's care
without anyone assigning it, and cancelling it ends that; an admission does the same until a
day after the discharge. Patients learns all of it from scheduling's, admissions' and
practitioners' events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.e2e.harness import Hospital, create_user, register_patient
from tests.support.waiting import wait_until


def test_appointments_and_admissions_give_their_practitioner_care(shared_hospital: Hospital) -> None:
    h, gw = shared_hospital, shared_hospital.gateway
    admin = h.login()
    doctor_id, doctor = create_user(h, admin, "DOCTOR", "care-events")

    def post(path: str, body: dict[str, Any], auth: dict[str, str] = admin, status: int = 201) -> dict[str, Any]:
        r = httpx.post(f"{gw}{path}", json=body, headers=auth, timeout=10)
        assert r.status_code == status, (path, r.text)
        return dict(r.json()) if r.content else {}

    def chart(patient: object) -> int:
        return httpx.get(f"{gw}/api/patients/{patient}", headers=doctor, timeout=10).status_code

    practitioner = post(
        "/api/practitioners", {"full_name": "Dr. Ece Tan", "specialty": "cardiology", "user_id": doctor_id}
    )["id"]
    day = (datetime.now(UTC) + timedelta(days=30)).replace(hour=0, minute=0, second=0, microsecond=0)
    post(
        f"/api/practitioners/{practitioner}/shifts",
        {"start": (day + timedelta(hours=8)).isoformat(), "end": (day + timedelta(hours=16)).isoformat()},
    )
    patient = register_patient(h, admin, f"Care-{uuid.uuid4().hex[:6]}")["id"]
    assert chart(patient) == 403  # no care relationship yet

    start = day + timedelta(hours=9)
    appointment = post(
        "/api/appointments",
        {
            "patient_id": patient,
            "practitioner_id": practitioner,
            "service": "consultation",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=20)).isoformat(),
        },
    )["id"]
    wait_until(lambda: chart(patient) == 200, what="the booking to put the doctor in the patient's care")
    team = httpx.get(f"{gw}/api/patients/{patient}/care-team", headers=admin, timeout=10).json()["items"]
    assert [(m["id"], m["user_id"], m["source"]) for m in team] == [(appointment, doctor_id, "appointment")]
    r = httpx.delete(f"{gw}/api/patients/{patient}/care-team/{appointment}", headers=admin, timeout=10)
    assert r.status_code == 409 and "appointment" in r.json()["detail"]

    post(f"/api/appointments/{appointment}/cancel", {}, status=200)
    wait_until(lambda: chart(patient) == 403, what="the cancellation to end the care")

    ward = post(
        "/api/wards",
        {
            "name": f"Care ward {uuid.uuid4().hex[:6]}",
            "type": "general",
            "daily_rate": "1000.00",
            "currency": "TRY",
            "beds": 1,
        },
    )["id"]
    admission = post("/api/admissions", {"patient_id": patient, "practitioner_id": practitioner, "ward_id": ward})
    wait_until(lambda: chart(patient) == 200, what="the admission to put the doctor in the patient's care")
    team = httpx.get(f"{gw}/api/patients/{patient}/care-team", headers=admin, timeout=10).json()["items"]
    assert [(m["source"], m["valid_until"]) for m in team] == [("admission", None)]  # open while admitted
    post(f"/api/admissions/{admission['id']}/discharge", {}, status=200)

    def care_ends() -> str | None:
        team = httpx.get(f"{gw}/api/patients/{patient}/care-team", headers=admin, timeout=10).json()["items"]
        return next((m["valid_until"] for m in team if m["source"] == "admission"), None)

    wait_until(lambda: care_ends() is not None, what="the discharge to set when the admission's care ends")
    ends = datetime.fromisoformat(str(care_ends()))
    assert timedelta(hours=23) < ends - datetime.now(UTC) <= timedelta(hours=24)
    assert chart(patient) == 200  # still in care after the discharge: a day to finish the notes
