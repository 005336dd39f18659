"""Logging and Prometheus metrics of a process."""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime

import orjson
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

# ASGI's own types, as Starlette declares them (re-exported for the middlewares of the kernel and
# the gateway).
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]

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


class Bound:
    """The children of a labelled histogram, each looked up once.

    ``family.labels(...)`` builds a key and takes the family's lock on every call; the hot paths
    (each HTTP request, each gRPC call) observe through this instead. Label values are bounded
    sets (route templates, methods, status codes), and so is the table.
    """

    def __init__(self, family: Histogram) -> None:
        self.family = family
        self._children: dict[tuple[str, ...], Histogram] = {}

    def __call__(self, *labels: str) -> Histogram:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self.family.labels(*labels)
        return child


def setup_logging(level: str = "INFO", service: str = "", *, json_lines: bool | None = None) -> None:
    """Log to stdout: JSON lines (``JsonFormatter``), or a compact human line on a terminal.

    ``json_lines`` None means: JSON unless stdout is a terminal. Under ``his up`` stdout is a
    pipe to the supervisor, which writes the JSON lines to the data dir and shows them compactly.
    """
    if json_lines is None:
        json_lines = not sys.stdout.isatty()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service) if json_lines else HumanFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # Python warnings as log lines too, not bare stderr text
    for noisy in ("uvicorn.access", "nats", "asyncio", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_tls_eof()


def _trace_ids() -> tuple[str, str] | None:
    ctx = trace.get_current_span().get_span_context()
    return (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}") if ctx.is_valid else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, service, and trace_id and span_id
    when the record was logged inside a span (``exception`` holds a traceback, if any).

    Messages are the code's own text with its arguments: code must never pass personal data
    (names, contact details, tokens, passwords) to a logger; ids are fine.
    """

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "service": self.service,
        }
        if ids := _trace_ids():
            doc["trace_id"], doc["span_id"] = ids
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


class HumanFormatter(logging.Formatter):
    """``LEVEL   logger: message [trace id]`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        if ids := _trace_ids():
            line += f" [{ids[0][:8]}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def render_json_line(line: str) -> str:
    """A JSON log line as ``HumanFormatter`` would show it; any other line as it is."""
    if not line.startswith("{"):
        return line
    try:
        doc = orjson.loads(line)
        text = f"{doc['level']:<7} {doc['logger']}: {doc['message']}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return line
    if doc.get("trace_id"):
        text += f" [{str(doc['trace_id'])[:8]}]"
    if doc.get("exception"):
        text += "\n" + str(doc["exception"])
    return text


def quiet_tls_eof() -> None:
    """Drop asyncio's "returning true from eof_received() has no effect when using ssl" warning.

    nats-py reads through asyncio streams, whose protocol returns True on EOF; over TLS asyncio
    logs that once per closed connection. It says nothing an operator can act on.
    """
    logging.getLogger("asyncio").addFilter(lambda record: "eof_received()" not in record.getMessage())


class MetricsMiddleware:
    """Times every HTTP request by its route template (not the raw path: no id explosion). An
    event stream is timed to its head: it stays open as long as its page, which is no latency."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.timers = Bound(HTTP_SECONDS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = ["500"]
        streaming: list[float] = []

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = str(message["status"])
                types = [v for k, v in message.get("headers", ()) if k.lower() == b"content-type"]
                if types and types[0].startswith(b"text/event-stream"):
                    streaming.append(time.perf_counter())
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            end = streaming[0] if streaming else time.perf_counter()
            self.timers(scope.get("method", ""), template, status[0]).observe(end - start)
