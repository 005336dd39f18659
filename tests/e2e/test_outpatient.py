"""The outpatient flow under `his up`, through the gateway: practitioners, shifts and leave,
bookings that never collide (checked over gRPC against practitioners' calendar), the waitlist and
the booking's message in the maildir.

On the shared hospital: no test here stops or reconfigures it. The two that need a hospital of
their own are in tests/e2e/private/test_his_up.py, on the hospital whose processes it stops: the
scan of every event the run published (whose cost grows with everything published before it),
and messages that wait while patients is stopped (which also needs the contact cache off)."""

from __future__ import annotations

import asyncio
import mailbox
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Hospital
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def hospital(shared_hospital: Hospital) -> Hospital:
    return shared_hospital


def day_at(hours: float, days: int = 2) -> datetime:
    base = (datetime.now(UTC) + timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    return base + timedelta(hours=hours)


class Desk:
    def __init__(self, hospital: Hospital) -> None:
        self.g = hospital.gateway
        self.admin = hospital.login()

    def post(self, path: str, body: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        return httpx.post(f"{self.g}{path}", json=body or {}, headers=kw.get("headers", self.admin), timeout=15)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(f"{self.g}{path}", params=kw.get("params"), headers=kw.get("headers", self.admin), timeout=15)

    def practitioner(self, hours: tuple[float, float] = (8, 16)) -> str:
        r = self.post("/api/practitioners", {"full_name": "Dr. Deniz Ak", "specialty": "general_practice"})
        assert r.status_code == 201, r.text
        pid = str(r.json()["id"])
        shift = {"start": day_at(hours[0]).isoformat(), "end": day_at(hours[1]).isoformat()}
        assert self.post(f"/api/practitioners/{pid}/shifts", shift).status_code == 201
        return pid

    def patient(self, **extra: str) -> str:
        body = {
            "given_name": "Test",
            "family_name": "Patient",
            "birth_date": "1985-03-04",
            "sex": "female",
            "confirm_duplicate": True,
            **extra,
        }  # look-alikes on purpose
        r = self.post("/api/patients", body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def booking(self, patient: str, practitioner: str, hours: float) -> dict[str, str]:
        start = day_at(hours)
        return {
            "patient_id": patient,
            "practitioner_id": practitioner,
            "service": "consultation",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=20)).isoformat(),
        }


async def _race(gateway: str, headers: dict[str, str], bodies: list[dict[str, str]]) -> list[int]:
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=30) as client:
        answers = await asyncio.gather(*(client.post("/api/appointments", json=b) for b in bodies))
    return [r.status_code for r in answers]


def test_twenty_concurrent_bookings_of_one_slot_through_the_gateway(hospital: Hospital) -> None:
    desk = Desk(hospital)
    doctor = desk.practitioner()
    patients = [desk.patient() for _ in range(20)]
    codes = asyncio.run(_race(desk.g, desk.admin, [desk.booking(p, doctor, 9) for p in patients]))
    assert sorted(codes) == [201] + [409] * 19, codes
    slots = desk.get(f"/api/practitioners/{doctor}/slots", params={"date": day_at(0).date().isoformat()}).json()
    assert day_at(9).isoformat() not in [s["start"] for s in slots["items"]]


def test_approved_leave_removes_availability_and_booking_inside_it_is_refused(hospital: Hospital) -> None:
    desk = Desk(hospital)
    doctor = desk.practitioner()
    leave = desk.post(
        f"/api/practitioners/{doctor}/leave-requests", {"start": day_at(12).isoformat(), "end": day_at(16).isoformat()}
    )
    assert leave.status_code == 201
    patient = desk.patient()
    assert desk.post("/api/appointments", desk.booking(patient, doctor, 13)).status_code == 201  # only requested
    lid = leave.json()["id"]
    assert desk.post(f"/api/practitioners/{doctor}/leave-requests/{lid}/approve").status_code == 200
    refused = desk.post("/api/appointments", desk.booking(desk.patient(), doctor, 14))
    assert refused.status_code == 409 and refused.json()["conflict"] == {"with": "availability"}
    slots = desk.get(f"/api/practitioners/{doctor}/slots", params={"date": day_at(0).date().isoformat()}).json()
    assert all(s["start"] < day_at(12).isoformat() for s in slots["items"])


def test_bad_booking_input_is_4xx_never_5xx(hospital: Hospital) -> None:
    desk = Desk(hospital)
    doctor, patient = desk.practitioner(), desk.patient()
    good = desk.booking(patient, doctor, 10)
    for patch in (
        {"end": day_at(9).isoformat()},
        {"start": "2026-12-01T10:00:00"},
        {"practitioner_id": "00000000-0000-0000-0000-000000000000"},
        {"patient_id": "00000000-0000-0000-0000-000000000000"},
        {"service": "x" * 100_000},
        {"start": "2026-13-45T99:00:00+00:00"},
    ):
        r = desk.post("/api/appointments", {**good, **patch})
        assert 400 <= r.status_code < 500, (patch, r.status_code, r.text[:200])
        assert r.headers["content-type"] == "application/problem+json"


def test_a_cancelled_slot_is_offered_to_the_first_waitlisted_patient(hospital: Hospital) -> None:
    desk = Desk(hospital)
    doctor = desk.practitioner((8, 9))
    taken = desk.post("/api/appointments", desk.booking(desk.patient(), doctor, 8)).json()["id"]
    first, second = desk.patient(), desk.patient()
    for p in (first, second):
        body = {"patient_id": p, "practitioner_id": doctor, "service": "consultation"}
        assert desk.post("/api/waitlist", body).status_code == 201
    assert desk.post(f"/api/appointments/{taken}/cancel").json()["status"] == "cancelled"

    def offered() -> bool:
        items = desk.get("/api/waitlist", params={"patient_id": first}).json()["items"]
        return bool(items and items[0]["status"] == "offered")

    wait_until(offered, timeout=30, what="the waitlist offer")
    entry = desk.get("/api/waitlist", params={"patient_id": first}).json()["items"][0]
    assert entry["offer"]["start"] == day_at(8).isoformat()
    assert desk.get("/api/waitlist", params={"patient_id": second}).json()["items"][0]["status"] == "waiting"
    assert desk.post(f"/api/waitlist/{entry['id']}/accept").status_code == 201


def maildir(hospital: Hospital) -> list[mailbox.MaildirMessage]:
    root = hospital.data / "mail" / "maildir"
    return list(mailbox.Maildir(root, create=False)) if root.exists() else []


def mail_to(hospital: Hospital, address: str, subject_start: str) -> list[mailbox.MaildirMessage]:
    return [m for m in maildir(hospital) if m["To"] == address and str(m["Subject"]).startswith(subject_start)]


def mailed(hospital: Hospital, address: str, subject_start: str) -> bool:
    return bool(mail_to(hospital, address, subject_start))


def test_a_booking_arrives_in_the_maildir(hospital: Hospital) -> None:
    desk = Desk(hospital)
    doctor, address = desk.practitioner(), "bora.mailcheck@example.org"
    patient = desk.patient(email=address)
    wait_until(lambda: mailed(hospital, address, "Welcome"), timeout=30, what="the welcome message")
    started = time.monotonic()
    assert desk.post("/api/appointments", desk.booking(patient, doctor, 15)).status_code == 201
    wait_until(lambda: mailed(hospital, address, "Your appointment"), timeout=30, what="the confirmation")
    print(f"booking -> maildir: {time.monotonic() - started:.3f}s")
    history = desk.get("/api/notifications", params={"patient_id": patient}).json()["items"]
    assert {(i["template"], i["status"]) for i in history} >= {("appointment_booked", "sent"), ("welcome", "sent")}
    reminder = next(i for i in history if i["template"] == "appointment_reminder")
    assert reminder["status"] == "queued" and reminder["due_at"] == (day_at(15) - timedelta(hours=24)).isoformat()
