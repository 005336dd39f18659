"""What one client can do to a hospital under a real `his up`, with the gateway configured as
`his up` configures it (default limits; only the read deadlines shortened to keep the test short:
the private hospital of conftest.py, which these tests are the first to use).

Each attacker comes from its own loopback address (127.0.0.2, .3, …: Linux routes all of 127/8
to the loopback) and the real user from 127.0.0.1, so the per-address limits apply to the
attacker and not to the user, as they would across a network.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
import time
import uuid

import httpx
import pytest

from tests.e2e.harness import ADMIN, HIS, Hospital, his_env, register_patient
from tests.e2e.private import READ_DEADLINE

SLACK = 3.0


def client(source: str, base: str, **kwargs: object) -> httpx.AsyncClient:
    """An HTTP client whose connections leave from ``source``."""
    transport = httpx.AsyncHTTPTransport(local_address=source, limits=httpx.Limits(max_connections=40))
    return httpx.AsyncClient(base_url=base, transport=transport, timeout=15, **kwargs)  # type: ignore[arg-type]


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``, from Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:{{(.*)}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def ops(hospital: Hospital, path: str) -> httpx.Response:
    """``path`` on the gateway's operations listener, as the operator."""
    with hospital.internal() as c:
        return c.get(hospital.url("gateway") + path)


def readiness_asked_of_identity(hospital: Hospital) -> float:
    with hospital.internal() as c:
        text = c.get(hospital.url("identity") + "/metrics").text
    return metric(text, "his_http_request_duration_seconds_count", method="GET", route="/readyz")


def test_readiness_and_metrics_are_only_on_the_operations_listener(hospital: Hospital) -> None:
    public = httpx.Client(base_url=hospital.gateway, timeout=10)
    assert public.get("/metrics").status_code == 404
    assert public.get("/readyz").status_code == 404
    assert public.get("/healthz").json() == {"status": "ok", "service": "gateway"}
    url = httpx.URL(hospital.url("gateway"))
    assert url.scheme == "https" and url.host == "127.0.0.1" and url.port != hospital.port
    assert ops(hospital, "/readyz").json()["status"] == "ready"
    assert "his_gateway_connections" in ops(hospital, "/metrics").text
    anonymous = ssl.create_default_context(cafile=str(hospital.operator().ca))  # trusts it, shows no certificate
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(f"{url}/metrics", verify=anonymous, timeout=5)
    env = his_env(hospital.data, hospital.port)
    out = subprocess.run([HIS, "status", "--json"], env=env, capture_output=True, timeout=60, check=True)
    gateway = next(s for s in json.loads(out.stdout)["services"] if s["name"] == "gateway")
    assert gateway["health"] == "ready" and gateway["http"]["requests_total"] > 0


async def test_a_flood_of_the_public_port_costs_the_services_nothing_and_readiness_holds(hospital: Hospital) -> None:
    asked_before, began = readiness_asked_of_identity(hospital), time.monotonic()
    paths = ["/", "/readyz", "/metrics", "/healthz"] * 100
    async with client("127.0.0.3", hospital.gateway) as attacker, client("127.0.0.1", hospital.gateway) as user:
        flood = asyncio.gather(*(attacker.get(p) for p in paths))
        await asyncio.sleep(0.5)  # into the flood (not a synchronisation: that it still runs is checked)
        started = time.monotonic()
        jwks = await user.get("/api/auth/jwks")
        took = time.monotonic() - started
        ready = await asyncio.to_thread(ops, hospital, "/readyz")
        assert not flood.done(), "the flood was over before the checks"
        answers = await flood
    statuses = [r.status_code for r in answers]
    # `/` is the console's: signed out, a redirect to its sign-in page (303), which asks no service.
    assert set(statuses) <= {200, 303, 404, 429}, statuses  # past its share, one address waits (429)
    assert all(r.status_code in (404, 429) for r in answers if r.url.path in ("/readyz", "/metrics"))
    assert jwks.status_code == 200 and took < 2.0, took
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    # Only the operator's readiness check above (and the gateway's health page, were it reached,
    # once per 5 s) asked identity: not once per request of the flood's 200 for `/` and readiness.
    rounds = 1 + (time.monotonic() - began) / 5 + 1
    assert readiness_asked_of_identity(hospital) - asked_before <= rounds


async def test_slow_clients_are_cut_off_and_cannot_crowd_out_others(hospital: Hospital) -> None:
    port = hospital.port
    cut_before = metric(ops(hospital, "/metrics").text, "his_gateway_connections_cut_total", reason="head")

    async def hold() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.4", 0))
        writer.write(b"GET /api/patients HTTP/1.1\r\nHost: his\r\nX-Never: ends")
        return reader, writer

    started = time.monotonic()
    held = [await hold() for _ in range(150)]
    opened = metric(ops(hospital, "/metrics").text, "his_gateway_connections", listener="public")
    async with client("127.0.0.1", hospital.gateway) as user:
        t = time.monotonic()
        assert (await user.get("/api/auth/jwks")).status_code == 200
        took = time.monotonic() - t
    answers = await asyncio.gather(*(asyncio.wait_for(r.read(), READ_DEADLINE + SLACK) for r, _ in held))
    cut_after = time.monotonic() - started
    for _, writer in held:
        writer.close()
    assert opened >= 100, opened  # the attack held connections (as many as one address may)
    assert took < 2.0, took
    codes = [a.split(b" ", 2)[1] for a in answers]
    assert codes.count(b"503") == 50 and codes.count(b"408") == 100, codes
    assert cut_after < READ_DEADLINE + SLACK
    cut = metric(ops(hospital, "/metrics").text, "his_gateway_connections_cut_total", reason="head") - cut_before
    assert cut == 100
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.8", 0))
    writer.write(b'POST /api/auth/login HTTP/1.1\r\nHost: his\r\nContent-Length: 200\r\n\r\n{"email": "')
    body = await asyncio.wait_for(reader.read(), READ_DEADLINE + SLACK)
    writer.close()
    assert body.startswith(b"HTTP/1.1 408 ") and b"request body not received in time" in body


def test_answers_are_not_cached_nor_sniffed_and_name_no_server(hospital: Hospital) -> None:
    admin = hospital.login()
    patient = register_patient(hospital, admin, f"Cache{uuid.uuid4().hex[:6]}")
    with httpx.Client(base_url=hospital.gateway, timeout=10) as c:
        answers = [
            c.post("/api/auth/login", json={"email": ADMIN[0], "password": ADMIN[1]}),
            c.get(f"/api/patients/{patient['id']}", headers=admin),
            c.get(f"/api/patients/{uuid.uuid4()}", headers=admin),
            c.get("/api/patients"),
            c.get("/"),  # the console: signed out, sent to its sign-in page
            c.get("/sign-in"),
        ]
        health = c.get("/healthz")
    for r in answers:
        assert r.headers["cache-control"] == "no-store", r.url
    for r in [*answers, health, ops(hospital, "/metrics")]:
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        assert "server" not in r.headers, r.url
    assert [r.status_code for r in answers] == [200, 200, 404, 401, 303, 200]


def registrations_seen_by_identity(hospital: Hospital) -> dict[str, float]:
    with hospital.internal() as c:
        text = c.get(hospital.url("identity") + "/metrics").text
    return {
        code: metric(text, "his_http_request_duration_seconds_count", route="/auth/register", status=code)
        for code in ("201", "429")
    }


async def test_a_registration_flood_gets_429s_and_a_real_login_still_signs_in(hospital: Hospital) -> None:
    seen_before = registrations_seen_by_identity(hospital)

    def account(n: int) -> dict[str, str]:
        return {
            "email": f"flood-{n}-{uuid.uuid4().hex[:6]}@example.org",
            "password": "many new accounts at once",
            "full_name": f"Flood {n}",
        }

    async with client("127.0.0.5", hospital.gateway) as attacker, client("127.0.0.1", hospital.gateway) as user:
        flood = asyncio.gather(*(attacker.post("/api/auth/register", json=account(n)) for n in range(60)))
        started = time.monotonic()
        signed_in = await user.post("/api/auth/login", json={"email": ADMIN[0], "password": ADMIN[1]})
        took = time.monotonic() - started
        answers = await flood
    statuses = [r.status_code for r in answers]
    # Five from one address in ten minutes (the default). On a busy machine some of the flood
    # finds no capacity in time (the gateway no connection to identity, or identity no hashing
    # slot): those are told so (503 with Retry-After), never kept waiting into a 504.
    assert set(statuses) <= {201, 429, 503}, statuses
    assert 1 <= statuses.count(201) <= 5 and statuses.count(429) >= 1, statuses
    for r in answers:
        if r.status_code in (429, 503):
            assert int(r.headers["retry-after"]) > 0
    assert all("too many registrations" in r.json()["detail"] for r in answers if r.status_code == 429)
    assert signed_in.status_code == 200 and took < 5.0, took
    seen = registrations_seen_by_identity(hospital)  # the flood reached identity: not stopped earlier
    assert seen["201"] - seen_before["201"] == statuses.count(201)
    assert seen["429"] - seen_before["429"] == statuses.count(429)


def test_a_guesser_cannot_lock_a_nurse_out_at_shift_change(hospital: Hospital) -> None:
    admin = hospital.login()
    tag = uuid.uuid4().hex[:6]
    email, password = f"nurse-{tag}@hospital.example", "long enough staff passphrase"
    body = {"email": email, "password": password, "full_name": f"Nurse {tag}", "roles": ["NURSE"]}
    assert httpx.post(f"{hospital.gateway}/api/admin/users", json=body, headers=admin, timeout=10).status_code == 201
    attacker = httpx.Client(
        base_url=hospital.gateway, transport=httpx.HTTPTransport(local_address="127.0.0.6"), timeout=15
    )
    ward = httpx.Client(base_url=hospital.gateway, transport=httpx.HTTPTransport(local_address="127.0.0.7"), timeout=15)
    waits: list[int] = []
    for n in range(12):  # a guesser who waits as told: five free guesses, then longer and longer waits
        r = attacker.post("/api/auth/login", json={"email": email, "password": f"guess number {n} of many"})
        assert r.status_code in (401, 429), r.text
        if r.status_code == 429:
            waits.append(int(r.headers["retry-after"]))
            if waits[-1] >= 4:
                break
            time.sleep(waits[-1])  # the wait it was told, which is what is being tested
    assert n >= 5 and waits[-1] >= 4, waits
    held = attacker.post("/api/auth/login", json={"email": email, "password": password})
    assert held.status_code == 429 and int(held.headers["retry-after"]) >= 1
    nurse = ward.post("/api/auth/login", json={"email": email, "password": password})
    assert nurse.status_code == 200, nurse.text
