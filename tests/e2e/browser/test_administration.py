"""Administration in a real browser under `his up`: an administrator finds a nurse's account,
disables it while the nurse is signed in elsewhere, and that session ends (the nurse's next page
sends them to sign in); the account is enabled again and gets another role; a ward is added and
its price corrected; the roles that need
a second factor are read and kept; a doctor's emergency access reaches the review queue and is
escalated with a note. Every page passes the accessibility check; no script, style or image is
refused by the Content-Security-Policy."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx
from playwright.async_api import Browser, Page, expect

from tests.e2e.browser.test_console_sign_in import console_errors, sign_in
from tests.e2e.harness import ADMIN, Hospital, create_user, register_patient
from tests.support.browser import Screenshots, check_accessibility
from tests.support.waiting import wait_for

PASSWORD = "copper kettle beside the ward"


async def test_an_administrator_disables_a_signed_in_nurse_and_the_session_ends(
    shared_hospital: Hospital, page: Page, browser: Browser, screenshots: Screenshots
) -> None:
    gateway, admin = shared_hospital.gateway, shared_hospital.login()
    tag = time.time_ns()
    address, name = f"nurse-admin-{tag}@hospital.example", f"Selin Admin{tag % 100000}"
    body = {"email": address, "password": PASSWORD, "full_name": name, "roles": ["NURSE"]}
    made = httpx.post(f"{gateway}/api/admin/users", json=body, headers=admin, timeout=10)
    assert made.status_code == 201, made.text
    errors = console_errors(page)

    nurse_context = await browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 800})
    try:
        nurse = await nurse_context.new_page()
        await nurse.goto(f"{gateway}/sign-in")
        await sign_in(nurse, address, PASSWORD)
        await expect(nurse).to_have_url(f"{gateway}/day-list")

        await page.goto(f"{gateway}/sign-in")
        await sign_in(page, *ADMIN)
        await page.get_by_role("navigation", name="Main menu").get_by_role("link", name="Administration").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text("Accounts")
        await check_accessibility(page)
        await page.get_by_label("Find an account").fill(name)
        await page.get_by_role("button", name="Search").click()
        await page.get_by_role("link", name=name).click()
        await expect(page.get_by_role("heading", level=1)).to_have_text(name)
        await screenshots.take(page, "account")
        await check_accessibility(page)

        await page.get_by_role("button", name="Disable the account").click()
        await expect(page.get_by_role("status")).to_have_text(
            "The account was disabled. Its sessions were signed out everywhere."
        )
        disabled = time.monotonic()

        async def sent_to_sign_in() -> bool:
            await nurse.goto(f"{gateway}/day-list")
            return urlsplit(nurse.url).path == "/sign-in"

        await wait_for(sent_to_sign_in, timeout=10, every=0.5, what="the nurse's session ended")
        took = time.monotonic() - disabled
        await expect(nurse.get_by_role("status")).to_have_text("Your session has ended. Sign in again to go on.")
        await sign_in(nurse, address, PASSWORD)
        await expect(nurse.get_by_role("alert")).to_be_visible()  # a disabled account does not sign in
        assert took < 5, f"the session ended {took:.1f}s after the account was disabled"

        # Enabled again, with a second role.
        await page.get_by_role("button", name="Enable the account again").click()
        await expect(page.get_by_role("status")).to_have_text("The account was enabled again.")
        await page.locator("label[for=role-LAB_TECH]").click()  # the design system's box is its label
        await page.get_by_role("button", name="Save the roles").click()
        await expect(page.get_by_role("status")).to_contain_text("The roles were changed.")
        await expect(page.get_by_label("Laboratory technician")).to_be_checked()
        await screenshots.take(page, "roles")
        await check_accessibility(page)

        # A ward: added with its beds over two rooms, then its price of a night corrected.
        ward = f"Ward {tag % 100000}"
        await page.get_by_role("link", name="Wards", exact=True).click()
        await page.get_by_role("link", name="Add a ward").click()
        await page.get_by_label("Name").fill(ward)
        await page.get_by_label("Type").fill("general")
        await page.get_by_label("Price of a night").fill("1500")
        await page.get_by_label("Beds").fill("4")
        await page.get_by_label("Rooms").fill("2")
        await check_accessibility(page)
        await page.get_by_role("button", name="Add the ward").click()
        await expect(page.get_by_role("status")).to_have_text("The ward was made, its beds all available.")
        await expect(page.locator(".his-facts")).to_contain_text("R1, R2")
        await page.get_by_label("Price of a night").fill("1750.00")
        await page.get_by_role("button", name="Save the ward").click()
        await expect(page.get_by_role("status")).to_contain_text("The ward was corrected.")
        await expect(page.locator(".his-facts")).to_contain_text("1,750.00")
        await screenshots.take(page, "ward")
        await check_accessibility(page)
        await page.get_by_role("link", name="Back to the wards").click()
        await expect(page.get_by_role("link", name=ward)).to_be_visible()
        await check_accessibility(page)

        # Making an account: the form, checked before anything is sent.
        await page.get_by_role("link", name="Accounts", exact=True).click()
        await page.get_by_role("link", name="Make an account").click()
        await page.get_by_role("button", name="Make the account").click()  # the browser's own checks first
        await expect(page.get_by_role("heading", level=1)).to_have_text("Make an account")
        await check_accessibility(page)

        # The roles that need a second factor: read, and saved as they were.
        await page.get_by_role("link", name="Second factor").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text("Second factor")
        await check_accessibility(page)
        await page.get_by_role("button", name="Save").click()
        await expect(page.get_by_role("status")).to_contain_text("Saved.")

        # A doctor without care opens a record in an emergency; the administrator escalates it.
        _, doctor = create_user(shared_hospital, admin, "DOCTOR", f"glass{tag % 100000}")
        patient = register_patient(shared_hospital, admin, f"Glass{tag % 100000}")
        reason = "Brought in unconscious by ambulance; medication history needed now."
        opened = httpx.post(
            f"{gateway}/api/patients/{patient['id']}/emergency-access",
            json={"reason": reason},
            headers=doctor,
            timeout=10,
        )
        assert opened.status_code == 201, opened.text
        await page.get_by_role("link", name="Emergency access").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text("Emergency access")
        card = page.locator("section", has_text=reason)
        await expect(card).to_contain_text(str(patient["mrn"]))
        await screenshots.take(page, "emergency-access")
        await check_accessibility(page)
        await card.get_by_label("Note (needed to escalate)").fill("Not on the emergency rota that night")
        await card.get_by_role("button", name="Escalate").click()
        await expect(page.get_by_role("status")).to_have_text("Escalated: it is to be looked into.")
        await page.get_by_role("link", name="Escalated", exact=True).click()
        await expect(page.locator("section", has_text=reason)).to_contain_text("Not on the emergency rota that night")
        await check_accessibility(page)
        assert errors == [], errors
    finally:
        await nurse_context.close()
