"""The clinic in a real browser: a doctor's own day list shows a patient the desk books, without
reloading; the doctor opens the chart, adds an entry and orders a test. A doctor without care
meets break-the-glass: the reason is asked, a placeholder refused, and the chart opens under a
banner. Every page passes the accessibility check.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.e2e.harness import Hospital, assign
from tests.support.browser import Screenshots, check_accessibility
from tests.support.waiting import wait_until

PASSWORD = "long enough staff passphrase"


@dataclass(frozen=True)
class Clinic:
    doctor: str
    stranger: str
    practitioner: str
    patient: str
    family: str
    tomorrow: str


def account(c: httpx.Client, admin: dict[str, str], role: str, name: str) -> tuple[str, str]:
    email = f"{role.lower()}-{uuid.uuid4().hex[:6]}@hospital.example"
    body = {"email": email, "password": PASSWORD, "full_name": name, "roles": [role]}
    r = c.post("/api/admin/users", json=body, headers=admin)
    assert r.status_code == 201, r.text
    return email, str(r.json()["user_id"])


@pytest.fixture(scope="module")
def clinic(shared_hospital: Hospital) -> Clinic:
    """A doctor with a practitioner profile, a shift tomorrow and a patient in their care; and a
    doctor with no care of that patient."""
    admin = shared_hospital.login()
    tag = uuid.uuid4().hex[:5]
    with httpx.Client(base_url=shared_hospital.gateway, timeout=10) as c:
        doctor, doctor_id = account(c, admin, "DOCTOR", f"Dr. Selin Kaya {tag}")
        stranger, _ = account(c, admin, "DOCTOR", f"Dr. Emre Aydın {tag}")
        profile = {"full_name": f"Dr. Selin Kaya {tag}", "specialty": "internal_medicine", "user_id": doctor_id}
        r = c.post("/api/practitioners", json=profile, headers=admin)
        assert r.status_code == 201, r.text
        practitioner = str(r.json()["id"])
        day = (datetime.now(UTC) + timedelta(days=1)).date()
        start = datetime(day.year, day.month, day.day, 13, tzinfo=UTC)
        shift = {"start": start.isoformat(), "end": (start + timedelta(hours=2)).isoformat()}
        assert c.post(f"/api/practitioners/{practitioner}/shifts", json=shift, headers=admin).status_code == 201
        family = f"Demir{tag}"
        body = {"given_name": "Zeynep", "family_name": family, "birth_date": "1975-06-30", "sex": "female"}
        r = c.post("/api/patients", json=body, headers=admin)
        assert r.status_code == 201, r.text
        patient = str(r.json()["id"])
    assign(shared_hospital, admin, patient, doctor_id)
    doctor_headers = shared_hospital.login(doctor, PASSWORD)

    def lab_knows_the_care() -> bool:  # the care relationship reaches the laboratory by events
        r = httpx.get(
            f"{shared_hospital.gateway}/api/lab/orders", params={"patient_id": patient}, headers=doctor_headers
        )
        return r.status_code == 200

    wait_until(lab_knows_the_care, what="the doctor's care to reach the laboratory")
    return Clinic(doctor, stranger, practitioner, patient, family, day.isoformat())


async def sign_in(page: Page, gateway: str, email: str, then: str = "/") -> None:
    await page.goto(f"{gateway}{then}")
    await page.get_by_label("E-mail address").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()


async def test_a_doctor_sees_the_patient_arrive_opens_the_chart_writes_and_orders(
    shared_hospital: Hospital, clinic: Clinic, page: Page, screenshots: Screenshots
) -> None:
    gateway = shared_hospital.gateway
    await sign_in(page, gateway, clinic.doctor, then=f"/day-list?day={clinic.tomorrow}")
    # The doctor's own day, without choosing: their practitioner profile's.
    await expect(page.get_by_label("Practitioner")).to_have_value(clinic.practitioner)
    await expect(page.get_by_text("No appointments on this day.")).to_be_visible()
    await check_accessibility(page)

    admin = shared_hospital.login()
    with httpx.Client(base_url=gateway, timeout=10, headers=admin) as c:
        free = c.get(f"/api/practitioners/{clinic.practitioner}/slots", params={"date": clinic.tomorrow}).json()
        body = {"patient_id": clinic.patient, "practitioner_id": clinic.practitioner, "service": "consultation"}
        r = c.post("/api/appointments", json={**body, **free["items"][0]})
        assert r.status_code == 201, r.text
    link = page.get_by_role("link", name=f"{clinic.family}, Zeynep")
    await expect(link).to_be_visible(timeout=10_000)  # without reloading
    await screenshots.take(page, "my-day")

    await link.click()
    await expect(page.get_by_role("heading", name="Care team")).to_be_visible()
    await expect(page.get_by_role("alert").filter(has_text="Emergency access")).to_have_count(0)
    await page.get_by_label("Kind of entry").select_option("diagnosis")
    await page.get_by_label("Code (optional, e.g. ICD-10 I10)").fill("I10")
    await page.get_by_label("Entry", exact=True).fill("Essential hypertension; <script>alert(1)</script> to follow up.")
    await page.get_by_role("button", name="Add to the record").click()
    await expect(page.get_by_role("status")).to_have_text("The entry was added to the record.")
    entry = page.locator(".his-entries li").first
    await expect(entry).to_contain_text("<script>alert(1)</script> to follow up.")  # shown as text, not run
    await expect(entry).to_contain_text("Dr. Selin Kaya")

    await page.locator("label[for=test-GLU]").click()
    await page.locator("label[for=priority-urgent]").click()
    await page.get_by_role("button", name="Order", exact=True).click()
    await expect(page.get_by_role("status")).to_have_text("The tests were ordered.")
    await expect(page.locator("#lab ~ ul").first).to_contain_text("Urgent")
    await screenshots.take(page, "chart")
    await check_accessibility(page)


async def test_a_doctor_without_care_meets_break_the_glass(
    shared_hospital: Hospital, clinic: Clinic, page: Page, screenshots: Screenshots
) -> None:
    gateway = shared_hospital.gateway
    await sign_in(page, gateway, clinic.stranger, then=f"/patients/{clinic.patient}")
    await expect(page.get_by_role("heading", level=1)).to_have_text("This patient is not in your care")
    await screenshots.take(page, "refused-offered")
    await check_accessibility(page)

    reason = page.get_by_label("Why do you need the record now?")
    await reason.fill("need it")
    await reason.evaluate("el => el.removeAttribute('minlength')")  # as a browser without the check would send
    await page.get_by_role("button", name="Open the record in an emergency").click()
    await expect(page.locator("#reason-error")).to_have_text(
        "Say why you need the record now, in 20 to 500 characters."
    )
    await check_accessibility(page)

    await page.get_by_label("Why do you need the record now?").fill(
        "Brought in unconscious to the emergency department; medication history needed now."
    )
    await page.get_by_role("button", name="Open the record in an emergency").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"{clinic.family}, Zeynep")
    banner = page.locator(".usa-alert--emergency")
    await expect(banner).to_contain_text("You are reading this record under emergency access until")
    await screenshots.take(page, "emergency-access")
    await check_accessibility(page)
