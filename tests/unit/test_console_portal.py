"""The patient portal in memory (the console over the in-memory API): the invitation's code links
the record; an invoice is paid online once however often the form is sent (its idempotency key),
through the provider's checkout, whose refusals are said plainly; the choices of how to be reached
are the API's request; who saw the record hides the patient's own visits unless asked; and only
patients have a portal.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from his.console.domain import Answer
from his.kernel.json import JsonObject
from his.testing.console import Call
from tests.support.console import USER, Desk, console_desk

PATIENT = str(uuid.uuid4())
INVOICE = str(uuid.uuid4())
REF = "cs_test_Ab3_x"
RECORD: JsonObject = {"id": PATIENT, "mrn": "MRN-00000007", "given_name": "Ahmet", "family_name": "Şahin"}


@pytest.fixture
async def patient() -> AsyncIterator[Desk]:
    async with console_desk() as desk:
        await desk.sign_in(["PATIENT"])
        desk.api.answer("GET", "/api/patients/me", Answer(200, RECORD))
        desk.api.answer("GET", "/api/practitioners", Answer(200, {"items": []}))
        yield desk


def sent(desk: Desk, method: str, path: str) -> list[Call]:
    return [c for c in desk.api.calls if c.method == method and c.path == path]


async def test_an_unlinked_account_is_asked_for_the_invitations_code(patient: Desk) -> None:
    patient.api.answer("GET", "/api/patients/me", Answer(404, {"status": 404}))
    r = await patient.client.get("/portal")
    assert r.status_code == 200 and 'action="/portal/link"' in r.text
    patient.api.answer("POST", "/api/patients/invitations/redeem", Answer(409, {"status": 409}))
    refused = await patient.post("/portal/link", {"code": " abcd-efgh-jkmn "})
    assert refused.status_code == 409 and "Ask the front desk for a new one" in refused.text
    assert sent(patient, "POST", "/api/patients/invitations/redeem")[-1].body == {"code": "ABCD-EFGH-JKMN"}
    patient.api.answer("POST", "/api/patients/invitations/redeem", Answer(200, RECORD))
    r = await patient.post("/portal/link", {"code": "ABCD-EFGH-JKMN"})
    assert r.status_code == 303 and r.headers["location"] == "/portal?linked=1"


async def test_an_invoice_is_paid_online_once_through_the_providers_checkout(patient: Desk) -> None:
    invoice: JsonObject = {
        "id": INVOICE,
        "status": "open",
        "currency": "TRY",
        "service_date": "2027-12-31",
        "total": "1000.00",
        "insurer_share": "800.00",
        "patient_share": "200.00",
        "outstanding": "200.00",
        "payer": "SGK",
        "lines": [],
    }
    patient.api.answer("GET", f"/api/invoices/{INVOICE}", Answer(200, invoice))
    page = await patient.client.get(f"/portal/invoices/{INVOICE}")
    assert page.status_code == 200 and "Pay TRY\xa0200.00 online" in page.text
    key = page.text.split('name="key" value="', 1)[1].split('"', 1)[0]
    assert uuid.UUID(key)
    opened: JsonObject = {"checkout_url": f"http://127.0.0.1:4004/api/test-payment-provider/checkout/{REF}"}
    patient.api.answer("POST", f"/api/invoices/{INVOICE}/online-payments", Answer(201, opened))
    form = {"key": key, "amount": "200.00", "currency": "TRY"}
    for _ in range(2):  # sent twice (a double click): the same key both times
        r = await patient.post(f"/portal/invoices/{INVOICE}/pay", form)
        assert r.status_code == 303 and r.headers["location"] == f"/portal/checkout/{REF}?invoice={INVOICE}"
    calls = sent(patient, "POST", f"/api/invoices/{INVOICE}/online-payments")
    assert [c.body for c in calls] == [{"amount": "200.00", "currency": "TRY"}] * 2
    assert [c.headers for c in calls] == [{"idempotency-key": key}] * 2
    assert (await patient.post(f"/portal/invoices/{INVOICE}/pay", {**form, "key": "x"})).status_code == 422

    session: JsonObject = {"amount": "200.00", "currency": "TRY", "test_cards": {"4242424242424242": "succeeded"}}
    patient.api.answer("GET", f"/api/test-payment-provider/checkout/{REF}", Answer(200, session))
    patient.api.answer("POST", f"/api/test-payment-provider/checkout/{REF}", Answer(402, {"status": 402}))
    card = {"card_number": "4000 0000 0000 0002", "expiry": "12/30", "cvc": "123", "invoice": INVOICE}
    declined = await patient.post(f"/portal/checkout/{REF}", card)
    assert declined.status_code == 402 and "The card was declined" in declined.text
    assert sent(patient, "POST", f"/api/test-payment-provider/checkout/{REF}")[-1].body == {
        "card_number": "4000000000000002",
        "expiry": "12/30",
        "cvc": "123",
    }
    patient.api.answer("POST", f"/api/test-payment-provider/checkout/{REF}", Answer(200, {"status": "succeeded"}))
    r = await patient.post(f"/portal/checkout/{REF}", {**card, "card_number": "4242424242424242"})
    assert r.status_code == 303 and r.headers["location"] == f"/portal/invoices/{INVOICE}?paid=1"
    assert (await patient.client.get("/portal/checkout/not-a-reference")).status_code == 404


async def test_how_to_be_reached_is_the_apis_request(patient: Desk) -> None:
    patient.api.answer("PUT", "/api/notifications/preferences", Answer(200, {}))
    r = await patient.post("/portal/preferences", {"sms": "yes"})
    assert r.status_code == 303
    (put,) = sent(patient, "PUT", "/api/notifications/preferences")
    assert put.body == {"email": False, "sms": True, "opted_out": False} and put.params == {"patient_id": PATIENT}


async def test_who_saw_my_record_hides_my_own_visits_unless_asked(patient: Desk) -> None:
    trail: JsonObject = {
        "items": [
            {"at": "2027-12-31T10:00:00+00:00", "actor_id": str(USER), "actor_roles": ["PATIENT"], "action": "read",
             "purpose": "own_record", "flagged": False},
            {"at": "2027-12-31T09:00:00+00:00", "actor_id": str(uuid.uuid4()), "actor_roles": ["DOCTOR"],
             "action": "read", "purpose": "emergency", "flagged": True},
            {"at": "2027-12-31T08:00:00+00:00", "actor_id": "x", "actor_roles": ["spiffe://his.local/service/billing"],
             "action": "read", "purpose": "billing", "flagged": False},
        ]
    }  # fmt: skip
    patient.api.answer("GET", "/api/audit", Answer(200, trail))
    r = await patient.client.get("/portal/accesses")
    assert "You, in the portal" not in r.text and "Emergency access" in r.text and "Billing system" in r.text
    assert "spiffe://" not in r.text
    r = await patient.client.get("/portal/accesses", params={"mine": "true"})
    assert "You, in the portal" in r.text


async def test_only_patients_have_a_portal() -> None:
    async with console_desk() as desk:
        await desk.sign_in(["RECEPTIONIST"])
        for path in ("/portal", "/portal/accesses", "/portal/preferences", "/portal/book"):
            assert (await desk.client.get(path)).status_code == 403, path


async def test_who_saw_my_record_names_the_staff(patient: Desk) -> None:
    clerk = str(uuid.uuid4())
    trail: JsonObject = {
        "items": [
            {"at": "2027-12-31T09:00:00+00:00", "actor_id": clerk, "actor_roles": ["RECEPTIONIST"],
             "action": "create", "purpose": "registration", "flagged": False},
            {"at": "2027-12-31T08:00:00+00:00", "actor_id": "spiffe://his.local/service/notifications",
             "actor_roles": ["spiffe://his.local/service/notifications"], "action": "read",
             "purpose": "notifications", "flagged": False},
        ]
    }  # fmt: skip
    patient.api.answer("GET", "/api/audit", Answer(200, trail))
    patient.api.answer("GET", "/api/staff", Answer(200, {"items": [{"id": clerk, "full_name": "Ayşe Desk"}]}))
    r = await patient.client.get("/portal/accesses")
    assert "Ayşe Desk" in r.text and "Registration at the front desk" in r.text and "Automatic messages" in r.text
    (asked,) = [c for c in patient.api.calls if c.path == "/api/staff"]
    assert asked.params == [("id", clerk)]
