"""Portal invitation rules, without IO: codes, their digests, who may redeem, and when."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from his.patients.domain import (
    CODE_ALPHABET,
    Channel,
    InvalidInvitationCodeError,
    Invitation,
    InvitationCodes,
    Refusal,
    code_digest,
    invitation_expiry,
    invitation_refusal,
    may_redeem,
    normalise_code,
)

OLD, NEW = b"o" * 32, b"n" * 32
NOW = datetime(2026, 2, 28, 23, 30, tzinfo=UTC)


def test_a_code_is_twelve_unambiguous_characters_in_three_groups() -> None:
    codes = InvitationCodes([NEW])
    made = {codes.code(uuid.uuid4()) for _ in range(200)}
    assert len(made) == 200
    for code in made:
        assert re.fullmatch(r"[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}", code)
        assert not set(code.replace("-", "")) - set(CODE_ALPHABET)


def test_the_same_invitation_always_has_the_same_code_and_only_its_digest_is_kept() -> None:
    invitation = uuid.uuid4()
    code = InvitationCodes([NEW]).code(invitation)
    assert InvitationCodes([NEW]).code(invitation) == code
    digest = code_digest(code)
    assert len(digest) == 32 and code.replace("-", "").encode() not in digest
    assert InvitationCodes([NEW]).recover(invitation, digest) == code
    assert InvitationCodes([NEW]).recover(uuid.uuid4(), digest) is None


def test_a_code_made_before_a_key_rotation_is_found_with_the_older_key() -> None:
    invitation = uuid.uuid4()
    digest = code_digest(InvitationCodes([OLD]).code(invitation))
    assert InvitationCodes([NEW, OLD]).recover(invitation, digest) == InvitationCodes([OLD]).code(invitation)
    assert InvitationCodes([NEW]).recover(invitation, digest) is None  # the key is gone: so is the code


def test_the_records_key_itself_never_makes_the_code() -> None:
    """Codes use a key derived for them, so a leaked code says nothing about the records key."""
    import hashlib
    import hmac

    invitation = uuid.uuid4()
    raw = hmac.new(NEW, invitation.bytes, hashlib.sha256).digest()[:8]
    number = int.from_bytes(raw, "big")
    direct = "".join(CODE_ALPHABET[(number >> (5 * i)) & 31] for i in range(12))
    assert InvitationCodes([NEW]).code(invitation).replace("-", "") != direct


def test_a_code_is_read_as_people_type_it() -> None:
    code = InvitationCodes([NEW]).code(uuid.uuid4())
    typed = f"  {code.lower().replace('-', ' ')} "
    assert normalise_code(typed) == code.replace("-", "")
    assert code_digest(typed) == code_digest(code)
    assert normalise_code("oo1l-IIOO-0000") == "001111000000"


@pytest.mark.parametrize("text", ["", "ABC", "ABCD-EFGH-JKM", "ABCD-EFGH-JKMNP", "ABCD-EFGH-JKU!", "ABCD-EFGH-JKMU"])
def test_text_that_is_not_a_code_is_refused(text: str) -> None:
    with pytest.raises(InvalidInvitationCodeError, match="12 letters and digits"):
        normalise_code(text)


def test_only_a_patient_only_account_may_redeem() -> None:
    assert may_redeem(["PATIENT"])
    for roles in (["PATIENT", "ADMIN"], ["PATIENT", "RECEPTIONIST"], ["DOCTOR"], ["ADMIN"], []):
        assert not may_redeem(roles), roles


def test_an_invitation_is_redeemable_once_before_it_expires_while_it_is_the_latest() -> None:
    expires = invitation_expiry(NOW, 60)
    assert expires == NOW + timedelta(hours=1)

    def refusal(**kw: object) -> Refusal | None:
        args: dict[str, object] = {
            "redeemed": False,
            "revoked": False,
            "expires_at": expires,
            "now": NOW,
            "record_linked": False,
        } | kw
        return invitation_refusal(**args)  # type: ignore[arg-type]

    assert refusal() is None
    assert refusal(now=expires - timedelta(microseconds=1)) is None
    assert refusal(now=expires) is Refusal.EXPIRED
    assert refusal(redeemed=True) is Refusal.REDEEMED
    assert refusal(revoked=True) is Refusal.SUPERSEDED
    assert refusal(record_linked=True) is Refusal.RECORD_LINKED
    with pytest.raises(ValueError, match="positive"):
        invitation_expiry(NOW, 0)


def test_a_stored_invitation_is_refused_as_the_rule_says() -> None:
    expires = invitation_expiry(NOW, 60)
    issued = Invitation(uuid.uuid4(), uuid.uuid4(), b"d" * 32, Channel.SMS, uuid.uuid4(), NOW, expires)
    assert issued.refusal(NOW, record_linked=False) is None
    assert issued.refusal(expires, record_linked=False) is Refusal.EXPIRED
    assert issued.refusal(NOW, record_linked=True) is Refusal.RECORD_LINKED
    redeemed = replace(issued, redeemed_at=NOW, redeemed_by=uuid.uuid4())
    assert redeemed.refusal(NOW, record_linked=True) is Refusal.REDEEMED
    assert replace(issued, revoked_at=NOW).refusal(NOW, record_linked=False) is Refusal.SUPERSEDED
