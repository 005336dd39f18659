"""identity on a real PostgreSQL: registration, login, refresh rotation and reuse, throttling, admin."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from his.access import Role
from his.identity.app import http as identity_http
from his.identity.app import use_cases
from his.identity.domain import InvalidCredentialsError
from his.identity.handlers import Identity, Registrations, Throttle, ThrottledError
from his.identity.keys import sign_access_token
from his.kernel import migrations, problems
from his.kernel.db import Database
from his.kernel.security import AUDIENCE, ISSUER, TokenError, TokenVerifier
from his.kernel.web import mount

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
async def identity_dsn(admin_dsn: str) -> str:
    dsn = await migrations.provision(admin_dsn, "identity", "pw-identity-test")
    await migrations.upgrade(admin_dsn, "identity")
    return dsn


@pytest.fixture
async def api(identity_dsn: str) -> AsyncIterator[tuple[httpx.AsyncClient, Identity]]:
    db = Database(identity_dsn, schema="identity", min_size=1, max_size=4)
    await db.open()
    identity = use_cases(
        db,
        b"a passphrase for the test keys",
        throttle=Throttle(account_limit=3, ip_limit=1000),
        registrations=Registrations(per_address=10_000, overall=10_000),  # every test registers from one address
    )
    app = FastAPI()
    problems.install(app)
    mount(app, identity_http(identity))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://identity") as client:
        yield client, identity
    await db.close()


def email() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@Example.org"


async def register(client: httpx.AsyncClient, address: str) -> str:
    r = await client.post("/auth/register", json={"email": address, "password": PASSWORD, "full_name": "Ay Se"})
    assert r.status_code == 201, r.text
    return str(r.json()["user_id"])


async def login(client: httpx.AsyncClient, address: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/auth/login", json={"email": address, "password": password})


async def test_self_registration_is_always_a_patient_and_emails_are_case_insensitive(
    api: tuple[httpx.AsyncClient, Identity], identity_dsn: str
) -> None:
    client, _ = api
    address = email()
    user_id = await register(client, address)
    again = await client.post(
        "/auth/register", json={"email": address.upper(), "password": PASSWORD, "full_name": "Someone Else"}
    )
    assert again.status_code == 409
    sneaky = await client.post(
        "/auth/register", json={"email": email(), "password": PASSWORD, "full_name": "X Y", "roles": ["ADMIN"]}
    )
    assert sneaky.status_code == 422
    assert sneaky.headers["content-type"] == "application/problem+json"
    weak = await client.post("/auth/register", json={"email": email(), "password": "password1234", "full_name": "X Y"})
    assert weak.status_code == 422 and "too common" in weak.json()["detail"]
    conn = await asyncpg.connect(identity_dsn)
    try:
        row = await conn.fetchrow("SELECT roles, password_hash FROM app_user WHERE id = $1", uuid.UUID(user_id))
    finally:
        await conn.close()
    assert row is not None and list(row["roles"]) == ["PATIENT"]
    assert row["password_hash"].startswith("$argon2id$")


async def test_unknown_user_and_wrong_password_look_the_same(api: tuple[httpx.AsyncClient, Identity]) -> None:
    client, _ = api
    address = email()
    await register(client, address)
    wrong = await login(client, address, "not the password at all")
    unknown = await login(client, email(), "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


async def test_refresh_rotates_and_reuse_revokes_the_family(api: tuple[httpx.AsyncClient, Identity]) -> None:
    client, _ = api
    address = email()
    await register(client, address)
    first = (await login(client, address)).json()
    second = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    # The old token comes back (stolen copy): refused, and the whole family is revoked.
    reuse = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    after = await client.post("/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert after.status_code == 401


async def test_logout_revokes_the_refresh_token(api: tuple[httpx.AsyncClient, Identity]) -> None:
    client, _ = api
    address = email()
    await register(client, address)
    tokens = (await login(client, address)).json()
    assert (await client.post("/auth/logout", json={"refresh_token": tokens["refresh_token"]})).status_code == 204
    assert (await client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})).status_code == 401


async def test_signed_out_and_stolen_sessions_are_announced_to_the_gateway(
    api: tuple[httpx.AsyncClient, Identity],
) -> None:
    """Every access token names its session (``sid``); a sign-out, or a rotated refresh token that
    comes back, lists the session at ``/auth/revoked-sessions`` until its last token expires."""
    client, identity = api
    address = email()
    await register(client, address)
    verifier = TokenVerifier(identity.keys.jwks, issuer=ISSUER, audience=AUDIENCE)
    before = (await client.get("/auth/revoked-sessions")).json()
    a, b = (await login(client, address)).json(), (await login(client, address)).json()
    sa, sb = (await verifier.verify(a["access_token"])).session, (await verifier.verify(b["access_token"])).session
    assert sa and sb and sa != sb
    rotated = (await client.post("/auth/refresh", json={"refresh_token": b["refresh_token"]})).json()
    assert (await verifier.verify(rotated["access_token"])).session == sb  # a refresh stays in its session

    async def revoked(since: str | None = None) -> dict[str, str]:
        r = await client.get("/auth/revoked-sessions", params={"since": since} if since else {})
        assert r.status_code == 200, r.text
        return {x["sid"]: x["until"] for x in r.json()["sessions"]}

    assert not {sa, sb} & set(await revoked())
    assert (await client.post("/auth/logout", json={"refresh_token": a["refresh_token"]})).status_code == 204
    assert set(await revoked(before["now"])) == {sa}
    until = datetime.fromisoformat((await revoked())[sa])
    assert timedelta(minutes=15) < until - datetime.now(UTC) <= timedelta(minutes=16)
    assert (await client.post("/auth/refresh", json={"refresh_token": b["refresh_token"]})).status_code == 401
    assert set(await revoked(before["now"])) == {sa, sb}
    # An answer's ``now`` is the next question's ``since``: nothing new since then.
    latest = (await client.get("/auth/revoked-sessions")).json()["now"]
    assert not set(await revoked(latest))
    r = await client.get("/auth/revoked-sessions", params={"since": "2026-01-01T00:00:00"})
    assert r.status_code == 422


async def test_repeated_failures_throttle_the_account(api: tuple[httpx.AsyncClient, Identity]) -> None:
    client, _ = api
    address = email()
    await register(client, address)
    for _ in range(3):
        assert (await login(client, address, "wrong wrong wrong wrong")).status_code == 401
    throttled = await login(client, address)  # even the right password waits now
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0


async def test_concurrent_guesses_cannot_outrun_the_account_throttle(api: tuple[httpx.AsyncClient, Identity]) -> None:
    """A burst of guesses sent at once gets no more password checks than one sent in turn: the
    count of failures is checked and the attempt recorded atomically, before the slow hash."""
    client, identity = api
    address = email()
    await register(client, address)
    limit = identity.throttle.account_limit
    guesses = [f"wrong guess number {n:02d}" for n in range(4 * limit)] + [PASSWORD]
    answers = await asyncio.gather(*(login(client, address, g) for g in guesses))
    checked = [r.status_code for r in answers if r.status_code != 429]
    assert len(checked) <= limit, f"{len(checked)} passwords checked in one burst: {sorted(checked)}"
    assert answers[-1].status_code == 429  # the right password, guessed after the limit, gets no token


async def test_concurrent_guesses_cannot_outrun_the_address_throttle(api: tuple[httpx.AsyncClient, Identity]) -> None:
    """Guesses at many accounts from one address, sent at once, get no more password checks than
    the address's limit; the address's own successful logins do not use it up."""
    client, identity = api
    limit = 4
    strict = Identity(
        identity.units, identity.keys, clock=identity.clock, throttle=Throttle(account_limit=100, ip_limit=limit)
    )
    stuffing, office = "198.51.100.7", "198.51.100.8"
    accounts = [email() for _ in range(3 * limit)]
    for address in accounts:
        await register(client, address)

    async def guess(address: str) -> str:
        try:
            await strict.login(email=address, password="wrong wrong wrong wrong", client_ip=stuffing)
        except ThrottledError:
            return "throttled"
        except InvalidCredentialsError:
            return "checked"
        return "signed in"

    outcomes = await asyncio.gather(*(guess(a) for a in accounts))
    assert outcomes.count("checked") <= limit, outcomes
    assert "signed in" not in outcomes
    with pytest.raises(ThrottledError):  # the right password too, from that address
        await strict.login(email=accounts[0], password=PASSWORD, client_ip=stuffing)
    for _ in range(3 * limit):  # a ward's staff signing in one after another from one address
        assert (await strict.login(email=accounts[1], password=PASSWORD, client_ip=office)).access_token


async def test_only_admin_creates_staff(api: tuple[httpx.AsyncClient, Identity]) -> None:
    client, identity = api
    admin_email = email()
    await identity.register(email=admin_email, password=PASSWORD, full_name="Ad Min", roles=[Role.ADMIN])
    patient_email = email()
    await register(client, patient_email)
    doctor_email = email()
    body = {"email": doctor_email, "password": PASSWORD, "full_name": "Dr Who", "roles": ["DOCTOR"]}
    assert (await client.post("/admin/users", json=body)).status_code == 401
    patient = (await login(client, patient_email)).json()["access_token"]
    denied = await client.post("/admin/users", json=body, headers={"authorization": f"Bearer {patient}"})
    assert denied.status_code == 403
    admin = (await login(client, admin_email)).json()["access_token"]
    created = await client.post("/admin/users", json=body, headers={"authorization": f"Bearer {admin}"})
    assert created.status_code == 201
    doctor = (await login(client, doctor_email)).json()["access_token"]
    verified = await TokenVerifier(identity.keys.jwks, issuer=ISSUER, audience=AUDIENCE).verify(doctor)
    assert verified.roles == {"DOCTOR"}


async def test_a_key_that_left_the_jwks_stops_being_trusted(
    api: tuple[httpx.AsyncClient, Identity], identity_dsn: str
) -> None:
    """A verifier fetches the JWKS again once its copy is old, so a signing key that left it
    (retired, or withdrawn after a leak) stops vouching for tokens someone still mints with it."""
    _, identity = api
    key = await identity.keys.active()
    verifier = TokenVerifier(identity.keys.jwks, issuer=ISSUER, audience=AUDIENCE)

    def mint() -> str:
        token, _ = sign_access_token(
            key, subject=str(uuid.uuid4()), roles=["ADMIN"], issuer=ISSUER, audience=AUDIENCE, now=datetime.now(UTC)
        )
        return token

    assert (await verifier.verify(mint())).roles == {"ADMIN"}
    conn = await asyncpg.connect(identity_dsn)
    try:
        await conn.execute("UPDATE identity.signing_key SET retires_at = now() WHERE kid = $1", key.kid)
    finally:
        await conn.close()
    verifier._fetched_at -= 24 * 3600  # as if the keys had been fetched a day ago
    with pytest.raises(TokenError):
        await verifier.verify(mint())
