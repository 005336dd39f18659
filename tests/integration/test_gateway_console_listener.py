"""The gateway's listener for the console (ADR 0027) on a real socket with real TLS: only the
console's workload certificate gets in (another workload's is answered 403 and closed, a client
without one fails the handshake), and there the address the console names in
``X-His-Client-IP`` is the client's, for the limits and for the upstream, as the browser's
address would be on the public listener. A stand-in upstream on 127.0.0.1 plays identity."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from his.gateway.app import Edge, console_listener, create_app
from his.gateway.settings import GatewaySettings
from his.kernel.pki import LocalCA, WorkloadIdentity, spiffe_id
from tests.integration.test_gateway_listener import serving


@dataclass
class Identity:
    """Plays identity's login: answers 200 with the client address the gateway told it."""

    clients: list[str] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                lines = head.split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
                await reader.readexactly(int(headers.get("content-length", "0")))
                self.clients.append(headers.get("x-his-client-ip", ""))
                body = json.dumps({"client": self.clients[-1]}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
                )
                writer.write(body)
                await writer.drain()


@dataclass
class Listener:
    port: int
    identity: Identity
    ca: LocalCA
    pki: Path

    def client(self, who: WorkloadIdentity | None) -> httpx.AsyncClient:
        context = ssl.create_default_context(cafile=str(self.ca.ca_cert_path))
        if who is not None:
            context.load_cert_chain(who.cert, who.key)
        return httpx.AsyncClient(base_url=f"https://127.0.0.1:{self.port}", verify=context, timeout=5.0)


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[Listener]:
    ca = LocalCA(tmp_path / "pki").ensure()
    gateway = ca.issue("gateway", spiffe_id("gateway"))
    identity = Identity()
    server = await asyncio.start_server(identity.serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    s = GatewaySettings(
        tls_cert=gateway.cert,
        tls_key=gateway.key,
        tls_ca=gateway.ca,
        gateway_rate_per_ip=1.0,
        gateway_burst=3,
    )
    app = create_app({"identity": url}, s)
    try:
        async with serving(console_listener(Edge(app, app.state.gateway, names_client=True), s)) as port:
            yield Listener(port, identity, ca, tmp_path / "pki")
    finally:
        await app.state.gateway.close()
        server.close()


LOGIN = {"email": "nurse@example.org", "password": "correct horse battery staple"}


async def test_the_console_names_the_browser_and_the_upstream_is_told_it(listener: Listener) -> None:
    console = listener.ca.issue("console", spiffe_id("console"))
    async with listener.client(console) as c:
        r = await c.post("/api/auth/login", json=LOGIN, headers={"x-his-client-ip": "203.0.113.7"})
        assert r.status_code == 200, r.text
        assert r.json() == {"client": "203.0.113.7"}
        # Without a name, or with one that is no address, or with two, the console is refused.
        for headers in ({}, {"x-his-client-ip": "not-an-address"}):
            r = await c.post("/api/auth/login", json=LOGIN, headers=headers)
            assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
        r = await c.post(
            "/api/auth/login",
            json=LOGIN,
            headers=[("x-his-client-ip", "203.0.113.7"), ("x-his-client-ip", "198.51.100.1")],
        )
        assert r.status_code == 400
    assert listener.identity.clients == ["203.0.113.7"]


async def test_the_limits_count_each_browser_not_the_console(listener: Listener) -> None:
    console = listener.ca.issue("console", spiffe_id("console"))
    async with listener.client(console) as c:

        async def login(client: str) -> int:
            r = await c.post("/api/auth/login", json=LOGIN, headers={"x-his-client-ip": client})
            return r.status_code

        flood = [await login("203.0.113.9") for _ in range(6)]
        assert flood[:3] == [200, 200, 200] and 429 in flood[3:]  # a burst of 3, then 1 a second
        assert await login("203.0.113.10") == 200  # another browser, through the same console


async def test_another_workload_is_refused_and_a_client_without_a_certificate_cannot_connect(
    listener: Listener,
) -> None:
    patients = listener.ca.issue("patients", spiffe_id("patients"))
    async with listener.client(patients) as c:
        r = await c.post("/api/auth/login", json=LOGIN, headers={"x-his-client-ip": "203.0.113.7"})
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    async with listener.client(None) as c:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            await c.post("/api/auth/login", json=LOGIN, headers={"x-his-client-ip": "203.0.113.7"})
    assert listener.identity.clients == []
