"""identity on a real PostgreSQL: what only the database settles (guesses sent at once racing the
throttles, which count under advisory locks) and tokens as identity issues them on the real
clock, through the verifier every service and the gateway use. The use cases' tests are unit
tests over the in-memory ports (``tests/unit/test_identity_use_cases.py``), whose contract with
the store is ``tests/integration/test_identity_contract.py``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from his.access import Role
from his.identity.app import http as identity_http
from his.identity.app import use_cases
from his.identity.domain import InvalidCredentialsError
from his.identity.handlers import Identity
from his.identity.throttles import Registrations, Throttle, ThrottledError
from his.kernel import migrations, problems
from his.kernel.db import Database
from his.kernel.security import AUDIENCE, ISSUER, TokenVerifier
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
    app.state.his_identity = identity  # what ``register`` confirms addresses through
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://identity") as client:
        yield client, identity
    await db.close()


def email() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@Example.org"


async def register(client: httpx.AsyncClient, address: str) -> str:
    """A new PATIENT account, registered and its address confirmed (as its e-mailed link does)."""
    r = await client.post("/auth/register", json={"email": address, "password": PASSWORD, "full_name": "Ay Se"})
    assert r.status_code == 201, r.text
    identity: Identity = client._transport.app.state.his_identity  # type: ignore[attr-defined]
    async with identity.units.uow() as uow:
        assert await uow.users.verify_email(uuid.UUID(r.json()["user_id"]), uow.clock())
    return str(r.json()["user_id"])


async def login(client: httpx.AsyncClient, address: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/auth/login", json={"email": address, "password": password})


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


async def test_tokens_as_identity_issues_them_pass_the_verifier_of_every_service(
    api: tuple[httpx.AsyncClient, Identity],
) -> None:
    """Issued on the real clock, an administrator's token opens the route that creates staff and a
    patient's does not, and a doctor's passes the verifier the services and the gateway use, with
    its roles and its session."""
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
    assert verified.roles == {"DOCTOR"} and verified.session
