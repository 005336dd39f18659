"""The gateway's forwarding against a stand-in upstream on 127.0.0.1: what goes through and what not.

The upstream is a raw HTTP/1.1 server that records each request it gets and answers as told, so
the tests see the bytes the gateway sends and how it handles answers, slowness and absence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest

from his.gateway.app import Edge, create_app
from his.gateway.settings import GatewaySettings
from his.identity.keys import SigningKey, sign_access_token
from his.kernel.security import AUDIENCE, ISSUER
from tests.support.waiting import wait_for


@dataclass
class Upstream:
    answer: bytes = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    delay: float = 0.0
    seen: list[bytes] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                self.seen.append(head + await reader.readexactly(length))
                await asyncio.sleep(self.delay)
                writer.write(self.answer)
                await writer.drain()


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, int]]:
    up = Upstream()
    server = await asyncio.start_server(up.serve, "127.0.0.1", 0)
    yield up, server.sockets[0].getsockname()[1]
    server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def gateway(port: int, timeout: float = 10.0) -> AsyncIterator[httpx.AsyncClient]:
    url = f"http://127.0.0.1:{port}"
    app = create_app({"identity": url, "patients": url}, GatewaySettings(gateway_rate_per_ip=1000.0))
    gw = app.state.gateway
    gw.timeout = type(gw.timeout)(total=timeout, sock_connect=2.0)
    transport = httpx.ASGITransport(app=Edge(app, gw), client=("203.0.113.9", 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client
    finally:
        await gw.close()


async def test_a_public_route_is_forwarded_with_only_allowed_headers(upstream: tuple[Upstream, int]) -> None:
    up, port = upstream
    async with gateway(port) as client:
        r = await client.post(
            "/api/auth/login",
            content=b'{"email":"a@b.c"}',
            params={"q": "a b&c"},
            headers={
                "content-type": "application/json",
                "cookie": "s=1",
                "x-his-client-ip": "10.0.0.1",
                "x-forwarded-for": "10.0.0.2",
            },
        )
    assert r.status_code == 200 and r.json() == {}
    sent = up.seen[0].decode().lower()
    assert sent.startswith("post /auth/login?q=a+b%26c http/1.1")
    assert sent.endswith('{"email":"a@b.c"}') and "content-type: application/json" in sent
    assert "x-his-client-ip: 203.0.113.9" in sent and "10.0.0.1" not in sent
    assert "cookie" not in sent and "x-forwarded-for" not in sent
    assert "x-request-id: " in sent


async def test_answers_keep_only_allowed_headers_and_redirects_are_not_followed(
    upstream: tuple[Upstream, int],
) -> None:
    up, port = upstream
    up.answer = (
        b"HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\nset-cookie: s=1\r\nx-internal: 1\r\ncontent-length: 0\r\n\r\n"
    )
    async with gateway(port) as client:
        r = await client.post("/api/auth/login", json={})
    assert r.status_code == 302 and r.headers["location"] == "/elsewhere"
    assert "set-cookie" not in r.headers and "x-internal" not in r.headers
    assert len(up.seen) == 1


async def test_a_slow_upstream_is_a_504_and_an_absent_one_a_503(upstream: tuple[Upstream, int]) -> None:
    up, port = upstream
    up.delay = 2.0
    async with gateway(port, timeout=0.3) as client:
        slow = await client.post("/api/auth/login", json={})
    assert slow.status_code == 504 and slow.headers["content-type"] == "application/problem+json"
    assert "identity did not answer in time" in slow.text
    async with gateway(closed_port()) as client:
        gone = await client.post("/api/auth/login", json={})
    assert gone.status_code == 503 and gone.headers["content-type"] == "application/problem+json"
    assert "identity is unavailable" in gone.text


async def test_unknown_routes_bodies_and_tokens_are_refused_at_the_edge(upstream: tuple[Upstream, int]) -> None:
    up, port = upstream
    async with gateway(port) as client:
        assert (await client.get("/api/nowhere")).status_code == 404
        assert (await client.delete("/api/auth/login")).status_code == 405
        big = await client.post("/api/auth/login", content=b"x" * (1024 * 1024 + 1))
        assert big.status_code == 413
        anonymous = await client.get("/api/patients")
        assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
        forged = await client.get("/api/patients", headers={"authorization": "Bearer not.a.jwt"})
        assert forged.status_code == 401
        for r in (big, anonymous, forged):
            assert r.headers["content-type"] == "application/problem+json"
    assert up.seen == []


@pytest.mark.parametrize("limit", ["²", "¹²", "٣٠٠٠", "-1", "1e3", "", "0", "201", "100000"])
async def test_a_page_size_the_services_would_refuse_is_a_422_at_the_edge(
    upstream: tuple[Upstream, int], limit: str
) -> None:
    """The services' own rule and status (his.kernel.params), not a 400 of the gateway's own;
    superscript digits pass ``str.isdigit`` but not ``int``: never a 500."""
    up, port = upstream
    async with gateway(port) as client:
        r = await client.post("/api/auth/login", params={"limit": limit}, content=b"{}")
        second = await client.post("/api/auth/login", params=[("limit", "5"), ("limit", limit)], content=b"{}")
    for answer in (r, second):
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["detail"] == "limit must be a whole number from 1 to 200"
    assert up.seen == []


async def test_the_token_checked_is_the_only_token_forwarded(upstream: tuple[Upstream, int]) -> None:
    """With two Authorization headers the gateway would check and rate-limit the first while the
    service acts on the other; such a request is refused."""
    up, port = upstream
    key = SigningKey.generate(datetime.now(UTC))
    jwks = json.dumps({"keys": [key.public_jwk()]}).encode()
    up.answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(jwks), jwks)
    checked, _ = sign_access_token(
        key, subject=str(uuid.uuid4()), roles=["PATIENT"], issuer=ISSUER, audience=AUDIENCE, now=datetime.now(UTC)
    )
    async with gateway(port) as client:
        r = await client.get(
            "/api/patients/me", headers=[("authorization", f"Bearer {checked}"), ("authorization", "Bearer another")]
        )
    forwarded = [h.decode().lower() for h in up.seen if h.startswith(b"GET /patients")]
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json", (r.status_code, forwarded)
    assert forwarded == []


async def test_a_request_finding_every_upstream_connection_busy_is_a_503_unsent(
    upstream: tuple[Upstream, int],
) -> None:
    """Past the pool's 100 connections to one upstream, a request waits at most the connect
    deadline for one to come free, then is told to come back, and is never sent: under an
    overload it is not queued in the gateway until it is answered 504 or not at all."""
    up, port = upstream
    up.delay = 4.0  # every pooled connection is held longer than the connect deadline
    url = f"http://127.0.0.1:{port}"
    settings = GatewaySettings(gateway_rate_per_ip=1000.0, gateway_burst=1000)
    app = create_app({"identity": url, "patients": url}, settings)
    gw = app.state.gateway
    transport = httpx.ASGITransport(app=Edge(app, gw), client=("203.0.113.9", 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as client:
            held = [asyncio.create_task(client.post("/api/auth/login", json={})) for _ in range(100)]
            await wait_for(lambda: ready(len(up.seen) == 100), what="all 100 connections to be taken")
            started = asyncio.get_running_loop().time()
            extra = await client.post("/api/auth/login", json={"n": 101})
            took = asyncio.get_running_loop().time() - started
            answers = await asyncio.gather(*held)
    finally:
        await gw.close()
    assert extra.status_code == 503, extra.text
    assert extra.headers["retry-after"] == "1" and "identity is busy" in extra.json()["detail"]
    assert took < 3.5, took  # told before a connection came free
    assert [r.status_code for r in answers] == [200] * 100
    assert not any(b'"n"' in seen for seen in up.seen), "the refused request reached the upstream"


async def ready(value: bool) -> bool:
    return value
