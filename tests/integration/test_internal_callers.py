"""A service's internal listener on a real socket, as the service runner builds it
(``his.kernel.service.http_config``): the TLS handshake verifies the caller's certificate, the
transport reads its SPIFFE id, and a caller the listener does not admit on a path is answered 403
before the route runs. Certificates are real ones from a CA of the test's own."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from his.kernel.callers import OPERATOR, PROMETHEUS
from his.kernel.config import ServiceSettings
from his.kernel.pki import LocalCA, WorkloadIdentity, spiffe_id
from his.kernel.service import QuietServer, http_config
from tests.support.waiting import wait_for


@dataclass
class Listener:
    url: str
    ca: LocalCA
    reached: list[str]

    def client(self, who: WorkloadIdentity | None) -> httpx.AsyncClient:
        ctx = who.client_context() if who else ssl.create_default_context(cafile=str(self.ca.ca_cert_path))
        return httpx.AsyncClient(base_url=self.url, verify=ctx, timeout=5)

    def issue(self, name: str, kind: str = "service") -> WorkloadIdentity:
        return self.ca.issue(f"{kind}-{name}", spiffe_id(name, kind))


def app(reached: list[str]) -> FastAPI:
    """Stands for the patients service: one route of its API and the operations paths."""
    api = FastAPI()

    @api.get("/patients")
    async def patients() -> list[str]:
        reached.append("/patients")
        return []

    for path in ("/healthz", "/readyz", "/metrics", "/status"):

        async def ops(path: str = path) -> dict[str, str]:
            reached.append(path)
            return {"status": "ok"}

        api.add_api_route(path, ops, methods=["GET"])
    return api


@pytest.fixture
async def listener(tmp_path: Path, unused_tcp_port: int) -> AsyncIterator[Listener]:
    ca = LocalCA(tmp_path / "pki").ensure()
    own = ca.issue("patients", spiffe_id("patients"))
    settings = ServiceSettings(
        host="127.0.0.1", http_port=unused_tcp_port, tls_cert=own.cert, tls_key=own.key, tls_ca=own.ca
    )
    reached: list[str] = []
    server = QuietServer(http_config(app(reached), settings))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        assert not task.done(), task
        return server.started

    await wait_for(started, timeout=10, what="the listener to start")
    yield Listener(f"https://127.0.0.1:{unused_tcp_port}", ca, reached)
    server.request_exit()
    await asyncio.wait_for(task, 10)


async def test_another_services_certificate_is_refused_before_any_route(listener: Listener) -> None:
    billing = listener.issue("billing")
    async with listener.client(billing) as client:
        for path in ("/patients", "/healthz", "/status"):  # twice on one kept-alive connection
            for _ in range(2):
                r = await client.get(path)
                assert r.status_code == 403, (path, r.text)
                assert r.headers["content-type"] == "application/problem+json"
                assert r.json()["detail"] == f"{spiffe_id('billing')} may not call {path} here"
    assert listener.reached == []


async def test_the_gateway_reaches_every_route(listener: Listener) -> None:
    async with listener.client(listener.issue("gateway")) as client:
        for path in ("/patients", "/healthz", "/status"):
            assert (await client.get(path)).status_code == 200, path
    assert listener.reached == ["/patients", "/healthz", "/status"]


async def test_the_operator_prometheus_and_the_probe_reach_their_operations_paths_only(listener: Listener) -> None:
    operator = listener.ca.issue("operator", OPERATOR)
    prometheus = listener.ca.issue("prometheus", PROMETHEUS)
    itself = listener.issue("patients")  # what the cluster's exec probe presents
    expected = {
        operator: {"/healthz": 200, "/readyz": 200, "/metrics": 200, "/status": 200, "/patients": 403},
        prometheus: {"/metrics": 200, "/healthz": 403, "/status": 403, "/patients": 403},
        itself: {"/healthz": 200, "/readyz": 200, "/metrics": 403, "/status": 403, "/patients": 403},
    }
    for who, answers in expected.items():
        async with listener.client(who) as client:
            got = {path: (await client.get(path)).status_code for path in answers}
        assert got == answers, who.cert.name


async def test_no_certificate_or_one_from_another_ca_fails_the_handshake(listener: Listener, tmp_path: Path) -> None:
    stranger = LocalCA(tmp_path / "other").ensure().issue("gateway", spiffe_id("gateway"))
    foreign = ssl.create_default_context(cafile=str(listener.ca.ca_cert_path))
    foreign.load_cert_chain(stranger.cert, stranger.key)
    for client in (listener.client(None), httpx.AsyncClient(base_url=listener.url, verify=foreign, timeout=5)):
        async with client:
            with pytest.raises(httpx.HTTPError):  # no request is read: nothing to answer
                await client.get("/healthz")
    assert listener.reached == []


async def test_the_gateways_operations_listener_admits_the_operator_prometheus_and_its_probe_only(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    """The gateway's health, readiness and metrics listener (``his.gateway.app.ops_listener``):
    another workload's certificate is refused there too, with its own protocol (``guard``)."""
    from his.gateway.app import ops_listener
    from his.gateway.settings import GatewaySettings

    ca = LocalCA(tmp_path / "pki").ensure()
    own = ca.issue("gateway", spiffe_id("gateway"))
    settings = GatewaySettings(
        host="127.0.0.1", ops_port=unused_tcp_port, tls_cert=own.cert, tls_key=own.key, tls_ca=own.ca
    )
    reached: list[str] = []
    server = QuietServer(ops_listener(app(reached), settings))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        assert not task.done(), task
        return server.started

    await wait_for(started, timeout=10, what="the operations listener to start")
    ops = Listener(f"https://127.0.0.1:{unused_tcp_port}", ca, reached)
    try:
        expected = {
            ca.issue("operator", OPERATOR): {"/healthz": 200, "/metrics": 200},
            ca.issue("prometheus", PROMETHEUS): {"/metrics": 200, "/healthz": 403},
            ca.issue("probe", spiffe_id("gateway")): {"/readyz": 200, "/metrics": 403},
            ops.issue("billing"): {"/healthz": 403, "/metrics": 403},
            ops.issue("console"): {"/readyz": 403},
        }
        for who, answers in expected.items():
            async with ops.client(who) as client:
                got = {path: (await client.get(path)).status_code for path in answers}
            assert got == answers, who.cert.name
    finally:
        server.request_exit()
        await asyncio.wait_for(task, 10)
