"""The patient portal in a real browser: a patient signs in, links their record with the code the
desk's invitation mailed them, books a time, sees it, reads who saw their record, and chooses how
to be reached — in Turkish. Every page passes the accessibility check.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from playwright.async_api import Page, expect

from tests.e2e.harness import Hospital, invite, link_by_invitation, own_account, register_patient
from tests.e2e.test_payments import stay_invoice
from tests.support.browser import Screenshots, check_accessibility
from tests.support.waiting import wait_until

PASSWORD = "a long patient passphrase 42"


async def test_a_patient_links_their_record_books_and_sees_who_read_it(
    shared_hospital: Hospital, page: Page, screenshots: Screenshots
) -> None:
    gateway = shared_hospital.gateway
    admin = shared_hospital.login()
    tag = uuid.uuid4().hex[:6]
    address = f"hasta-{tag}@example.com"
    with httpx.Client(base_url=gateway, timeout=10) as c:
        own_account(shared_hospital, address, PASSWORD, f"Ahmet Şahin {tag}")
        family = f"Şahin{tag}"
        record = {
            "given_name": "Ahmet",
            "family_name": family,
            "birth_date": "1968-09-29",
            "sex": "male",
            "email": address,
        }
        r = c.post("/api/patients", json=record, headers=admin)
        assert r.status_code == 201, r.text
        patient = r.json()["id"]
        profile = {"full_name": f"Dr. Ece Yurt {tag}", "specialty": "cardiology"}
        practitioner = c.post("/api/practitioners", json=profile, headers=admin).json()["id"]
        day = (datetime.now(UTC) + timedelta(days=2)).date()
        start = datetime(day.year, day.month, day.day, 8, tzinfo=UTC)
        shift = {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}
        assert c.post(f"/api/practitioners/{practitioner}/shifts", json=shift, headers=admin).status_code == 201
    _, code = invite(shared_hospital, admin, patient, address)

    await page.goto(f"{gateway}/")
    await page.get_by_role("button", name="Türkçe").click()  # the patient's language, before signing in
    await page.get_by_label("E-posta adresi").fill(address)
    await page.get_by_label("Parola").fill(PASSWORD)
    await page.get_by_role("button", name="Giriş yap").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Kaydınızı bağlayın")
    await check_accessibility(page)
    await page.get_by_label("Davet kodu").fill(code)
    await page.get_by_role("button", name="Kaydımı bağla").click()
    await expect(page.get_by_role("status")).to_have_text("Kaydınız hesabınıza bağlandı.")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Merhaba Ahmet")
    await screenshots.take(page, "portal")
    await check_accessibility(page)

    await page.get_by_role("link", name="Randevu ver").click()
    await page.get_by_label("Hekim").select_option(practitioner)
    await page.get_by_label("Gün").fill(day.isoformat())
    await page.get_by_label("Gün").dispatch_event("change")
    first = page.locator("#slots .usa-radio__label").first
    await expect(first).to_be_visible()
    await check_accessibility(page)
    await first.click()
    await page.get_by_role("button", name="Randevu al").click()
    await expect(page.get_by_role("status")).to_have_text("Randevu verildi.")
    row = page.get_by_role("row").filter(has_text=f"Dr. Ece Yurt {tag}")
    await expect(row).to_contain_text("Randevulu")
    await screenshots.take(page, "booked")

    await page.get_by_role("link", name="Kaydımı kim gördü").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Kaydımı kim gördü")
    await expect(page.get_by_role("row").filter(has_text="Yönetici").first).to_be_visible()  # the desk that registered
    await expect(page.get_by_role("row").filter(has_text="Kayıt").first).to_contain_text("Danışmada kayıt")
    await expect(page.get_by_role("row").filter(has_text="Otomatik mesajlar").first).to_be_visible()
    await page.get_by_role("link", name="Kendi ziyaretlerimi de göster").click()
    await expect(page.get_by_role("row").filter(has_text="Siz").first).to_be_visible()
    await screenshots.take(page, "who-saw-my-record")
    await check_accessibility(page)

    await page.get_by_role("link", name="Bildirimler").click()
    await page.locator("label[for=pref-sms]").click()
    await page.get_by_role("button", name="Kaydet").click()
    await expect(page.get_by_role("status")).to_have_text("Tercihleriniz kaydedildi.")
    await expect(page.locator("#pref-sms")).to_be_checked()
    await check_accessibility(page)


async def test_a_patient_pays_their_share_online_and_a_declined_card_is_said_plainly(
    shared_hospital: Hospital, page: Page, screenshots: Screenshots
) -> None:
    """A night on a ward under SGK leaves the patient 200.00 TRY to pay: the invoice explains the
    split, the provider's checkout (test mode) declines one test card and takes another, and the
    invoice is paid once the provider's confirmation reached billing."""
    gateway = shared_hospital.gateway
    admin = shared_hospital.login()
    address = f"payer-{uuid.uuid4().hex[:6]}@example.com"
    own_account(shared_hospital, address, PASSWORD, "Deniz Öde")
    patient = register_patient(
        shared_hospital, admin, f"Öde{uuid.uuid4().hex[:5]}", coverage={"payer": "SGK", "member_id": "SG-9"}
    )
    me = shared_hospital.login(address, PASSWORD)
    link_by_invitation(shared_hospital, admin, patient["id"], str(patient["email"]), me)
    invoice = stay_invoice(shared_hospital, admin, str(patient["id"]))

    await page.goto(f"{gateway}/")
    await page.get_by_label("E-mail address").fill(address)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.locator(f"a[href='/portal/invoices/{invoice['id']}']").click()
    await expect(page.locator(".his-facts")).to_contain_text("SGK")
    await screenshots.take(page, "invoice")
    await check_accessibility(page)
    await page.get_by_role("button", name="Pay TRY\u00a0200.00 online").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Payment")
    await check_accessibility(page)

    async def pay(card: str) -> None:
        await page.get_by_label("Card number").fill(card)
        await page.get_by_label("Expiry date (MM/YY)").fill("12/35")
        await page.get_by_label("Security code").fill("123")
        await page.get_by_role("button", name="Pay", exact=True).click()

    await pay("4000 0000 0000 0002")
    await expect(page.get_by_role("alert")).to_have_text("The card was declined. Try another card.")
    await screenshots.take(page, "declined")
    await check_accessibility(page)
    await pay("4242 4242 4242 4242")
    await expect(page.get_by_role("status")).to_contain_text("Thank you: the payment was made.")

    def confirmed() -> bool:  # the provider's confirmation reaches billing by its webhook
        r = httpx.get(f"{gateway}/api/invoices/{invoice['id']}", headers=admin, timeout=10)
        return r.status_code == 200 and r.json()["status"] == "paid"

    await asyncio.to_thread(wait_until, confirmed, what="the provider's confirmation to reach billing")
    await page.reload()
    await expect(page.locator(".his-facts")).to_contain_text("Paid")
    await screenshots.take(page, "paid")
