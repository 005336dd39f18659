"""Self-registration through identity's routes over the in-memory ports, e-mail caught by a
fake channel: the same answer whether or not the address has an account, an account that cannot
sign in until its address is confirmed by the e-mailed link with its own password, the latest
registration of an unconfirmed address winning, and an address nobody can adopt without both the
mailbox and the password."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from his.access import Role
from his.events.identity import EmailVerified, UserRegistered
from his.identity.registration import CONFIRM_LINK_TTL
from his.identity.throttles import Throttle
from tests.unit.test_identity_accounts import staff
from tests.unit.test_identity_use_cases import NEW_PASSWORD, PASSWORD, PUBLIC, WRONG, Idp, Make, email, idp, make

__all__ = ["idp", "make"]  # the fixtures, shared with test_identity_use_cases

ATTACKER_PASSWORD = "plum orchard tidal ninety"


def problem_code(r: object) -> object:
    return r.json().get("code")  # type: ignore[attr-defined]


async def test_a_new_address_signs_in_only_once_its_link_was_opened_with_its_password(idp: Idp) -> None:
    address = email()
    r = await idp.register(address)
    assert r.status_code == 201
    user_id = uuid.UUID(r.json()["user_id"])
    await idp.link(address)
    (sent,) = idp.mail.sent
    assert sent.subject == "Confirm your address" and "Ay Se" in sent.body
    refused = await idp.login(address)
    assert refused.status_code == 403 and problem_code(refused) == "email_unverified"
    assert (await idp.login(address, WRONG)).status_code == 401  # a wrong password learns nothing more
    token = await idp.link(address)
    assert token not in str(idp.fake.published)  # the link never travels on the bus
    assert (await idp.confirm(token, WRONG)).status_code == 400  # the link alone is not enough
    assert idp.account(address).email_verified_at is None
    assert (await idp.confirm(token)).status_code == 204
    assert idp.account(address).email_verified_at == idp.clock()
    assert idp.fake.events(EmailVerified) == [EmailVerified(user_id=user_id, how="link")]
    assert (await idp.login(address)).status_code == 200
    assert (await idp.confirm(token)).status_code == 400  # once


async def test_the_answer_is_the_same_whoever_has_the_address(idp: Idp) -> None:
    """A new address, an unconfirmed one, a confirmed one and a disabled one: 201 and an id each
    time, a fresh one for an address that had an account; what differs goes to the mailbox."""
    confirmed = await idp.signed_up()
    pending = email()
    assert (await idp.register(pending)).status_code == 201
    _, leaver = await staff(idp, "Left Already", Role.NURSE)
    leaver_id = idp.account(leaver).id
    async with idp.identity.units.uow() as uow:
        await uow.users.set_disabled(leaver_id, idp.clock())
    before = set(idp.fake.state.users)
    answers = [await idp.register(a) for a in (confirmed, pending, leaver, email())]
    assert [a.status_code for a in answers] == [201] * 4
    assert [set(a.json()) for a in answers] == [{"user_id"}] * 4
    ids = [uuid.UUID(a.json()["user_id"]) for a in answers]
    assert not set(ids[:3]) & set(idp.fake.state.users)  # names no account
    assert ids[3] in set(idp.fake.state.users) - before
    await idp.link(pending)  # waits for every e-mail
    to = {m.to.lower(): m for m in idp.mail.sent[-3:]}
    assert set(to) == {confirmed.lower(), pending.lower(), idp.fake.state.users[ids[3]].email.lower()}
    assert to[confirmed.lower()].subject == "You already have an account"
    assert "/password-reset" in to[confirmed.lower()].body and "verify-email" not in to[confirmed.lower()].body
    assert to[pending.lower()].subject == "Confirm your address"
    assert (await idp.login(confirmed)).status_code == 200  # nothing changed for the account


async def test_the_latest_registration_of_an_unconfirmed_address_wins(make: Make) -> None:
    """Someone registers another's address with a password of their own: its owner, who did
    not register, cannot confirm it (no password), the registrant cannot (no mailbox); the owner
    registering it themself takes it over, and the first link stops working."""
    idp = await make(throttle=Throttle(account_limit=10, ip_limit=1000))
    victim = email()
    assert (await idp.register(victim, ATTACKER_PASSWORD, name="Mallory")).status_code == 201
    planted = await idp.link(victim)
    assert (await idp.confirm(planted, PASSWORD)).status_code == 400  # the owner's password is not its own
    assert (await idp.register(victim, PASSWORD, name="Victoria Owner")).status_code == 201
    own = await idp.link(victim)
    assert own != planted
    assert (await idp.confirm(planted, ATTACKER_PASSWORD)).status_code == 400  # voided by the newer
    assert (await idp.confirm(own, ATTACKER_PASSWORD)).status_code == 400  # the password is the owner's now
    assert (await idp.confirm(own, PASSWORD)).status_code == 204
    assert idp.account(victim).full_name == "Victoria Owner"
    assert (await idp.login(victim, ATTACKER_PASSWORD)).status_code == 401
    assert (await idp.login(victim, PASSWORD)).status_code == 200
    assert len(idp.fake.events(UserRegistered)) == 1


async def test_a_link_works_for_a_day(idp: Idp) -> None:
    address = email()
    await idp.register(address)
    token = await idp.link(address)
    idp.clock.advance(CONFIRM_LINK_TTL + timedelta(seconds=1))
    assert (await idp.confirm(token)).status_code == 400
    assert (await idp.register(address)).status_code == 201  # a new link, for a day again
    assert (await idp.confirm(await idp.link(address))).status_code == 204


async def test_guessing_the_password_through_the_link_is_throttled_as_a_sign_in(make: Make) -> None:
    idp: Idp = await make(throttle=Throttle(account_limit=3, ip_limit=1000))
    address = email()
    await idp.register(address)
    token = await idp.link(address)
    codes = [(await idp.confirm(token, f"{WRONG} {n}")).status_code for n in range(4)]
    assert codes == [400, 400, 400, 429]


async def test_a_password_reset_confirms_the_address_too(make: Make) -> None:
    """The reset link reaches the same mailbox: an owner who never got (or lost) the
    confirmation e-mail resets the password and signs in."""
    import contextlib

    from his.identity.app import http
    from his.identity.recovery import PasswordRecovery
    from tests.support.api import serve

    idp: Idp = await make()
    recovery = PasswordRecovery(idp.identity, idp.mail, PUBLIC)
    async with contextlib.AsyncExitStack() as stack:
        idp.client = await stack.enter_async_context(
            serve(http(idp.identity, recovery, idp.registration), base_url="http://identity")
        )
        address = email()
        await idp.register(address)
        assert (await idp.client.post("/auth/password-reset", json={"email": address})).status_code == 202
        await recovery.sent()
        token = await idp.link(address, "/password-reset")
        r = await idp.client.post("/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD})
        assert r.status_code == 204
        user = idp.account(address)
        assert user.email_verified_at == idp.clock()
        assert idp.fake.events(EmailVerified) == [EmailVerified(user_id=user.id, how="reset")]
        assert (await idp.login(address, NEW_PASSWORD)).status_code == 200


@pytest.mark.parametrize("roles", [[Role.NURSE], [Role.PATIENT]])
async def test_an_account_an_administrator_made_signs_in_at_once(idp: Idp, roles: list[Role]) -> None:
    address = email()
    await idp.identity.register(email=address, password=PASSWORD, full_name="Made For", roles=roles)
    assert idp.account(address).email_verified_at == idp.clock()
    assert (await idp.login(address)).status_code == 200
    assert idp.mail.sent == []
