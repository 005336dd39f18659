"""The front desk in a real browser, as a receptionist works: find a patient as you type, register
a new one (warned of a likely duplicate), book the first free time and print its slip, then
check the patient in on the practitioner's day list. Every page passes the accessibility check.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.e2e.harness import Hospital
from tests.support.browser import Screenshots, check_accessibility

PASSWORD = "long enough staff passphrase"


@dataclass(frozen=True)
class Desk:
    email: str
    practitioner: str
    doctor_name: str
    tomorrow: str


@pytest.fixture(scope="module")
def desk(shared_hospital: Hospital) -> Desk:
    """A receptionist's account, and a practitioner with a morning shift tomorrow (UTC, the shared
    hospital's time zone)."""
    admin = shared_hospital.login()
    tag = uuid.uuid4().hex[:6]
    email = f"desk-{tag}@hospital.example"
    with httpx.Client(base_url=shared_hospital.gateway, timeout=10) as c:
        body = {"email": email, "password": PASSWORD, "full_name": f"Ayşe Desk {tag}", "roles": ["RECEPTIONIST"]}
        assert c.post("/api/admin/users", json=body, headers=admin).status_code == 201
        name = f"Dr. Deniz Öztürk {tag}"
        r = c.post("/api/practitioners", json={"full_name": name, "specialty": "cardiology"}, headers=admin)
        assert r.status_code == 201, r.text
        practitioner = r.json()["id"]
        day = (datetime.now(UTC) + timedelta(days=1)).date()
        start = datetime(day.year, day.month, day.day, 9, tzinfo=UTC)
        shift = {"start": start.isoformat(), "end": (start + timedelta(hours=3)).isoformat()}
        r = c.post(f"/api/practitioners/{practitioner}/shifts", json=shift, headers=admin)
        assert r.status_code == 201, r.text
    return Desk(email, practitioner, name, day.isoformat())


async def sign_in(page: Page, gateway: str, email: str) -> None:
    await page.goto(f"{gateway}/")
    await page.get_by_label("E-mail address").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()


async def test_a_receptionist_registers_a_patient_books_prints_and_checks_in(
    shared_hospital: Hospital, desk: Desk, page: Page, screenshots: Screenshots
) -> None:
    gateway = shared_hospital.gateway
    family = f"Yılmaz{uuid.uuid4().hex[:5]}"
    await sign_in(page, gateway, desk.email)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Front desk")  # the receptionist's home
    await check_accessibility(page)

    # Search as you type: nobody yet.
    await page.get_by_label("Find a patient").press_sequentially(family[:8])
    await expect(page.locator("#results")).to_contain_text("No patient matches")
    await screenshots.take(page, "search-nobody")

    # Register them.
    await page.get_by_role("link", name="Register a patient").click()
    await check_accessibility(page)
    await page.get_by_role("button", name="Register").click()  # nothing filled in
    await expect(page.get_by_text("Some details need correcting")).to_be_visible()
    given = page.get_by_label("Given name")
    await expect(given).to_have_attribute("aria-invalid", "true")
    await screenshots.take(page, "register-errors")
    await check_accessibility(page)
    await given.fill("Elif")
    await page.get_by_label("Family name").fill(family)
    await page.get_by_label("Birth date").fill("14.02.1987")
    await page.locator("label[for=sex-female]").click()  # the design system draws the radio on its label
    await page.get_by_label("E-mail address (optional)").fill(f"{family.lower()}@example.com")
    await page.get_by_label("Payer", exact=True).select_option("SGK")
    await page.get_by_label("Member number (with a payer)").fill("12345678901")
    await page.get_by_role("button", name="Register").click()
    await expect(page.get_by_role("status")).to_contain_text("Registered, with medical record number")
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"{family}, Elif")
    patient_url = page.url.split("?")[0]
    await screenshots.take(page, "registered")
    await check_accessibility(page)

    # The same person again: the desk is warned, and can open the record instead.
    await page.goto(f"{gateway}/patients/new")
    await page.get_by_label("Given name").fill("Elif")
    await page.get_by_label("Family name").fill(family)
    await page.get_by_label("Birth date").fill("1987-02-14")
    await page.locator("label[for=sex-female]").click()  # the design system draws the radio on its label
    await page.get_by_role("button", name="Register").click()
    await expect(page.get_by_role("heading", name="This patient may be registered already")).to_be_visible()
    await screenshots.take(page, "duplicate-warning")
    await check_accessibility(page)
    await page.get_by_role("link", name=f"{family}, Elif").click()
    assert page.url.split("?")[0] == patient_url

    # Found as you type now, by name.
    await page.goto(f"{gateway}/front-desk")
    await page.get_by_label("Find a patient").press_sequentially(family)
    await expect(page.get_by_role("link", name=f"{family}, Elif")).to_be_visible()

    # The first free time of any cardiologist from tomorrow on: whose it is, the slot says.
    await page.goto(patient_url)
    await page.get_by_role("link", name="Book an appointment").click()
    await page.get_by_label("Specialty (for the first free)").select_option("cardiology")
    await page.get_by_label("Day").fill(desk.tomorrow)
    await page.get_by_label("Day").dispatch_event("change")
    first = page.locator("#slots .usa-radio__label").first
    await expect(first).to_contain_text(" · Dr. ")
    await screenshots.take(page, "first-free-times")
    await check_accessibility(page)

    # Book: the practitioner, tomorrow, their first free time; then the slip.
    await page.get_by_label("Practitioner").select_option(desk.practitioner)
    await page.get_by_label("Day").dispatch_event("change")
    first = page.locator("#slots .usa-radio__label").first
    await expect(first).not_to_contain_text(" · Dr. ")  # one practitioner's: the times alone
    await screenshots.take(page, "free-times")
    await first.click()
    await page.get_by_role("button", name="Book", exact=True).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Appointment slip")
    await expect(page.locator(".his-slip")).to_contain_text(desk.doctor_name)
    await expect(page.locator(".his-slip")).to_contain_text("9:00")
    await screenshots.take(page, "slip")
    await check_accessibility(page)
    await page.emulate_media(media="print")
    await expect(page.locator(".usa-header")).to_be_hidden()  # the printed slip is the slip alone
    await page.emulate_media(media="screen")

    # Move it a slot later, then correct the patient's phone.
    await page.get_by_role("link", name="Back to the patient").click()
    await page.get_by_role("link", name="Move", exact=True).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Move the appointment")
    await check_accessibility(page)
    await page.locator(".usa-radio__label").first.click()  # 9:20: 9:00 is this appointment's
    await page.get_by_role("button", name="Move", exact=True).click()
    await expect(page.get_by_role("status")).to_have_text("The appointment is moved.")
    await page.get_by_role("link", name="Correct the details").click()
    await check_accessibility(page)
    await page.get_by_label("Phone (optional)").fill("+90 555 123 45 67")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("status")).to_have_text("The patient's details are saved.")
    await expect(page.locator(".his-facts")).to_contain_text("+90 555 123 45 67")

    # The day list: the patient by name, checked in from there.
    await page.goto(f"{gateway}/day-list?practitioner_id={desk.practitioner}&day={desk.tomorrow}")
    row = page.get_by_role("row").filter(has_text=family)
    await expect(row).to_contain_text("Booked")
    await expect(row).to_contain_text("9:20")  # where it was moved
    await screenshots.take(page, "day-list")
    await check_accessibility(page)
    await row.get_by_role("button", name="Check in").click()
    await expect(page.get_by_role("row").filter(has_text=family)).to_contain_text("Checked in")


async def test_the_day_list_follows_the_day_without_reloading(
    shared_hospital: Hospital, desk: Desk, page: Page, screenshots: Screenshots
) -> None:
    """A day list is open; the desk books, another desk checks in: the list shows each change
    by itself (server-sent events from the bus, then the list asked again through the API)."""
    gateway = shared_hospital.gateway
    await sign_in(page, gateway, desk.email)
    await page.goto(f"{gateway}/day-list?practitioner_id={desk.practitioner}&day={desk.tomorrow}")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Day list")
    admin = shared_hospital.login()
    family = f"Canlı{uuid.uuid4().hex[:5]}"
    with httpx.Client(base_url=gateway, timeout=10, headers=admin) as c:
        patient = c.post(
            "/api/patients",
            json={"given_name": "Kerem", "family_name": family, "birth_date": "1990-01-02", "sex": "male"},
        ).json()["id"]
        free = c.get(f"/api/practitioners/{desk.practitioner}/slots", params={"date": desk.tomorrow}).json()["items"]
        slot = free[-1]
        body = {"patient_id": patient, "practitioner_id": desk.practitioner, "service": "consultation", **slot}
        r = c.post("/api/appointments", json=body)
        assert r.status_code == 201, r.text
        row = page.get_by_role("row").filter(has_text=family)
        await expect(row).to_contain_text("Booked", timeout=10_000)
        await screenshots.take(page, "booked-elsewhere")
        assert c.post(f"/api/appointments/{r.json()['id']}/check-in").status_code == 200
        await expect(row).to_contain_text("Checked in", timeout=10_000)
    await check_accessibility(page)


async def test_booking_works_with_the_keyboard_alone(
    shared_hospital: Hospital, desk: Desk, page: Page, screenshots: Screenshots
) -> None:
    """From the patient's record to the slip without a mouse: Tab, arrows, Space and Enter."""
    gateway = shared_hospital.gateway
    admin = shared_hospital.login()
    family = f"Klavye{uuid.uuid4().hex[:5]}"
    with httpx.Client(base_url=gateway, timeout=10, headers=admin) as c:
        body = {"given_name": "Can", "family_name": family, "birth_date": "2001-03-04", "sex": "male"}
        patient = c.post("/api/patients", json=body).json()["id"]
    await sign_in(page, gateway, desk.email)
    await page.goto(f"{gateway}/patients/{patient}")

    async def tab_to(name: str, limit: int = 40) -> None:
        for _ in range(limit):
            await page.keyboard.press("Tab")
            focused = await page.evaluate(
                "(() => { const e = document.activeElement; const l = e.labels && e.labels[0];"
                " return (l ? l.innerText : e.innerText || e.value || '').trim(); })()"
            )
            if focused.startswith(name):
                return
        raise AssertionError(f"{name!r} cannot be reached with Tab")

    await tab_to("Book an appointment")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Book an appointment")
    await tab_to("Practitioner")
    name = (await page.locator(f"#practitioner_id option[value='{desk.practitioner}']").inner_text()).strip()
    await page.keyboard.type(name[:12])  # a select jumps to the option typed
    await expect(page.get_by_label("Practitioner")).to_have_value(desk.practitioner)
    await tab_to("Day")
    y, m, d = desk.tomorrow.split("-")
    await page.keyboard.type(f"{m}{d}{y}")  # the date field's own order in this locale (en-GB: dd/mm/yyyy)
    if await page.get_by_label("Day").input_value() != desk.tomorrow:
        await page.keyboard.press("Shift+Tab")
        await tab_to("Day")
        await page.keyboard.type(f"{d}{m}{y}")
    await expect(page.get_by_label("Day")).to_have_value(desk.tomorrow)
    await page.keyboard.press("Tab")  # leaving the field tells htmx the choice changed
    slot = page.locator("#slots input[type=radio]").first
    await expect(slot).to_have_attribute("value", re.compile(desk.tomorrow))  # the day's times swapped in
    await tab_to("Show free times")
    await page.keyboard.press("Tab")  # the first free time
    await page.keyboard.press("Space")
    await expect(slot).to_be_checked()
    await tab_to("Book")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Appointment slip")
    await expect(page.locator(".his-slip")).to_contain_text(family)
    await screenshots.take(page, "slip-by-keyboard")
