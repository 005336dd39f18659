"""Logging and Prometheus metrics of a process."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HTTP_SECONDS = Histogram(
    "his_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
OUTBOX_BACKLOG = Gauge("his_outbox_backlog", "Outbox rows not yet published")
OUTBOX_OLDEST = Gauge("his_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row")
OUTBOX_PUBLISHED = Counter("his_outbox_published_total", "Outbox rows published by this process")
CONSUMER_EVENTS = Counter("his_consumer_events_total", "Events handled by consumers", ["consumer", "outcome"])


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "nats", "asyncio", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_tls_eof()


def quiet_tls_eof() -> None:
    """Drop asyncio's "returning true from eof_received() has no effect when using ssl" warning.

    nats-py reads through asyncio streams, whose protocol returns True on EOF; over TLS asyncio
    logs that once per closed connection. It says nothing an operator can act on.
    """
    logging.getLogger("asyncio").addFilter(lambda record: "eof_received()" not in record.getMessage())


class MetricsMiddleware:
    """Times every HTTP request by its route template (not the raw path: no id explosion)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_SECONDS.labels(scope.get("method", ""), template, str(status[0])).observe(time.perf_counter() - start)
