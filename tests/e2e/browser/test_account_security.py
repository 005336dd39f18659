"""Account security in a real browser under `his up`: an administrator requires a second factor of
a laboratory technician's role; the technician signs in, meets the enrolment, types the key the
page spells out into an authenticator (pyotp here) and its first code, keeps the recovery codes,
signs out and in again with a fresh code; then forgets the password, follows the link the
hospital mailed, chooses a new one and signs in with it and a recovery code. Every page passes the
accessibility check; no script, style or image is refused by the Content-Security-Policy.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
from playwright.async_api import Page, expect

from tests.e2e.browser.test_console_sign_in import console_errors
from tests.e2e.harness import Hospital, mail_to
from tests.support.browser import Screenshots, check_accessibility
from tests.support.waiting import wait_for

PASSWORD = "quartz lantern over the harbour"
NEW_PASSWORD = "violet harbour under the lantern"


async def sign_in(page: Page, email: str, password: str, code: str | None = None) -> None:
    await page.get_by_label("E-mail address").fill(email)
    await page.get_by_label("Password", exact=True).fill(password)
    if code is not None:
        await page.get_by_label("Code from your authenticator app, or a recovery code").fill(code)
    await page.get_by_role("button", name="Sign in").click()


async def test_a_second_factor_at_sign_in_and_a_forgotten_password(
    shared_hospital: Hospital, page: Page, screenshots: Screenshots
) -> None:
    gateway, admin = shared_hospital.gateway, shared_hospital.login()
    address = f"lab-console-{time.time_ns()}@hospital.example"
    body = {"email": address, "password": PASSWORD, "full_name": "Lab Console", "roles": ["LAB_TECH"]}
    assert httpx.post(f"{gateway}/api/admin/users", json=body, headers=admin, timeout=10).status_code == 201
    policy = httpx.put(f"{gateway}/api/admin/mfa-policy", json={"roles": ["LAB_TECH"]}, headers=admin, timeout=10)
    assert policy.status_code == 200, policy.text
    errors = console_errors(page)
    try:
        # The role needs a second factor: the right password leads to enrolling one.
        await page.goto(f"{gateway}/sign-in")
        await sign_in(page, address, PASSWORD)
        await expect(page.get_by_role("heading", level=1)).to_have_text("Set up an authenticator app")
        await expect(page.get_by_role("img", name="QR code to scan with an authenticator app")).to_be_visible()
        await screenshots.take(page, "enrol")
        await check_accessibility(page)
        app = pyotp.TOTP("".join((await page.locator("#secret").inner_text()).split()))
        await page.get_by_label("Password", exact=True).fill(PASSWORD)
        await page.get_by_label("Code from your authenticator app").fill(app.now())
        await page.get_by_role("button", name="Confirm").click()

        await expect(page.get_by_role("heading", level=1)).to_have_text("Your recovery codes")
        codes = await page.locator(".his-codes code").all_inner_texts()
        assert len(codes) == 10 and all(re.fullmatch(r"\w{4}-\w{4}-\w{4}", c) for c in codes), codes
        await screenshots.take(page, "recovery-codes")
        await check_accessibility(page)
        await page.get_by_role("link", name="I have stored them: continue").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text("Welcome")
        await page.get_by_role("button", name="Sign out").click()

        # Signing in again asks for a code; the step after the one used is still accepted.
        await sign_in(page, address, PASSWORD)
        await expect(page.get_by_role("status")).to_contain_text("Your account has a second factor")
        await expect(page.get_by_label("E-mail address")).to_have_value(address)
        await screenshots.take(page, "code-asked")
        await check_accessibility(page)
        await sign_in(page, address, PASSWORD, app.at(time.time() + app.interval))
        await expect(page.get_by_role("heading", level=1)).to_have_text("Welcome")
        await page.get_by_role("link", name="Your account").click()
        await expect(page.get_by_role("heading", level=1)).to_have_text("Your account")
        await screenshots.take(page, "account")
        await check_accessibility(page)
        await page.get_by_role("button", name="Sign out").click()

        # A forgotten password: the link arrives in the hospital's maildir.
        await page.get_by_role("link", name="Forgot your password?").click()
        await page.get_by_label("E-mail address").fill(address)
        await page.get_by_role("button", name="Send me a link").click()
        await expect(page.get_by_role("status")).to_contain_text("If an account has this address, a link")
        await screenshots.take(page, "link-sent")
        await check_accessibility(page)
        links: list[str] = []

        async def mailed() -> bool:
            for msg in mail_to(shared_hospital, address).values():
                links.extend(re.findall(r"https?://\S+/password-reset\?token=\S+", msg.get_content()))
            return bool(links)

        await wait_for(mailed, what="the reset link in the maildir")
        # The link names the console's page; opened at this hospital's gateway, whose port is a
        # free one (identity's HIS_PUBLIC_URL under `his up` is the default address, port 4004).
        link = urlsplit(links[0])
        assert link.path == "/password-reset" and list(parse_qs(link.query)) == ["token"], links
        opened = await page.goto(f"{gateway}{link.path}?{link.query}")
        assert opened is not None and opened.headers["referrer-policy"] == "same-origin"
        assert opened.headers["cache-control"] == "no-store"
        await page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        await page.get_by_label("New password again").fill(NEW_PASSWORD)
        await screenshots.take(page, "new-password")
        await check_accessibility(page)
        await page.get_by_role("button", name="Set the new password").click()
        await expect(page.get_by_role("status")).to_have_text("Your password was changed. Sign in with the new one.")

        # The new password, and the second factor still asked: a recovery code stands in for it.
        await sign_in(page, address, NEW_PASSWORD)
        await expect(page.get_by_label("Code from your authenticator app, or a recovery code")).to_be_visible()
        await sign_in(page, address, NEW_PASSWORD, codes[0])
        await expect(page.get_by_role("heading", level=1)).to_have_text("Welcome")
        assert errors == [], errors
    finally:
        reset = httpx.put(f"{gateway}/api/admin/mfa-policy", json={"roles": []}, headers=admin, timeout=10)
        assert reset.status_code == 200, reset.text


async def test_a_patient_creates_an_account_and_confirms_the_address_with_the_mailed_link(
    shared_hospital: Hospital, page: Page, screenshots: Screenshots
) -> None:
    """From the sign-in page: the registration form (its errors beside its fields), the same
    answer whoever has the address, the link from the hospital's maildir, the language changed on
    the link's page without losing the link, the address confirmed with the password, and the
    patient signed in to the portal, where the record is linked next."""
    gateway = shared_hospital.gateway
    address = f"new-patient-{time.time_ns()}@example.org"
    errors = console_errors(page)
    await page.goto(f"{gateway}/sign-in")
    await page.get_by_role("link", name="New patient? Create an account").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Create an account")
    await check_accessibility(page)
    await page.get_by_label("Full name").fill("Deniz Yeni")
    await page.get_by_label("E-mail address").fill(address)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_label("Password again").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Create the account").click()
    await expect(page.locator("#password_again-error")).to_have_text("The two passwords are not the same.")
    await screenshots.take(page, "register-errors")
    await check_accessibility(page)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_label("Password again").fill(PASSWORD)
    await page.get_by_role("button", name="Create the account").click()
    await expect(page.get_by_role("status")).to_contain_text("Check your e-mail.")
    await screenshots.take(page, "register-sent")
    await check_accessibility(page)

    # Not yet: the address is not confirmed.
    await page.get_by_role("link", name="Back to signing in").click()
    await sign_in(page, address, PASSWORD)
    await expect(page.get_by_role("alert")).to_contain_text("Confirm your address first")
    await check_accessibility(page)

    links: list[str] = []

    async def mailed() -> bool:
        for msg in mail_to(shared_hospital, address).values():
            links.extend(re.findall(r"https?://\S+/verify-email\?token=\S+", msg.get_content()))
        return bool(links)

    await wait_for(mailed, what="the confirmation link in the maildir")
    link = urlsplit(links[0])
    opened = await page.goto(f"{gateway}{link.path}?{link.query}")
    assert opened is not None and opened.headers["referrer-policy"] == "same-origin"
    await expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your address")
    # In Turkish, the page the link opened stays that page, its token kept.
    await page.get_by_role("button", name="Türkçe").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Adresinizi doğrulayın")
    assert urlsplit(page.url).query == link.query
    await screenshots.take(page, "confirm-tr")
    await check_accessibility(page)
    await page.get_by_label("Parola", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Onayla").click()
    await expect(page.get_by_role("status")).to_have_text("Adresiniz doğrulandı. Bu adresle giriş yapın.")
    await page.get_by_label("E-posta adresi").fill(address)
    await page.get_by_label("Parola", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Giriş yap").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Kaydınızı bağlayın")
    await screenshots.take(page, "portal-first")
    await check_accessibility(page)
    assert errors == [], errors
