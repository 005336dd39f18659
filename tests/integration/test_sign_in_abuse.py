"""What one client can do to sign-in and registration, on a real PostgreSQL: lock others out,
flood registrations, starve logins of hashing time. The throttles run on a fixed clock."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from his.identity.app import http as identity_http
from his.identity.domain import Backoff
from his.identity.handlers import Identity, KeyRing, Registrations, Throttle
from his.identity.passwords import Capacity, Passwords
from his.identity.store import IdentityStore
from his.kernel import migrations, problems
from his.kernel.db import Database
from his.kernel.web import mount
from tests.support.waiting import wait_for

PASSWORD = "correct horse battery staple"
WRONG = "wrong wrong wrong wrong"
NURSE, ATTACKER = "198.51.100.20", "203.0.113.66"


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


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


Api = Callable[..., tuple[httpx.AsyncClient, Identity, Clock]]


@pytest.fixture
async def make(db: Database) -> AsyncIterator[Api]:
    clients: list[httpx.AsyncClient] = []

    def build(**kwargs: object) -> tuple[httpx.AsyncClient, Identity, Clock]:
        clock = Clock()
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


async def test_a_guesser_at_one_address_cannot_lock_the_nurse_out(make: Api) -> None:
    client, _, _ = make()
    nurse = email()
    assert (await register(client, nurse)).status_code == 201
    for _ in range(5):
        assert (await login(client, nurse, WRONG, ATTACKER)).status_code == 401
    held = await login(client, nurse, PASSWORD, ATTACKER)  # even the right password waits there now
    assert held.status_code == 429 and held.headers["retry-after"] == "1"
    assert held.headers["content-type"] == "application/problem+json"
    # Shift change: the nurse signs in from the ward's workstation at once.
    assert (await login(client, nurse, PASSWORD, NURSE)).status_code == 200
    # Her own mistakes at her own address do not block her either.
    assert (await login(client, nurse, WRONG, NURSE)).status_code == 401
    assert (await login(client, nurse, PASSWORD, NURSE)).status_code == 200


async def test_each_further_failure_at_an_address_doubles_the_wait_up_to_a_cap(make: Api) -> None:
    client, _, clock = make(throttle=Throttle(pair=Backoff(free=2, base_seconds=1, cap_seconds=4)))
    account = email()
    assert (await register(client, account)).status_code == 201
    for _ in range(2):
        assert (await login(client, account, WRONG, ATTACKER)).status_code == 401
    waits = []
    for _ in range(5):
        refused = await login(client, account, WRONG, ATTACKER)
        assert refused.status_code == 429
        waits.append(int(refused.headers["retry-after"]))
        clock.advance(waits[-1] - 0.001)
        assert (await login(client, account, WRONG, ATTACKER)).status_code == 429, "let in before its time"
        clock.advance(0.001)
        assert (await login(client, account, WRONG, ATTACKER)).status_code == 401
    assert waits == [1, 2, 4, 4, 4]
    clock.advance(4)
    assert (await login(client, account, PASSWORD, ATTACKER)).status_code == 200
    # The right password forgave that address's failures: the next mistakes are free again.
    assert [(await login(client, account, WRONG, ATTACKER)).status_code for _ in range(2)] == [401, 401]


async def test_concurrent_guesses_from_one_address_cannot_outrun_the_backoff(make: Api) -> None:
    client, identity, _ = make(throttle=Throttle(pair=Backoff(free=3)))
    account = email()
    assert (await register(client, account)).status_code == 201
    answers = await asyncio.gather(*(login(client, account, f"wrong guess {n:02d} xx", ATTACKER) for n in range(12)))
    checked = [r for r in answers if r.status_code == 401]
    assert len(checked) == identity.throttle.pair.free, [r.status_code for r in answers]
    assert {r.status_code for r in answers} == {401, 429}


async def test_guessing_one_account_from_many_addresses_meets_the_account_ceiling(make: Api) -> None:
    client, identity, clock = make(throttle=Throttle(account_limit=6, window_seconds=900))
    account = email()
    assert (await register(client, account)).status_code == 201
    botnet = [f"203.0.113.{n}" for n in range(1, 4)]
    for address in botnet:
        for _ in range(2):  # within each address's free failures
            assert (await login(client, account, WRONG, address)).status_code == 401
    clock.advance(60)
    ceiling = await login(client, account, PASSWORD, "192.0.2.200")  # from anywhere, until the window passes
    assert ceiling.status_code == 429 and int(ceiling.headers["retry-after"]) == 900 - 60
    other = email()  # other accounts are not affected
    assert (await register(client, other)).status_code == 201
    assert (await login(client, other, PASSWORD, botnet[0])).status_code == 200
    clock.advance(900 - 60)
    assert (await login(client, account, PASSWORD, "192.0.2.200")).status_code == 200
    assert identity.throttle.account_limit == 6


async def test_registrations_are_limited_per_address_and_overall(make: Api) -> None:
    client, identity, clock = make(registrations=Registrations(per_address=3, overall=5, window_seconds=600))
    home, cafe, library = "192.0.2.10", "192.0.2.11", "192.0.2.12"
    weak = await client.post(
        "/auth/register",
        json={"email": email(), "password": "password1234", "full_name": "X Y"},
        headers={"x-his-client-ip": home},
    )
    assert weak.status_code == 422  # refused before it counts
    assert [(await register(client, email(), home)).status_code for _ in range(4)] == [201, 201, 201, 429]
    clock.advance(100)
    assert [(await register(client, email(), cafe)).status_code for _ in range(2)] == [201, 201]
    everyone = await register(client, email(), library)  # five in ten minutes: nobody now
    assert everyone.status_code == 429 and int(everyone.headers["retry-after"]) == 600 - 100
    assert everyone.headers["content-type"] == "application/problem+json"
    # An administrator's account creation is not a self-registration: not limited.
    assert await identity.register(email=email(), password=PASSWORD, full_name="Staff Member")
    clock.advance(500)
    assert (await register(client, email(), library)).status_code == 201


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
    assert (await register(client, nurse)).status_code == 201
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
