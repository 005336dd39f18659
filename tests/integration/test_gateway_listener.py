"""The gateway's listeners on real sockets: slow and greedy clients, what the public port serves,
and the headers every answer carries. A stand-in upstream on 127.0.0.1 plays the services.

Clients come from several loopback addresses (127.0.0.2, .3, …: Linux routes all of 127/8 to
the loopback), so that per-address limits can be told from overall ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import REGISTRY

from his.gateway.app import Edge, create_app, listener
from his.gateway.settings import GatewaySettings

HEAD_TIMEOUT = BODY_TIMEOUT = 0.5
SLACK = 1.5  # on a busy 2-core machine, how late a deadline may fire


@dataclass
class Upstream:
    """Answers every request 200 ``{}`` after ``delay`` seconds and remembers its request line."""

    delay: float = 0.0
    seen: list[str] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.seen.append(head.split(b"\r\n", 1)[0].decode())
                length = [int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")]
                await reader.readexactly(length[0] if length else 0)
                await asyncio.sleep(self.delay)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()


@dataclass
class Listener:
    port: int
    upstream: Upstream
    settings: GatewaySettings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def connect(self, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0))


@contextlib.asynccontextmanager
async def serving(config: uvicorn.Config) -> AsyncIterator[int]:
    """Serve ``config`` on a free port of 127.0.0.1 until the block ends; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), task
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    up = Upstream()
    server = await asyncio.start_server(up.serve, "127.0.0.1", 0)
    yield up, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()


def settings(**changes: Any) -> GatewaySettings:
    base: dict[str, Any] = {
        "gateway_header_timeout": HEAD_TIMEOUT,
        "gateway_body_timeout": BODY_TIMEOUT,
        "gateway_max_connections": 40,
        "gateway_max_connections_per_address": 10,
        "gateway_rate_per_ip": 1000.0,
        "gateway_burst": 1000,
    }
    return GatewaySettings(**(base | changes))


@contextlib.asynccontextmanager
async def gateway(upstream: tuple[Upstream, str], **changes: Any) -> AsyncIterator[Listener]:
    up, url = upstream
    s = settings(**changes)
    app = create_app({"identity": url, "patients": url}, s)
    try:
        async with serving(listener(Edge(app, app.state.gateway), s)) as port:
            yield Listener(port, up, s)
    finally:
        await app.state.gateway.close()


async def answer(reader: asyncio.StreamReader, timeout: float, since: float | None = None) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took (from
    ``since``, a ``time.monotonic()``, or from now)."""
    started = time.monotonic() if since is None else since
    data = await asyncio.wait_for(reader.read(), timeout)
    return data, time.monotonic() - started


def status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_uvicorn_alone_holds_a_slow_request_head_for_ever() -> None:
    """Why the gateway guards its listener: neither uvicorn's keep-alive timeout nor its
    ``limit_concurrency`` bounds a request whose head never ends."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never reached: no request is ever complete")

    config = uvicorn.Config(
        app, http="httptools", timeout_keep_alive=1, limit_concurrency=5, lifespan="off", log_config=None
    )
    async with serving(config) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        for _, writer in held:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        await asyncio.sleep(2.0)  # twice its keep-alive timeout: nothing happens in that time
        for reader, _ in held:
            assert not reader.at_eof() and not reader._buffer  # type: ignore[attr-defined]
        for _, writer in held:
            writer.close()


async def test_a_request_head_sent_slowly_is_cut_with_a_408(upstream: tuple[Upstream, str]) -> None:
    async with gateway(upstream) as gw:
        cut_before = sample("his_gateway_connections_cut_total", listener="public", reason="head")
        opened = time.monotonic()
        idle = [await gw.connect("127.0.0.2") for _ in range(4)]  # open, and nothing sent
        partial = [await gw.connect("127.0.0.2") for _ in range(4)]
        for _, writer in partial:
            writer.write(b"GET /api/patients HTTP/1.1\r\nHost: x\r\n")
        dripping = await gw.connect("127.0.0.2")  # a byte at a time keeps no idle timer from firing

        async def drip() -> None:
            for ch in b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                dripping[1].write(bytes([ch]))
                await asyncio.sleep(0.05)

        dripper = asyncio.create_task(drip())
        answers = await asyncio.gather(
            *(answer(r, HEAD_TIMEOUT + SLACK, since=opened) for r, _ in [*idle, *partial, dripping])
        )
        dripper.cancel()
        for data, took in answers:
            assert status(data) == 408 and b"request headers not received in time" in data
            assert HEAD_TIMEOUT * 0.9 <= took <= HEAD_TIMEOUT + SLACK, took  # held, then cut
        assert sample("his_gateway_connections_cut_total", listener="public", reason="head") == cut_before + 9
        assert gw.upstream.seen == []


async def test_a_request_body_sent_slowly_is_cut_with_a_408(upstream: tuple[Upstream, str]) -> None:
    async with gateway(upstream) as gw:
        errors_before = sample(
            "his_http_request_duration_seconds_count", method="POST", route="/api/{path:path}", status="500"
        )
        reader, writer = await gw.connect()
        writer.write(
            b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"email": '
        )
        data, took = await answer(reader, BODY_TIMEOUT + SLACK)
        assert status(data) == 408 and b"request body not received in time" in data
        assert data.count(b"HTTP/1.1") == 1  # the gateway adds nothing after it
        assert took >= BODY_TIMEOUT * 0.9
        # A body that keeps coming after the answer (here to a route that reads none) is cut too.
        reader, writer = await gw.connect()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        data, took = await answer(reader, BODY_TIMEOUT + SLACK)
        assert status(data) == 200 and data.count(b"HTTP/1.1") == 1
        assert gw.upstream.seen == []
        assert errors_before == sample(
            "his_http_request_duration_seconds_count", method="POST", route="/api/{path:path}", status="500"
        )


async def test_the_deadlines_cover_reading_the_request_not_answering_it(upstream: tuple[Upstream, str]) -> None:
    upstream[0].delay = HEAD_TIMEOUT + BODY_TIMEOUT + 0.3
    async with gateway(upstream) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        slow = await client.post("/api/auth/login", json={"email": "a@b.c"})
        assert slow.status_code == 200
        upstream[0].delay = 0
        await asyncio.sleep(HEAD_TIMEOUT + 0.2)  # an idle kept-alive connection, longer than a head may take
        again = await client.post("/api/auth/login", json={"email": "a@b.c"})
        assert again.status_code == 200
        assert len(upstream[0].seen) == 2


async def test_a_huge_request_head_is_refused_with_a_431(upstream: tuple[Upstream, str]) -> None:
    async with gateway(upstream) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        assert (await client.get("/healthz", headers={"x-big": "a" * 16_000})).status_code == 200
        reader, writer = await gw.connect()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000)  # and it has not ended
        data, took = await answer(reader, 5)
        assert status(data) == 431 and took < HEAD_TIMEOUT


async def test_open_connections_are_capped_per_address_and_in_all(upstream: tuple[Upstream, str]) -> None:
    async with gateway(upstream, gateway_header_timeout=5.0) as gw:
        held = [await gw.connect("127.0.0.2") for _ in range(10)]
        await asyncio.sleep(0.1)
        one_more, _ = await gw.connect("127.0.0.2")
        data, took = await answer(one_more, 2)
        assert status(data) == 503 and b"retry-after: 1" in data.lower() and took < 1
        assert b"too many connections from your address" in data
        async with httpx.AsyncClient(base_url=gw.url, timeout=5) as client:  # others are served as usual
            assert (await client.get("/healthz")).status_code == 200
        refused = [await gw.connect("127.0.0.2") for _ in range(60)]  # refused: they count against no cap
        held += [await gw.connect(f"127.0.0.{n}") for n in (3, 4, 5) for _ in range(10)]
        await asyncio.sleep(0.1)
        full, _ = await gw.connect("127.0.0.6")
        data, _ = await answer(full, 2)
        assert status(data) == 503 and b"too many connections; try again shortly" in data
        for reader, _ in held:
            assert not reader.at_eof()  # the 40 held ones stayed open (until their head deadline)
        assert {status(await reader.read()) for reader, _ in refused} == {503}
        for _, writer in held + refused:
            writer.close()
        await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=gw.url, timeout=5) as client:
            assert (await client.get("/healthz")).status_code == 200


async def test_every_answer_says_nosniff_api_answers_no_store_and_none_names_the_server(
    upstream: tuple[Upstream, str],
) -> None:
    async with gateway(upstream) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        forwarded = await client.post("/api/auth/login", json={})
        refused = await client.get("/api/patients")  # the gateway's own 401
        unknown = await client.get("/api/nowhere")
        console = await client.get("/")
        health = await client.get("/healthz")
        reader, writer = await gw.connect()
        writer.write(b"GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n")  # answered by uvicorn itself
        bad, _ = await answer(reader, 5)
    for r in (forwarded, refused, unknown, console, health):
        assert r.headers.get("x-content-type-options") == "nosniff", r.url
        assert "server" not in r.headers, r.url
    for r in (forwarded, refused, unknown, console):
        assert r.headers["cache-control"] == "no-store", r.url
    assert (forwarded.status_code, refused.status_code, unknown.status_code, status(bad)) == (200, 401, 404, 400)
    assert b"x-content-type-options: nosniff" in bad.lower() and b"server:" not in bad.lower()


async def test_the_public_port_serves_no_readiness_or_metrics_and_the_console_asks_rarely(
    upstream: tuple[Upstream, str],
) -> None:
    async with (
        gateway(upstream, gateway_max_connections_per_address=100) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=10) as client,
    ):
        assert (await client.get("/metrics")).status_code == 404
        assert (await client.get("/readyz")).status_code == 404
        pages = await asyncio.gather(*(client.get("/") for _ in range(50)))
        assert {p.status_code for p in pages} == {200} and "ready" in pages[0].text
        readiness_asked = [line for line in gw.upstream.seen if line.startswith("GET /readyz")]
        assert len(readiness_asked) == 2  # one round for the two upstreams, not one per page


async def test_outside_the_api_too_one_address_is_rate_limited(upstream: tuple[Upstream, str]) -> None:
    async with (
        gateway(upstream, gateway_rate_per_ip=1.0, gateway_burst=5) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=10) as client,
    ):
        answers = [await client.get("/") for _ in range(8)]
    assert [r.status_code for r in answers] == [200] * 5 + [429] * 3
    assert answers[-1].headers["retry-after"] == "1"


async def test_the_operations_listener_serves_readiness_and_metrics(upstream: tuple[Upstream, str]) -> None:
    from his.gateway.app import ops_app, ops_listener

    _, url = upstream
    s = settings()
    app = create_app({"identity": url}, s)
    gw = app.state.gateway
    try:
        async with (
            serving(ops_listener(ops_app(gw), s)) as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
        ):
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["services"] == {"identity": "ready"}
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200 and "his_gateway_connections" in metrics.text
            assert (await client.get("/healthz")).status_code == 200
            assert "server" not in metrics.headers
    finally:
        await gw.close()


async def test_an_upstream_too_busy_to_connect_is_a_503_with_retry_after_not_a_504(
    upstream: tuple[Upstream, str],
) -> None:
    """A service that cannot even take a connection in time (its accept queue full here) is
    overloaded: the client is told to come back, rather than that the gateway timed out."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    port = full.getsockname()[1]
    waiting = []
    for _ in range(8):  # fill the accept queue: further connection attempts wait unanswered
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        waiting.append(s)
    up, _ = upstream
    try:
        async with (
            gateway((up, f"http://127.0.0.1:{port}")) as gw,
            httpx.AsyncClient(base_url=gw.url, timeout=30) as client,
        ):
            busy = await client.post("/api/auth/login", json={})
    finally:
        for s in waiting:
            s.close()
        full.close()
    assert busy.status_code == 503, busy.text
    assert busy.headers["retry-after"] == "1" and "identity is busy" in busy.json()["detail"]
