"""The second factor through identity's routes over the in-memory ports: an authenticator
enrolled and confirmed, codes at sign-in (each step once, the steps either side accepted),
recovery codes used once, the roles an administrator says must have one, enrolment at a sign-in
that cannot get a token, and a lost phone reset by an administrator.

The service and its fake clock on the hard dates are those of ``test_identity_use_cases``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from his.access import Role
from his.events.identity import SecondFactorEnabled, SecondFactorPolicyChanged, SecondFactorReset
from his.identity.mfa import aad, matching_step, new_recovery_codes, recovery_hash, secrets_cipher
from his.identity.throttles import Throttle
from his.kernel.crypto import DecryptionError
from tests.unit.test_identity_accounts import admin_of, patch, staff
from tests.unit.test_identity_use_cases import PASSPHRASE, PASSWORD, Idp, Make, idp, make

__all__ = ["idp", "make"]  # the fixtures, shared with test_identity_use_cases


@pytest.fixture
async def lenient(make: Make) -> Idp:
    """Identity whose accounts take fifty failures: these tests type wrong codes on purpose."""
    return await make(throttle=Throttle(account_limit=50, ip_limit=1000))


def code(idp: Idp, secret: str, *, steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(idp.clock() + timedelta(seconds=30 * steps))


async def login(idp: Idp, address: str, code: str | None = None) -> dict[str, object]:
    body = {"email": address, "password": PASSWORD} | ({"code": code} if code else {})
    r = await idp.client.post("/auth/login", json=body, headers={"x-his-client-ip": "192.0.2.1"})
    return {"status": r.status_code, **r.json()}


async def enrolled(idp: Idp, address: str) -> tuple[str, list[str]]:
    """Enrol the account's authenticator with a token of its own: the secret and recovery codes."""
    holder = await idp.as_holder((await idp.tokens(address))["access_token"])
    r = await idp.client.post("/auth/mfa/totp", headers=holder)
    assert r.status_code == 200, r.text
    secret, uri = r.json()["secret"], r.json()["uri"]
    assert uri.startswith("otpauth://totp/his:") and f"secret={secret}" in uri and "issuer=his" in uri
    wrong = await idp.client.post("/auth/mfa/totp/verify", json={"code": "000000"}, headers=holder)
    assert wrong.status_code == 403
    ok = await idp.client.post("/auth/mfa/totp/verify", json={"code": code(idp, secret)}, headers=holder)
    assert ok.status_code == 200, ok.text
    again = await idp.client.post("/auth/mfa/totp", headers=holder)
    assert again.status_code == 409  # a second factor is reset by an administrator, not replaced
    return secret, ok.json()["recovery_codes"]


async def test_a_user_enrols_and_signs_in_with_codes_each_used_once(lenient: Idp) -> None:
    idp = lenient
    user_id, address = await staff(idp, "Dr Careful", Role.DOCTOR)
    secret, recovery = await enrolled(idp, address)
    assert len(recovery) == 10 and len(set(recovery)) == 10
    assert idp.fake.events(SecondFactorEnabled) == [SecondFactorEnabled(user_id=user_id)]
    needed = await login(idp, address)
    assert needed["status"] == 401 and needed["code"] == "mfa_required"
    idp.clock.advance(timedelta(seconds=30))
    first = code(idp, secret)
    assert (await login(idp, address, first))["status"] == 200
    replay = await login(idp, address, first)
    assert replay["status"] == 401 and replay["detail"] == "invalid code"  # a code is used once
    idp.clock.advance(timedelta(seconds=30))
    assert (await login(idp, address, code(idp, secret, steps=-1)))["status"] == 401  # older than the last used
    assert (await login(idp, address, code(idp, secret, steps=1)))["status"] == 200  # a phone a step ahead
    assert (await login(idp, address, "123 456"))["status"] == 401
    assert (await login(idp, address, recovery[0].upper()))["status"] == 200  # case and dashes do not matter
    assert (await login(idp, address, recovery[0]))["status"] == 401  # once
    assert "recovery_codes" not in await login(idp, address, recovery[1])


async def test_an_administrator_requires_a_second_factor_for_a_role(lenient: Idp) -> None:
    idp = lenient
    admin_id, admin = await admin_of(idp)
    doctor_id, doctor = await staff(idp, "Dr Policy", Role.DOCTOR)
    _, nurse = await staff(idp, "Nurse Free", Role.NURSE)
    r = await idp.client.put("/admin/mfa-policy", json={"roles": ["DOCTOR", "ADMIN"]}, headers=admin)
    assert r.status_code == 200 and r.json() == {"roles": ["ADMIN", "DOCTOR"]}
    assert (await idp.client.get("/admin/mfa-policy", headers=admin)).json() == {"roles": ["ADMIN", "DOCTOR"]}
    assert idp.fake.events(SecondFactorPolicyChanged) == [
        SecondFactorPolicyChanged(roles=["ADMIN", "DOCTOR"], changed_by=admin_id)
    ]
    assert (await login(idp, nurse))["status"] == 200  # not a role the policy names
    told = await login(idp, doctor)
    assert told["status"] == 403 and told["code"] == "mfa_enrolment_required"
    assert (await login(idp, doctor, "123456"))["status"] == 403  # a code alone enrols nothing
    creds = {"email": doctor, "password": PASSWORD}
    wrong = await idp.client.post("/auth/login/totp", json=creds | {"password": "not the password at all"})
    assert wrong.status_code == 401
    started = await idp.client.post("/auth/login/totp", json=creds)
    assert started.status_code == 200, started.text
    secret = started.json()["secret"]
    assert (await login(idp, doctor, "000000"))["status"] == 401
    signed_in = await login(idp, doctor, code(idp, secret))
    assert signed_in["status"] == 200 and len(signed_in["recovery_codes"]) == 10  # type: ignore[arg-type]
    listed = (await idp.client.get("/admin/users", params={"q": doctor}, headers=admin)).json()["items"]
    assert listed[0]["mfa"] is True
    nurse_token = await idp.as_holder((await idp.tokens(nurse))["access_token"])
    assert (await idp.client.put("/admin/mfa-policy", json={"roles": []}, headers=nurse_token)).status_code == 403
    assert (await idp.client.put("/admin/mfa-policy", json={"roles": ["CHIEF"]}, headers=admin)).status_code == 422
    assert SecondFactorEnabled(user_id=doctor_id) in idp.fake.events(SecondFactorEnabled)


async def test_a_lost_phone_is_reset_by_an_administrator(idp: Idp) -> None:
    admin_id, admin = await admin_of(idp)
    user_id, address = await staff(idp, "Lost Phone", Role.BILLING)
    secret, _ = await enrolled(idp, address)
    idp.clock.advance(timedelta(seconds=30))
    tokens = await login(idp, address, code(idp, secret))
    r = await patch(idp, admin, user_id, mfa=False)
    assert r.status_code == 200 and r.json()["mfa"] is False
    assert (await idp.refresh(str(tokens["refresh_token"]))).status_code == 401  # its sessions ended
    assert (await login(idp, address))["status"] == 200  # no second factor now, and none required
    assert idp.fake.events(SecondFactorReset) == [SecondFactorReset(user_id=user_id, changed_by=admin_id)]
    assert (await patch(idp, admin, user_id, mfa=True)).status_code == 422  # only an administrator's reset


async def test_guessing_the_enrolment_code_is_throttled(idp: Idp) -> None:
    _, address = await staff(idp, "Guess Er", Role.NURSE)
    holder = await idp.as_holder((await idp.tokens(address))["access_token"])
    secret = (await idp.client.post("/auth/mfa/totp", headers=holder)).json()["secret"]
    for _ in range(3):  # the idp fixture's accounts take three failures
        assert (
            await idp.client.post("/auth/mfa/totp/verify", json={"code": "000000"}, headers=holder)
        ).status_code == 403
    r = await idp.client.post("/auth/mfa/totp/verify", json={"code": code(idp, secret)}, headers=holder)
    assert r.status_code == 429


@pytest.mark.parametrize(("offset", "accepted"), [(-46, False), (-45, True), (0, True), (30, True), (45, False)])
def test_codes_of_the_step_either_side_are_accepted(offset: int, accepted: bool) -> None:
    secret, now = pyotp.random_base32(), datetime(2027, 1, 1, 0, 0, 15, tzinfo=UTC)
    typed = pyotp.TOTP(secret).at(now + timedelta(seconds=offset))
    assert (matching_step(secret, typed, now) is not None) is accepted
    assert matching_step(secret, "12345", now) is None and matching_step(secret, "abcdef", now) is None


def test_recovery_codes_are_random_and_kept_as_hashes() -> None:
    codes = new_recovery_codes()
    assert len(set(codes)) == 10 and all(len(c) == 14 and c.count("-") == 2 for c in codes)
    assert recovery_hash(codes[0]) == recovery_hash(f"  {codes[0].upper().replace('-', ' ')} ")
    assert recovery_hash(codes[0]) != recovery_hash(codes[1])


def test_a_secret_is_bound_to_its_account_and_the_passphrase() -> None:
    cipher, user, other = secrets_cipher(PASSPHRASE), uuid.uuid4(), uuid.uuid4()
    blob = cipher.encrypt("JBSWY3DPEHPK3PXP", aad(user))
    assert cipher.decrypt(blob, aad(user)) == "JBSWY3DPEHPK3PXP"
    with pytest.raises(DecryptionError):
        cipher.decrypt(blob, aad(other))
    with pytest.raises(DecryptionError):
        secrets_cipher(b"another passphrase entirely").decrypt(blob, aad(user))
