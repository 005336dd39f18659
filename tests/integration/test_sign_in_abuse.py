"""What one client can do to sign-in and registration at once, on a real PostgreSQL: race the
backoff with guesses sent together, flood registrations, starve logins of hashing time (real
argon2id). The throttles run on a fixed clock. What one client does in turn (lock a nurse out,
wait out a doubling backoff, meet an account's ceiling, register past the limits) is tested on the
in-memory ports, on hard dates (``tests/unit/test_identity_use_cases.py``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from his.access import Role
from his.identity.app import http as identity_http
from his.identity.domain import Backoff
from his.identity.handlers import Identity, KeyRing
from his.identity.passwords import Capacity, Passwords
from his.identity.store import IdentityStore
from his.identity.throttles import Registrations, Throttle
from his.kernel import migrations, problems
from his.kernel.clock import FakeClock
from his.kernel.db import Database
from his.kernel.web import mount
from tests.support.waiting import wait_for

PASSWORD = "correct horse battery staple"
NURSE, ATTACKER = "198.51.100.20", "203.0.113.66"


#: Where the throttles' clock stands.
NOW = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
async def identity_dsn(admin_dsn: str) -> str:
    dsn = await migrations.provision(admin_dsn, "identity", "pw-identity-test")
    await migrations.upgrade(admin_dsn, "identity")
    return dsn


@pytest.fixture
async def db(identity_dsn: str) -> AsyncIterator[Database]:
    db = Database(identity_dsn, schema="identity", min_size=1, max_size=8)
    await db.open()
    async with db.pool.acquire() as conn:  # each test counts from nothing
        await conn.execute("DELETE FROM login_failure")
    yield db
    await db.close()


Api = Callable[..., tuple[httpx.AsyncClient, Identity, FakeClock]]


@pytest.fixture
async def make(db: Database) -> AsyncIterator[Api]:
    clients: list[httpx.AsyncClient] = []

    def build(**kwargs: object) -> tuple[httpx.AsyncClient, Identity, FakeClock]:
        clock = FakeClock(NOW)
        kwargs.setdefault("registrations", Registrations(per_address=1000, overall=1000))
        units = IdentityStore(db)  # on the database's clock: tokens and keys are made at the real time
        keys = KeyRing(units, b"a passphrase for the test keys", db.clock)
        identity = Identity(units, keys, clock=clock, **kwargs)  # type: ignore[arg-type]
        app = FastAPI()
        problems.install(app)
        mount(app, identity_http(identity))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://identity", timeout=30)
        clients.append(client)
        return client, identity, clock

    yield build
    for c in clients:
        await c.aclose()


def email() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@example.org"


async def register(client: httpx.AsyncClient, address: str, at: str = "192.0.2.1") -> httpx.Response:
    body = {"email": address, "password": PASSWORD, "full_name": "Ay Se"}
    return await client.post("/auth/register", json=body, headers={"x-his-client-ip": at})


async def login(client: httpx.AsyncClient, address: str, password: str, at: str) -> httpx.Response:
    # The gateway sets x-his-client-ip from the peer address; here the test plays the gateway.
    return await client.post(
        "/auth/login", json={"email": address, "password": password}, headers={"x-his-client-ip": at}
    )


async def test_concurrent_guesses_from_one_address_cannot_outrun_the_backoff(make: Api) -> None:
    client, identity, _ = make(throttle=Throttle(pair=Backoff(free=3)))
    account = email()
    assert (await register(client, account)).status_code == 201
    answers = await asyncio.gather(*(login(client, account, f"wrong guess {n:02d} xx", ATTACKER) for n in range(12)))
    checked = [r for r in answers if r.status_code == 401]
    assert len(checked) == identity.throttle.pair.free, [r.status_code for r in answers]
    assert {r.status_code for r in answers} == {401, 429}


class CountingPasswords(Passwords):
    hashes = 0

    async def hash(self, password: str) -> str:
        self.hashes += 1
        return await super().hash(password)


async def test_a_registration_flood_from_one_address_is_refused_before_hashing(make: Api) -> None:
    passwords = CountingPasswords()
    client, _, _ = make(passwords=passwords, registrations=Registrations(per_address=3, overall=1000))
    answers = await asyncio.gather(*(register(client, email(), "192.0.2.77") for _ in range(30)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [201] * 3 + [429] * 27, statuses
    assert all(int(r.headers["retry-after"]) == 600 for r in answers if r.status_code == 429)
    assert passwords.hashes == 3  # the refused ones cost no hashing


async def test_a_registration_flood_leaves_logins_their_own_hashing_capacity(make: Api) -> None:
    passwords = Passwords(other=Capacity("other", 1, queue=4, wait=1.0))
    client, identity, _ = make(passwords=passwords)
    nurse = email()
    await identity.register(email=nurse, password=PASSWORD, full_name="Ay Se", roles=[Role.NURSE])
    flood = [asyncio.ensure_future(register(client, email(), f"203.0.113.{n}")) for n in range(40)]

    async def saturated() -> bool:  # the fault landed: every slot hashing, the queue full
        return passwords.other.busy == passwords.other.slots and passwords.other.waiting == passwords.other.queue

    await wait_for(saturated, timeout=10, every=0.005, what="the registrations to fill their hashing capacity")
    started = time.perf_counter()
    signed_in = await login(client, nurse, PASSWORD, NURSE)
    took = time.perf_counter() - started
    created = sum(1 for f in flood if f.done() and f.result().status_code == 201)
    assert signed_in.status_code == 200
    # It hashed beside the registrations, not after those queued (each hash takes about as long).
    assert created <= 2, f"the login waited for {created} registrations"
    assert took < 5.0, f"a login took {took:.2f}s behind a flood of registrations"  # far below the gateway's 10 s
    answers = await asyncio.gather(*flood)
    statuses = {r.status_code for r in answers}
    assert statuses == {201, 503}, statuses
    busy = [r for r in answers if r.status_code == 503]
    assert all(int(r.headers["retry-after"]) >= 1 for r in busy)
    assert busy[0].headers["content-type"] == "application/problem+json"
    assert identity.passwords.login.waiting == 0
