"""Paying an invoice under `his up`, through the gateway: a patient cannot mark their invoice paid
with any request of their own; they pay online through the embedded TEST payment provider,
whose confirmation (a webhook signed with the secret `his up` keeps under the data directory,
posted back through the gateway) is what records the money; a forged confirmation is refused;
a clerk records desk payments."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx

from tests.e2e.harness import Hospital, create_user, link_by_invitation, own_account, register_patient
from tests.support.waiting import wait_until

TEST_CARD = {"card_number": "4242 4242 4242 4242", "expiry": "12/39", "cvc": "123"}


def signed_by(secret: bytes, body: bytes) -> dict[str, str]:
    """A ``Payment-Signature`` as a provider computes it (written out here, not taken from billing)."""
    at = int(time.time())
    return {"Payment-Signature": f"t={at},v1={hmac.new(secret, f'{at}.'.encode() + body, hashlib.sha256).hexdigest()}"}


def call(method: str, url: str, auth: dict[str, str] | None = None, body: Any = None, **kw: Any) -> httpx.Response:
    return httpx.request(method, url, json=body, headers=auth or {}, timeout=20, **kw)


def stay_invoice(h: Hospital, admin: dict[str, str], patient_id: str) -> dict[str, Any]:
    """One night on a ward at 1,000.00 TRY: under SGK the patient owes 200.00."""
    gw = h.gateway
    ward = call(
        "POST",
        f"{gw}/api/wards",
        admin,
        {
            "name": f"Pay {uuid.uuid4().hex[:6]}",
            "type": "general",
            "daily_rate": "1000.00",
            "currency": "TRY",
            "beds": 1,
        },
    )
    assert ward.status_code == 201, ward.text
    doctor = call("POST", f"{gw}/api/practitioners", admin, {"full_name": "Dr. Pay", "specialty": "internal_medicine"})
    admitted = call(
        "POST",
        f"{gw}/api/admissions",
        admin,
        {"patient_id": patient_id, "ward_id": ward.json()["id"], "practitioner_id": doctor.json()["id"]},
    )
    assert admitted.status_code == 201, admitted.text
    assert call("POST", f"{gw}/api/admissions/{admitted.json()['id']}/discharge", admin).status_code == 200
    found: list[dict[str, Any]] = []

    def issued() -> bool:
        r = call("GET", f"{gw}/api/invoices", admin, params={"patient_id": patient_id})
        found[:] = [i for i in r.json()["items"] if i["status"] not in ("draft", "void")]
        return bool(found)

    wait_until(issued, what="the stay's invoice")
    return found[0]


def test_a_patient_pays_online_through_the_test_provider_and_only_its_confirmation_counts(
    shared_hospital: Hospital,
) -> None:
    h, gw = shared_hospital, shared_hospital.gateway
    admin = h.login()
    email, password = f"payer-{uuid.uuid4().hex[:8]}@example.org", "my own long passphrase"
    own_account(h, email, password, "Pay Er")
    patient = register_patient(
        h, admin, f"Payer{uuid.uuid4().hex[:6]}", coverage={"payer": "SGK", "member_id": "SG-PAY-1"}
    )
    me = h.login(email, password)
    link_by_invitation(h, admin, patient["id"], str(patient["email"]), me)
    invoice = stay_invoice(h, admin, str(patient["id"]))
    inv = f"{gw}/api/invoices/{invoice['id']}"
    assert (invoice["payer"], invoice["patient_share"], invoice["status"]) == ("SGK", "200.00", "open")

    for method in ("cash", "card", "online"):  # the patient's own word is not money
        r = call(
            "POST",
            f"{inv}/payments",
            me | {"Idempotency-Key": method},
            {"amount": "200.00", "currency": "TRY", "method": method},
        )
        assert r.status_code == 403, r.text
    forged_body = json.dumps(
        {
            "id": "evt_forged",
            "type": "payment.succeeded",
            "data": {"reference": "cs_test_x", "amount": "200.00", "currency": "TRY"},
        }
    ).encode()
    forged = httpx.post(
        f"{gw}/api/payments/webhooks/test",
        content=forged_body,
        timeout=20,
        headers=me | signed_by(b"a guess", forged_body),
    )
    assert forged.status_code == 401, forged.text

    opened = call(
        "POST",
        f"{inv}/online-payments",
        me | {"Idempotency-Key": "pay-online-1"},
        {"amount": "200.00", "currency": "TRY"},
    )
    assert opened.status_code == 201, opened.text
    intent = opened.json()
    assert (intent["status"], intent["test_mode"]) == ("pending", True)
    assert call("GET", inv, me).json()["status"] == "open"  # opening a payment is not paying

    checkout = f"{gw}{intent['checkout_url']}"  # the provider's page: no token of ours
    assert call("GET", checkout).json()["test_mode"] is True
    real = call("POST", checkout, None, {**TEST_CARD, "card_number": "4111 1111 1111 1111"})
    assert real.status_code == 422, real.text
    paid = call("POST", checkout, None, TEST_CARD)
    assert paid.status_code == 200, paid.text
    assert paid.json()["confirmed_to_billing"] is True  # posted back through the gateway, signature verified

    after = call("GET", inv, me).json()
    assert (after["status"], after["paid"], after["outstanding"]) == ("paid", "200.00", "0.00")
    payments = call("GET", f"{inv}/payments", me).json()["items"]
    assert [(p["kind"], p["amount"], p["method"]) for p in payments] == [("payment", "200.00", "online")]
    intents = call("GET", f"{inv}/online-payments", me).json()["items"]
    assert [(x["id"], x["status"]) for x in intents] == [(intent["id"], "succeeded")]
    assert call("POST", checkout, None, TEST_CARD).status_code == 409  # paid once


def test_a_clerk_records_desk_payments(shared_hospital: Hospital) -> None:
    h, gw = shared_hospital, shared_hospital.gateway
    admin = h.login()
    _, clerk = create_user(h, admin, "BILLING", "desk")
    coverage = {"payer": "SGK", "member_id": "SG-DESK"}
    patient = register_patient(h, admin, f"Desk{uuid.uuid4().hex[:6]}", coverage=coverage)
    inv = f"{gw}/api/invoices/{stay_invoice(h, admin, str(patient['id']))['id']}"
    online = call(
        "POST",
        f"{inv}/payments",
        clerk | {"Idempotency-Key": "desk-online"},
        {"amount": "50.00", "currency": "TRY", "method": "online"},
    )
    assert online.status_code == 422, online.text
    for n, method in enumerate(("cash", "card", "bank_transfer", "cash")):
        r = call(
            "POST",
            f"{inv}/payments",
            clerk | {"Idempotency-Key": f"desk-{n}"},
            {"amount": "50.00", "currency": "TRY", "method": method},
        )
        assert r.status_code == 201, r.text
    assert call("GET", inv, clerk).json()["status"] == "paid"
