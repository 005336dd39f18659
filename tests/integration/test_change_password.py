"""A user changes their own password (``POST /api/auth/password``) on a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from his.gateway.routing import Match, resolve
from his.identity.app import http as identity_http
from his.identity.app import use_cases
from his.identity.handlers import Throttle
from his.kernel import migrations, problems
from his.kernel.db import Database
from his.kernel.web import mount

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "violet kettle under the moon"


@pytest.fixture(scope="module")
async def identity_dsn(admin_dsn: str) -> str:
    dsn = await migrations.provision(admin_dsn, "identity", "pw-identity-test")
    await migrations.upgrade(admin_dsn, "identity")
    return dsn


@pytest.fixture
async def client(identity_dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    db = Database(identity_dsn, schema="identity", min_size=1, max_size=4)
    await db.open()
    identity = use_cases(db, b"a passphrase for the test keys", throttle=Throttle(account_limit=3, ip_limit=1000))
    app = FastAPI()
    problems.install(app)
    mount(app, identity_http(identity))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://identity") as c:
        yield c
    await db.close()


async def signed_up(client: httpx.AsyncClient) -> tuple[str, dict[str, str], dict[str, str]]:
    """A new account and two of its sessions (say, a laptop and a phone)."""
    address = f"user-{uuid.uuid4().hex[:8]}@example.org"
    r = await client.post("/auth/register", json={"email": address, "password": PASSWORD, "full_name": "Ay Se"})
    assert r.status_code == 201, r.text
    sessions = []
    for _ in range(2):
        login = await client.post("/auth/login", json={"email": address, "password": PASSWORD})
        assert login.status_code == 200, login.text
        sessions.append(login.json())
    return address, sessions[0], sessions[1]


async def change(client: httpx.AsyncClient, token: str, current: str, new: str) -> httpx.Response:
    return await client.post(
        "/auth/password",
        json={"current_password": current, "new_password": new},
        headers={"Authorization": f"Bearer {token}"},
    )


def test_the_gateway_routes_it_to_identity() -> None:
    match = resolve("POST", "/api/auth/password")
    assert isinstance(match, Match)
    assert (match.route.service, match.upstream_path, match.route.public) == ("identity", "/auth/password", False)


async def test_a_user_changes_their_password_and_their_other_sessions_end(client: httpx.AsyncClient) -> None:
    address, here, elsewhere = await signed_up(client)
    r = await change(client, here["access_token"], PASSWORD, NEW_PASSWORD)
    assert r.status_code == 204, r.text
    old = await client.post("/auth/login", json={"email": address, "password": PASSWORD})
    assert old.status_code == 401
    new = await client.post("/auth/login", json={"email": address, "password": NEW_PASSWORD})
    assert new.status_code == 200
    # The session that changed it goes on; the other one is signed out.
    assert (await client.post("/auth/refresh", json={"refresh_token": here["refresh_token"]})).status_code == 200
    assert (await client.post("/auth/refresh", json={"refresh_token": elsewhere["refresh_token"]})).status_code == 401


async def test_the_current_password_and_the_policy_are_checked(client: httpx.AsyncClient) -> None:
    address, here, _ = await signed_up(client)
    token = here["access_token"]
    wrong = await change(client, token, "not the password at all", NEW_PASSWORD)
    assert wrong.status_code == 403 and wrong.headers["content-type"] == "application/problem+json"
    assert "current password is wrong" in wrong.json()["detail"]
    weak = await change(client, token, PASSWORD, "password1234")
    assert weak.status_code == 422 and "too common" in weak.json()["detail"]
    same = await change(client, token, PASSWORD, PASSWORD)
    assert same.status_code == 422 and "differ" in same.json()["detail"]
    unsigned = await client.post("/auth/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert unsigned.status_code == 401
    # Nothing changed: the old password still signs in.
    assert (await client.post("/auth/login", json={"email": address, "password": PASSWORD})).status_code == 200


async def test_guessing_the_current_password_is_throttled(client: httpx.AsyncClient) -> None:
    _, here, _ = await signed_up(client)
    token = here["access_token"]
    for _ in range(3):  # the account limit of this test's throttle
        assert (await change(client, token, "a wrong guess here", NEW_PASSWORD)).status_code == 403
    throttled = await change(client, token, PASSWORD, NEW_PASSWORD)
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
