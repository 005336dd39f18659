"""A patient's own account in the console, over the in-memory API answering as identity does:
the registration form (its errors beside its fields, the same page after every registration),
the page the confirmation link opens (the token in the form's body only, the password asked),
and the sign-in that tells an unconfirmed account what to do."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from his.console.domain import Answer
from his.kernel.json import Json
from his.testing.console import Call, Identity
from tests.support.console import PASSWORD, SAME_ORIGIN, Desk, console_desk
from tests.unit.test_console_account import hidden_values

EMAIL = "new.patient@example.org"
NAME = "Nur Yalın"


@pytest.fixture
async def desk() -> AsyncIterator[Desk]:
    async with console_desk() as found:
        yield found


def form(**fields: str) -> dict[str, str]:
    return {"full_name": NAME, "email": EMAIL, "password": PASSWORD, "password_again": PASSWORD} | fields


async def test_the_sign_in_page_leads_to_registration(desk: Desk) -> None:
    page = await desk.client.get("/sign-in")
    assert 'href="/register"' in page.text
    page = await desk.client.get("/register")
    assert page.status_code == 200 and 'action="/register"' in page.text and "Create an account" in page.text


async def test_a_registration_says_the_same_whoever_has_the_address(desk: Desk) -> None:
    desk.api.answer("POST", "/api/auth/register", Answer(201, {"user_id": "00000000-0000-4000-8000-000000000001"}))
    r = await desk.client.post("/register", data=form(), headers=SAME_ORIGIN)
    assert r.status_code == 200 and "Check your e-mail" in r.text and PASSWORD not in r.text
    body: dict[str, Json] = {"email": EMAIL, "password": PASSWORD, "full_name": NAME}
    assert desk.api.calls == [Call("POST", "/api/auth/register", "203.0.113.7", None, body, None)]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"full_name": "  "}, "full_name", "Enter your full name."),
        ({"email": ""}, "email", "Enter your e-mail address."),
        ({"password": ""}, "password", "Choose a password."),
        ({"password_again": "another one entirely"}, "password_again", "The two passwords are not the same."),
    ],
    ids=["name", "address", "password", "again"],
)
async def test_the_form_finds_what_it_can_itself(desk: Desk, fields: dict[str, str], field: str, message: str) -> None:
    r = await desk.client.post("/register", data=form(**fields), headers=SAME_ORIGIN)
    assert r.status_code == 422 and f'id="{field}-error"' in r.text and message in r.text
    assert desk.api.calls == [] and PASSWORD not in r.text


@pytest.mark.parametrize(
    ("answer", "field", "message"),
    [
        (Identity.NOT_AN_ADDRESS, "email", "Enter a valid e-mail address."),
        (Identity.WEAK, "password", "password must not contain the e-mail address"),
    ],
    ids=["address", "password"],
)
async def test_what_the_api_refuses_is_said_beside_its_field(
    desk: Desk, answer: Answer, field: str, message: str
) -> None:
    desk.api.answer("POST", "/api/auth/register", answer)
    r = await desk.client.post("/register", data=form(), headers=SAME_ORIGIN)
    assert r.status_code == 422 and f'id="{field}-error"' in r.text and message in r.text
    assert f'value="{EMAIL}"' in r.text and PASSWORD not in r.text


async def test_the_links_page_confirms_with_the_password_then_signs_in(desk: Desk) -> None:
    token = "tok_" + "b" * 40
    page = await desk.client.get(f"/verify-email?token={token}")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "same-origin"
    assert token in hidden_values(page.text) and page.text.count(token) == 1
    desk.api.answer("POST", "/api/auth/verify-email", Identity.DEAD_LINK)
    r = await desk.client.post("/verify-email", data={"token": token, "password": "wrong"}, headers=SAME_ORIGIN)
    assert r.status_code == 400 and "does not work with this password" in r.text and r.text.count(token) == 1
    desk.api.answer("POST", "/api/auth/verify-email", Answer(204))
    r = await desk.client.post("/verify-email", data={"token": token, "password": PASSWORD}, headers=SAME_ORIGIN)
    assert r.status_code == 303 and r.headers["location"] == "/sign-in?confirmed=1"
    assert desk.api.calls[-1].body == {"token": token, "password": PASSWORD}
    assert "Your address is confirmed." in (await desk.client.get(r.headers["location"])).text
    assert (await desk.client.get("/verify-email")).status_code == 400


async def test_an_unconfirmed_account_is_told_to_open_its_link(desk: Desk) -> None:
    desk.api.answer("POST", "/api/auth/login", Identity.EMAIL_UNVERIFIED)
    r = await desk.client.post(
        "/sign-in", data={"email": EMAIL, "password": PASSWORD, "next": "/"}, headers=SAME_ORIGIN
    )
    assert r.status_code == 403 and "Confirm your address first" in r.text and "set-cookie" not in r.headers
