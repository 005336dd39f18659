"""The payment provider's confirmation, without IO: how it is signed, what verifies, what is refused."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from his.billing.payments import (
    MalformedConfirmationError,
    SignatureError,
    confirmation_body,
    parse_confirmation,
    sign,
    verify_signature,
)
from his.billing.testmode import Card, NotATestCardError, card_outcome

SECRET = b"shared with the provider"
AT = 1_767_225_599  # 2025-12-31T23:59:59Z: signed before midnight, checked after it
BODY = confirmation_body("evt_1", "cs_test_1", Decimal("150.00"), "TRY", test_mode=True)


def test_a_fresh_signature_of_the_body_verifies_and_names_the_delivery() -> None:
    header = sign(SECRET, BODY, AT)
    assert header.startswith(f"t={AT},v1=")
    digest = verify_signature(SECRET, BODY, header, now=AT + 299)
    assert digest == header.split("v1=")[1]
    got = parse_confirmation("test", BODY, digest)
    assert (got.event_id, got.reference, got.amount, got.currency) == ("evt_1", "cs_test_1", Decimal("150.00"), "TRY")


@pytest.mark.parametrize(
    ("body", "header", "now", "reason"),
    [
        (BODY, None, AT, "missing"),
        (BODY, "v1=abc", AT, "malformed"),
        (BODY, "t=soon,v1=abc", AT, "malformed"),
        (BODY, sign(b"a guessed secret", BODY, AT), AT, "does not match"),
        (BODY.replace(b"150.00", b"1.00"), sign(SECRET, BODY, AT), AT, "does not match"),  # altered after signing
        (BODY, sign(SECRET, BODY, AT), AT + 301, "older than 300 seconds"),  # stale
        (BODY, sign(SECRET, BODY, AT), AT - 301, "older than 300 seconds"),  # from the future
    ],
)
def test_forged_altered_and_stale_signatures_are_refused(
    body: bytes, header: str | None, now: int, reason: str
) -> None:
    with pytest.raises(SignatureError, match=reason):
        verify_signature(SECRET, body, header, now=now)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"id": "evt", "type": "payment.refunded", "data": {"reference": "r", "amount": "1", "currency": "TRY"}}',
        b'{"id": "evt", "type": "payment.succeeded", "data": {"reference": "r", "amount": "-1", "currency": "TRY"}}',
        b'{"id": "evt", "type": "payment.succeeded", "data": {"reference": "r", "amount": "NaN", "currency": "TRY"}}',
        b'{"id": "evt", "type": "payment.succeeded", "data": {"amount": "1", "currency": "TRY"}}',
    ],
)
def test_a_signed_body_that_is_not_a_succeeded_payment_is_refused(body: bytes) -> None:
    with pytest.raises(MalformedConfirmationError):
        parse_confirmation("test", body, "digest")


def test_the_test_provider_takes_only_its_test_cards_on_any_day() -> None:
    new_year = date(2026, 1, 1)
    assert card_outcome(Card("4242 4242 4242 4242", "01/26", "123"), new_year) == "succeeded"
    assert card_outcome(Card("4000-0000-0000-0002", "12/30", "1234"), new_year) == "card_declined"
    for card, reason in (
        (Card("4111111111111111", "12/30", "123"), "only its test card numbers"),
        (Card("4242424242424242", "12/25", "123"), "expired"),
        (Card("4242424242424242", "13/30", "123"), "MM/YY"),
        (Card("4242424242424242", "12/30", "12"), "cvc"),
    ):
        with pytest.raises(NotATestCardError, match=reason):
            card_outcome(card, new_year)
