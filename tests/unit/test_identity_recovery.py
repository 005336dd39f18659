"""A forgotten password reset by a one-time link, through identity's routes over the in-memory
ports, e-mail caught by a fake channel: the same answer whether or not an address has an account,
a link that works once and briefly, a newer link voiding the older, sessions ended and a locked
account freed by the reset, and a second factor still asked after it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from his.access import Role
from his.events.identity import PasswordChanged, PasswordResetRequested
from his.identity.app import http, use_cases_over
from his.identity.recovery import RESET_LINK_TTL, PasswordRecovery
from his.identity.registration import Registration
from his.identity.throttles import Registrations, Throttle
from his.kernel.mail import FakeChannel
from his.testing.identity import FakeIdentity
from tests.support.api import serve
from tests.support.calendar import HARD_DATES, HardDate
from tests.unit.test_identity_accounts import staff
from tests.unit.test_identity_use_cases import (
    CHEAP,
    NEW_PASSWORD,
    PASSPHRASE,
    PASSWORD,
    PUBLIC,
    WRONG,
    Idp,
    email,
)


class Desk:
    """Identity with its reset links caught."""

    def __init__(self, idp: Idp, recovery: PasswordRecovery, mail: FakeChannel) -> None:
        self.idp, self.recovery, self.mail = idp, recovery, mail

    async def ask(self, address: str, at: str = "192.0.2.1") -> int:
        r = await self.idp.client.post("/auth/password-reset", json={"email": address}, headers={"x-his-client-ip": at})
        await self.recovery.sent()
        return r.status_code

    def token(self, n: int = -1) -> str:
        (link,) = [w for w in self.mail.sent[n].body.split() if w.startswith(PUBLIC)]
        assert urlsplit(link).path == "/password-reset"
        return parse_qs(urlsplit(link).query)["token"][0]

    async def confirm(self, token: str, new: str = NEW_PASSWORD) -> int:
        r = await self.idp.client.post("/auth/password-reset/confirm", json={"token": token, "new_password": new})
        return r.status_code


@pytest.fixture(params=[HARD_DATES[0], HARD_DATES[4]], ids=str)
async def desk(request: pytest.FixtureRequest) -> AsyncIterator[Desk]:
    hard: HardDate = request.param
    clock = hard.clock(0, 30)
    fake = FakeIdentity(clock)
    identity = use_cases_over(
        fake,
        PASSPHRASE,
        clock=clock,
        passwords=CHEAP,
        throttle=Throttle(account_limit=3, ip_limit=1000),
        registrations=Registrations(per_address=10_000, overall=10_000),
    )
    mail = FakeChannel()
    recovery = PasswordRecovery(identity, mail, PUBLIC + "/")
    registration = Registration(identity, mail, PUBLIC)
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            serve(http(identity, recovery, registration), base_url="http://identity")
        )
        yield Desk(Idp(client, fake, identity, clock, mail, registration), recovery, mail)


async def test_the_answer_is_the_same_whether_or_not_the_address_has_an_account(desk: Desk) -> None:
    user_id, address = await staff(desk.idp, "Forgetful Nurse", Role.NURSE)
    assert await desk.ask(address.upper()) == 202
    assert await desk.ask("nobody-here@example.org") == 202
    assert await desk.ask("not an address") == 422
    (sent,) = desk.mail.sent  # one e-mail: to the account, none to the unknown address
    assert sent.to == desk.idp.fake.state.users[user_id].email and "Forgetful Nurse" in sent.body
    assert desk.idp.fake.events(PasswordResetRequested) == [PasswordResetRequested(user_id=user_id)]
    assert desk.token() not in str(desk.idp.fake.published)  # the link never travels on the bus


async def test_a_link_resets_once_ends_every_session_and_frees_a_locked_account(desk: Desk) -> None:
    user_id, address = await staff(desk.idp, "Locked Out", Role.BILLING)
    tokens = await desk.idp.tokens(address)
    for at in ("192.0.2.7", "192.0.2.8", "192.0.2.9"):
        assert (await desk.idp.login(address, WRONG, at=at)).status_code == 401
    assert (await desk.idp.login(address)).status_code == 429
    assert await desk.ask(address) == 202
    token = desk.token()
    assert await desk.confirm(token, "locked out locked out") == 422  # the policy; the link still works
    assert await desk.confirm(token) == 204
    assert await desk.confirm(token, "another fine passphrase") == 400  # once
    assert (await desk.idp.refresh(tokens["refresh_token"])).status_code == 401
    assert (await desk.idp.login(address, PASSWORD)).status_code == 401
    assert (await desk.idp.login(address, NEW_PASSWORD)).status_code == 200
    assert desk.idp.fake.events(PasswordChanged) == [PasswordChanged(user_id=user_id, how="reset")]


async def test_a_link_works_briefly_and_a_newer_one_voids_it(desk: Desk) -> None:
    _, address = await staff(desk.idp, "Twice Asked", Role.NURSE)
    await desk.ask(address)
    first = desk.token()
    await desk.ask(address)
    second = desk.token()
    assert await desk.confirm(first) == 400
    desk.idp.clock.advance(RESET_LINK_TTL)
    assert await desk.confirm(second) == 400
    assert await desk.confirm("made up") == 400


async def test_an_account_asked_for_too_often_gets_no_more_mail_and_the_answer_does_not_change(desk: Desk) -> None:
    _, address = await staff(desk.idp, "Much Asked", Role.NURSE)
    for _ in range(5):
        assert await desk.ask(address) == 202
    assert len(desk.mail.sent) == 3  # the account's limit: the rest are answered alike, and dropped
    for _ in range(10):  # the address's own limit is open: it says nothing about any account
        await desk.ask(email(), at="198.51.100.9")
    assert await desk.ask(address, at="198.51.100.9") == 429
    desk.idp.clock.advance(timedelta(hours=1, seconds=1))
    assert await desk.ask(address) == 202 and len(desk.mail.sent) == 4


async def test_a_disabled_account_gets_no_link(desk: Desk) -> None:
    user_id, address = await staff(desk.idp, "Gone Away", Role.NURSE)
    async with desk.idp.fake.uow() as uow:
        await uow.users.set_disabled(user_id, uow.clock())
    assert await desk.ask(address) == 202 and desk.mail.sent == []
