"""Online payments where they need the real database: the embedded TEST payment provider, whose
checkout sessions live in billing's schema, takes only test cards and posts its signed
confirmation to billing's webhook route; a confirmation that did not arrive is sent again and
applied once; twenty concurrent confirmations make one payment; and the provider port's contract
holds for the TEST provider and the in-memory fake alike.

Who may mark money as received, opening a payment and applying (or refusing) a confirmation are
unit tests over the in-memory ports and the fake provider: ``tests/unit/test_billing_use_cases.py``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from his.billing.payments import SIGNATURE_HEADER, PaymentProvider, SignatureError, confirmation_body, sign
from his.billing.testmode import Card, FakePaymentProvider, TestModeProvider
from tests.integration.test_billing import SECRET, World, key_headers, paid_invoice_setup
from tests.integration.test_billing import world as world  # noqa: PLC0414 - the fixture, used by name
from tests.support.api import bearer

TEST_CARD = {"card_number": "4242 4242 4242 4242", "expiry": "12/39", "cvc": "123"}
DECLINED = {**TEST_CARD, "card_number": "4000000000000002"}


async def my_invoice(world: World, payer: str | None = "SGK") -> tuple[str, dict[str, str]]:
    """An issued invoice of a patient whose account is ``me`` (SGK: 150.00 is theirs to pay)."""
    me = uuid.uuid4()
    inv = await paid_invoice_setup(world, payer, me)
    return inv, bearer(me, "PATIENT")


async def invoice(world: World, inv: str) -> dict[str, Any]:
    r = await world.client.get(f"/invoices/{inv}", headers=world.billing)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


async def payments(world: World) -> list[tuple[str, Decimal, str]]:
    rows = await world.db.pool.fetch("SELECT kind, amount, method FROM payment ORDER BY created_at")
    return [(r["kind"], r["amount"], r["method"]) for r in rows]


async def open_online(world: World, inv: str, me: dict[str, str], amount: str = "150.00") -> dict[str, Any]:
    r = await world.client.post(
        f"/invoices/{inv}/online-payments",
        json={"amount": amount, "currency": "TRY"},
        headers=key_headers(me, uuid.uuid4().hex),
    )
    assert r.status_code == 201, r.text
    doc: dict[str, Any] = r.json()
    return doc


def reference(intent: dict[str, Any]) -> str:
    return str(intent["checkout_url"]).rsplit("/", 1)[1]


async def test_the_test_providers_checkout_takes_only_test_cards_and_confirms_to_billing(world: World) -> None:
    """The embedded TEST provider's checkout, on its sessions in billing's schema: the page shows
    the payment in test mode, a real card is refused, a declined test card records nothing, the
    test card pays and its confirmation reaches billing's webhook, and a paid session is paid
    once. (Opening the payment and applying confirmations are unit tests over the fake provider:
    tests/unit/test_billing_use_cases.py.)"""
    inv, me = await my_invoice(world)
    intent = await open_online(world, inv, me)
    assert (intent["status"], intent["provider"], intent["test_mode"]) == ("pending", "test", True)
    checkout = f"/test-payment-provider/checkout/{reference(intent)}"
    page = (await world.client.get(checkout)).json()
    assert (page["amount"], page["currency"], page["test_mode"]) == ("150.00", "TRY", True)
    real = await world.client.post(checkout, json={**TEST_CARD, "card_number": "5555 5555 5555 4444"})
    assert real.status_code == 422 and "TEST" in real.json()["detail"]
    declined = await world.client.post(checkout, json=DECLINED)
    assert declined.status_code == 402 and declined.json()["decline_code"] == "card_declined"
    assert (await invoice(world, inv))["status"] == "open" and await payments(world) == []

    paid = await world.client.post(checkout, json=TEST_CARD)
    assert paid.status_code == 200, paid.text
    assert paid.json() == {"status": "succeeded", "test_mode": True, "confirmed_to_billing": True}
    after = await invoice(world, inv)
    assert (after["status"], after["paid"], after["outstanding"]) == ("paid", "150.00", "0.00")
    assert await payments(world) == [("payment", Decimal("150.00"), "online")]
    assert (await world.client.post(checkout, json=TEST_CARD)).status_code == 409
    received = [
        orjson.loads(x["payload"])["data"]
        for x in await world.db.pool.fetch(
            "SELECT payload FROM outbox WHERE subject = 'his.billing.payment.received.v1'"
        )
    ]
    assert [(x["amount"], x["method"], x["invoice_status"]) for x in received] == [("150.00", "online", "paid")]


def signed(
    ref: str, amount: str = "150.00", *, secret: bytes = SECRET, at: float | None = None, event: str | None = None
) -> tuple[bytes, dict[str, str]]:
    body = confirmation_body(event or f"evt_{uuid.uuid4().hex}", ref, Decimal(amount), "TRY", test_mode=True)
    return body, {SIGNATURE_HEADER: sign(secret, body, int(time.time() if at is None else at))}


async def webhook(world: World, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await world.client.post("/payments/webhooks/test", content=body, headers=headers)


async def test_twenty_concurrent_confirmations_make_one_payment(world: World) -> None:
    inv, me = await my_invoice(world)
    ref = reference(await open_online(world, inv, me))
    now = time.time()
    deliveries = [signed(ref, event="evt_same", at=now - i) for i in range(10)]
    deliveries += [signed(ref, at=now - i) for i in range(10)]
    answers = await asyncio.gather(*(webhook(world, b, h) for b, h in deliveries))
    statuses = sorted(r.json()["status"] for r in answers)
    assert {r.status_code for r in answers} == {200}, [r.text for r in answers]
    assert statuses == ["already_applied"] * 19 + ["applied"]
    assert await payments(world) == [("payment", Decimal("150.00"), "online")]
    assert (await invoice(world, inv))["paid"] == "150.00"


async def test_a_confirmation_that_did_not_arrive_is_sent_again_and_applied_once(world: World) -> None:
    assert world.provider is not None
    inv, me = await my_invoice(world)
    intent = await open_online(world, inv, me)
    deliver = world.provider.deliver

    async def down(body: bytes, headers: dict[str, str]) -> int:
        raise httpx.ConnectError("billing is down")

    world.provider.deliver = down
    r = await world.client.post(f"/test-payment-provider/checkout/{reference(intent)}", json=TEST_CARD)
    assert r.json() == {"status": "succeeded", "test_mode": True, "confirmed_to_billing": False}
    assert (await invoice(world, inv))["status"] == "open"  # the provider has the money; billing not yet
    world.provider.deliver = deliver
    assert await world.provider.redeliver() == 1
    assert await world.provider.redeliver() == 0
    assert (await invoice(world, inv))["status"] == "paid"
    assert await payments(world) == [("payment", Decimal("150.00"), "online")]


async def test_the_provider_port_contract_holds_for_the_test_provider_and_the_fake(world: World) -> None:
    """Both adapters of ``PaymentProvider``: ``start`` is idempotent on the intent id and refuses
    another amount under it; ``verify`` accepts the provider's own confirmation and nothing else."""
    delivered: list[tuple[bytes, dict[str, str]]] = []

    async def keep(body: bytes, headers: dict[str, str]) -> int:
        delivered.append((body, headers))
        return 200

    real = TestModeProvider(world.db, SECRET, keep)
    fake = FakePaymentProvider()

    async def real_confirmation(ref: str) -> tuple[bytes, dict[str, str]]:
        await real.pay(ref, Card("4242424242424242", "01/40", "999"))
        return delivered[-1]

    async def fake_confirmation(ref: str) -> tuple[bytes, dict[str, str]]:
        return fake.confirmation(ref)

    cases: list[tuple[PaymentProvider, Any]] = [(real, real_confirmation), (fake, fake_confirmation)]
    for provider, confirm in cases:
        intent = uuid.uuid4()
        first = await provider.start(intent, Decimal("42.50"), "TRY")
        assert await provider.start(intent, Decimal("42.50"), "TRY") == first and first.test_mode
        with pytest.raises(ValueError, match="another amount"):
            await provider.start(intent, Decimal("42.51"), "TRY")
        body, headers = await confirm(first.reference)
        got = provider.verify(body, headers, time.time())
        assert (got.provider, got.reference, got.amount, got.currency) == (
            provider.name,
            first.reference,
            Decimal("42.50"),
            "TRY",
        )
        with pytest.raises(SignatureError):
            provider.verify(body.replace(b"42.50", b"4.25"), headers, time.time())
        with pytest.raises(SignatureError):
            provider.verify(body, headers, time.time() + 3600)
