"""Metric families of the backbone and the figures `his status` computes from them. No IO."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import grpc
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from starlette.responses import Response

from his.cli import scrape
from his.gateway.app import Edge, Gateway, create_app
from his.gateway.routing import Match
from his.kernel import metrics
from his.kernel import observability as obs
from his.kernel.db import UnitOfWork
from his.kernel.resilience import CircuitBreaker
from his.kernel.rpc import RpcClient, _measured


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- his status: parsing and windows ------------------------------------------------------------


def exposition(observations: list[tuple[str, str, float]]) -> str:
    """Prometheus text of an HTTP histogram with the given (route, status, seconds) observations."""
    registry = CollectorRegistry()
    h = Histogram(
        scrape.HTTP_HISTOGRAM.removesuffix("_seconds") + "_seconds",
        "x",
        ["method", "route", "status"],
        buckets=(0.01, 0.05, 0.1, 1),
        registry=registry,
    )
    for route, status, seconds in observations:
        h.labels("GET", route, status).observe(seconds)
    return generate_latest(registry).decode() + "# TYPE his_outbox_backlog gauge\nhis_outbox_backlog 7.0\n"


def test_a_scrape_sums_routes_counts_server_errors_and_leaves_out_operator_routes() -> None:
    text = exposition([("/patients", "200", 0.005), ("/patients/{id}", "503", 0.5), ("/metrics", "200", 0.001)])
    s = scrape.parse(text, at=10.0)
    assert (s.requests, s.errors) == (2, 1)
    assert s.buckets[0.01] == 1 and s.buckets[1.0] == 2 and s.buckets[math.inf] == 2
    assert s.gauges["his_outbox_backlog"] == 7


def test_rate_and_p95_come_from_the_difference_between_two_scrapes() -> None:
    before = scrape.parse(exposition([("/a", "200", 0.5)] * 100), at=0.0)
    # 10 s later: 20 more requests, all fast; one of them a server error.
    after = scrape.parse(
        exposition([("/a", "200", 0.5)] * 100 + [("/a", "200", 0.005)] * 19 + [("/a", "500", 0.005)]), at=10.0
    )
    w = scrape.window(before, after)
    assert (w.requests, w.rate, w.error_rate) == (20, 2.0, 0.1)
    assert w.p95 is not None and w.p95 <= 0.01  # the slow requests before the window do not count
    lifetime = scrape.window(None, after)
    assert lifetime.rate == 0 and lifetime.p95 is not None and lifetime.p95 > 0.1


def test_a_restarted_process_gives_lifetime_figures_not_negative_rates() -> None:
    before = scrape.parse(exposition([("/a", "200", 0.005)] * 50), at=0.0)
    after = scrape.parse(exposition([("/a", "200", 0.005)] * 3), at=2.0)
    assert scrape.window(before, after).requests == 3 and scrape.window(before, after).rate == 0


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        ({}, None),
        ({0.1: 0, math.inf: 0}, None),
        ({0.01: 0, 0.02: 100, math.inf: 100}, 0.0195),  # interpolated inside (0.01, 0.02]
        ({0.01: 100, math.inf: 100}, 0.0095),
        ({0.01: 0, math.inf: 10}, 0.01),  # in +Inf: the largest finite bound
    ],
)
def test_quantile_interpolates_like_histogram_quantile(buckets: dict[float, float], expected: float | None) -> None:
    got = scrape.quantile(0.95, buckets)
    assert got == pytest.approx(expected) if expected is not None else got is None


# --- kernel metric families ---------------------------------------------------------------------


class FakePool:
    def get_size(self) -> int:
        return 6

    def get_idle_size(self) -> int:
        return 2

    def get_max_size(self) -> int:
        return 16


def test_pool_use_and_breaker_state_are_read_at_scrape_time() -> None:
    metrics.watch_pool("unit_pool", FakePool())  # type: ignore[arg-type]
    clock = [0.0]
    breaker = CircuitBreaker("unit_dependency", failure_threshold=1, reset_timeout=5, clock=lambda: clock[0])
    metrics.watch_breaker(breaker)
    assert value("his_db_pool_connections", pool="unit_pool", state="in_use") == 4
    assert value("his_db_pool_connections", pool="unit_pool", state="idle") == 2
    assert value("his_db_pool_max_connections", pool="unit_pool") == 16
    assert value("his_circuit_breaker_state", dependency="unit_dependency", state="closed") == 1
    breaker.acquire()
    breaker.failure()
    assert value("his_circuit_breaker_state", dependency="unit_dependency", state="open") == 1
    assert value("his_circuit_breaker_state", dependency="unit_dependency", state="closed") == 0
    clock[0] = 10
    assert value("his_circuit_breaker_state", dependency="unit_dependency", state="half_open") == 1


def test_consumer_batches_count_redeliveries_latency_and_outcomes() -> None:
    metrics.observe_batch("unit_consumer", [1, None, 2, 5], 0.02)
    assert value("his_consumer_redeliveries_total", consumer="unit_consumer") == 2
    assert value("his_consumer_batch_seconds_count", consumer="unit_consumer") == 1
    metrics.count_outcomes("unit_consumer", (0, 0, 0, 0), (3, 1, 0, 2))
    assert value("his_consumer_events_total", consumer="unit_consumer", outcome="applied") == 3
    assert value("his_consumer_events_total", consumer="unit_consumer", outcome="terminated") == 2


def test_relay_batches_observe_publish_time_and_each_acked_events_lag() -> None:
    count = value("his_outbox_commit_to_ack_seconds_count")
    fast = value("his_outbox_commit_to_ack_seconds_bucket", le="2.5")
    published = value("his_outbox_published_total")
    old = datetime.now(UTC) - timedelta(seconds=3)
    rows = [{"id": 1, "created_at": old}, {"id": 2, "created_at": old}, {"id": 3, "created_at": old}]
    metrics.observe_relay(rows, [1, 3], 0.004)
    assert value("his_outbox_commit_to_ack_seconds_count") == count + 2
    assert value("his_outbox_published_total") == published + 2
    assert value("his_outbox_commit_to_ack_seconds_bucket", le="2.5") == fast  # both waited 3 s
    assert value("his_outbox_publish_seconds_count") >= 1


class FakeContext:
    def __init__(self, code: grpc.StatusCode | None = None) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code


async def test_grpc_server_calls_are_timed_by_method_and_status_code() -> None:
    async def ok(request: bytes, context: Any) -> bytes:
        return request

    async def denied(request: bytes, context: Any) -> bytes:
        raise grpc.aio.AbortError

    for fn, code in ((ok, "OK"), (denied, "PERMISSION_DENIED")):
        handler: grpc.RpcMethodHandler[bytes, bytes] = _measured(
            grpc.unary_unary_rpc_method_handler(fn), "/unit.V1/Call"
        )
        # The stubs describe the synchronous API; under grpc.aio the behaviour is a coroutine function,
        # and the measured wrapper reads nothing from its context but code().
        call = cast(Callable[[bytes, FakeContext], Awaitable[bytes]], handler.unary_unary)
        ctx = FakeContext(grpc.StatusCode.PERMISSION_DENIED)
        with pytest.raises(grpc.aio.AbortError) if code != "OK" else _nothing():
            await call(b"x", ctx)
        assert value("his_grpc_server_handling_seconds_count", method="/unit.V1/Call", code=code) == 1


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


class FakeMethod:
    _method = b"/unit.V1/Get"

    def __init__(self, outcome: grpc.StatusCode | None) -> None:
        self.outcome = outcome

    async def __call__(self, request: bytes, timeout: float | None = None, **_: Any) -> bytes:
        if self.outcome is not None:
            raise grpc.aio.AioRpcError(self.outcome, grpc.aio.Metadata(), grpc.aio.Metadata(), "no")
        return request


async def test_grpc_client_attempts_are_timed_by_method_and_status_code() -> None:
    client = RpcClient("unit_peer", channel=None)  # type: ignore[arg-type]
    assert await client.call(FakeMethod(None), b"x", idempotent=True) == b"x"  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError):
        await client.call(FakeMethod(grpc.StatusCode.NOT_FOUND), b"x", idempotent=True)  # type: ignore[arg-type]
    assert value("his_grpc_client_handling_seconds_count", method="/unit.V1/Get", code="OK") == 1
    assert value("his_grpc_client_handling_seconds_count", method="/unit.V1/Get", code="NOT_FOUND") == 1
    assert value("his_circuit_breaker_state", dependency="unit_peer", state="closed") == 1


class FakeConn:
    async def execute(self, query: str) -> str:
        return query.split(maxsplit=1)[0]

    def is_closed(self) -> bool:
        return False


async def test_commit_hooks_of_a_failed_savepoint_are_dropped() -> None:
    uow = UnitOfWork(FakeConn())  # type: ignore[arg-type]
    calls: list[str] = []
    uow.on_commit(lambda: calls.append("kept"))
    with pytest.raises(RuntimeError):
        async with uow.savepoint():
            uow.on_commit(lambda: calls.append("dropped"))
            raise RuntimeError
    for fn in uow.committed:
        fn()
    assert calls == ["kept"]


class ForwardlessGateway(Gateway):
    async def forward(self, request: Any, match: Match, body: bytes, peer: str) -> Response:
        return Response(b"{}", status_code=201)


async def test_the_gateway_labels_forwarded_requests_by_their_public_route_template() -> None:
    gw = ForwardlessGateway({"identity": "https://127.0.0.1:1"})
    app = obs.MetricsMiddleware(Edge(create_app({}), gw))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    for path in ("/api/auth/jwks", "/api/nowhere/123"):
        scope: dict[str, Any] = {
            "type": "http",
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 80),
            "scheme": "http",
        }
        await app(scope, receive, send)
    assert value("his_http_request_duration_seconds_count", method="GET", route="/api/auth/jwks", status="201") == 1
    assert value("his_http_request_duration_seconds_count", method="GET", route="/api/{path:path}", status="404") >= 1


def test_the_live_view_shows_figures_and_only_busy_consumers() -> None:
    from rich.console import Console

    from his.cli.ops import Consumer, Running, status_view

    idle: Consumer = {
        "name": "idle_one",
        "stream": "HIS_X",
        "applied": 1,
        "duplicates": 0,
        "failed": 0,
        "terminated": 0,
        "pending": 0,
        "ack_pending": 0,
        "redelivered": 0,
    }
    snap: Running = {
        "running": True,
        "data_dir": "/srv/his",
        "services": [
            {
                "name": "scheduling",
                "url": "https://127.0.0.1:2",
                "health": "ready",
                "http": {
                    "requests_per_second": 12.5,
                    "errors_per_second": 0.0,
                    "p95_ms": 41.2,
                    "window_seconds": 2.0,
                    "requests_total": 25,
                    "errors_total": 0,
                },
                "outbox": {
                    "backlog": 3,
                    "oldest_age_seconds": 0.4,
                    "relay_leader": True,
                    "published": 10,
                    "last_error": "",
                },
                "consumers": [idle, {**idle, "name": "busy_one", "pending": 7}],
            },
            {"name": "billing", "url": "https://127.0.0.1:3", "health": "down"},
        ],
        "gateway_url": "http://127.0.0.1:1",
        "dlq_depth": 2,
        "nats": "connected",
        "healthy": False,
    }
    console = Console(record=True, width=200)
    console.print(status_view(snap, every=2.0))
    text = console.export_text()
    assert "12.5" in text and "41.2 ms" in text and "0.4s" in text and "leader" in text
    assert "busy_one" in text and "idle_one" not in text and "1 idle consumers not shown" in text
    assert "DLQ depth: 2" in text and "down" in text
