"""Trace context with OpenTelemetry, across HTTP, gRPC, the database, the outbox and NATS.

Every process calls ``setup`` once. With an OTLP endpoint (``HIS_OTLP_ENDPOINT`` or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT``) spans are recorded and exported in batches. Without one nothing
is recorded: spans are non-recording, but each still gets real ids, so the W3C ``traceparent``
travels on (HTTP headers, gRPC metadata, outbox rows, NATS headers) and log lines carry the
trace and span ids. That costs two random numbers and a context switch per span.

Where a trace goes: the gateway starts (or continues) one per request and passes it upstream;
each service continues it in a server span; a unit of work is a span, and the events it adds
carry its context in their envelope; the relay publishes each row in a producer span and puts
that span's ``traceparent`` in the NATS headers; a consumer continues from the header (or the
envelope) in a consumer span, so the events its handler adds carry the trace onward.
"""

from __future__ import annotations

import os
import random
import re
import secrets
from collections.abc import MutableMapping
from contextlib import AbstractContextManager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from his.kernel.observability import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Span", "SpanKind"]

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
PROPAGATOR = TraceContextTextMapPropagator()
#: Ids only need to be unique, as in the SDK's own generator (not secret).
_random = random.Random()  # noqa: S311
# A process forked after this import (his.infra.forkserver) must not repeat its parent's
# ids: reseed in the child, as the random module does for its own generator.
os.register_at_fork(after_in_child=_random.seed)
#: Paths polled by probes and scrapers: no spans for them.
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/status"})
#: ASGI scope key an app may set to name a request's span when it routes without Starlette.
ROUTE_KEY = "his.route"


class _State:
    provider: TracerProvider = TracerProvider(sampler=ALWAYS_OFF)
    tracer: trace.Tracer = provider.get_tracer("his")
    recording: bool = False


def otlp_endpoint(his_endpoint: str | None = None) -> str | None:
    """Where spans go: ``HIS_OTLP_ENDPOINT`` (a base URL, like the standard variable), else the
    standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``, else None."""
    if his_endpoint:
        return his_endpoint.rstrip("/") + "/v1/traces"
    if traces := os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return traces
    if base := os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return base.rstrip("/") + "/v1/traces"
    return None


def setup(service: str, endpoint: str | None, *, exporter: SpanExporter | None = None) -> None:
    """Trace this process as ``service``; export to ``endpoint`` (OTLP over HTTP) when given,
    or to ``exporter`` (tests: an in-memory one, span by span)."""
    resource = Resource.create({"service.name": f"his-{service}", "service.namespace": "his"})
    _State.provider.shutdown()
    if endpoint is None and exporter is None:
        provider = TracerProvider(sampler=ALWAYS_OFF, resource=resource)
    else:
        # The exporter's modules cost about 3 MB: only processes that export load them.
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), resource=resource)
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    _State.provider, _State.tracer = provider, provider.get_tracer("his")
    _State.recording = endpoint is not None or exporter is not None


def shutdown() -> None:
    """Export what is still buffered (at most a few seconds), then stop."""
    _State.provider.shutdown()


def recording() -> bool:
    """Whether spans are recorded and exported (an endpoint is configured)."""
    return _State.recording


def context_of(traceparent: str) -> otel_context.Context:
    """The context to continue from a ``traceparent`` value; an empty one (a new trace) when the
    value is empty or invalid."""
    return PROPAGATOR.extract({"traceparent": traceparent}, context=otel_context.Context())


def span(
    name: str,
    kind: SpanKind = SpanKind.INTERNAL,
    *,
    parent: str | None = None,
    attributes: Attributes | None = None,
) -> AbstractContextManager[Span]:
    """A span around the block, current inside it: a child of ``parent`` (a ``traceparent``) when
    given (the root of a new trace if it is empty or invalid), else of the current span, else a
    new trace's root."""
    if not _State.recording:
        # Nothing is exported: skip the SDK (about 3x the cost) and only carry the ids on,
        # keeping the caller's sampled flag for any tracer further along.
        return _Carried(parent)
    ctx = context_of(parent) if parent is not None else None
    return _State.tracer.start_as_current_span(name, context=ctx, kind=kind, attributes=attributes)


class _Carried:
    """A non-recording span current inside a ``with`` block: the trace's ids only.

    A class rather than a generator-based context manager: it is entered on every request,
    transaction and consumed event, and this is the cheaper of the two.
    """

    __slots__ = ("_span", "_token")

    def __init__(self, parent: str | None) -> None:
        self._span = NonRecordingSpan(_child_of(parent))
        self._token: object = None

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]


def _child_of(parent: str | None) -> SpanContext:
    """The context of a new non-recording span: in ``parent``'s trace, else the current one, else a new one."""
    if parent is not None:
        m = _TRACEPARENT.match(parent.strip())
        if m is not None and m.group(1) != "0" * 32:
            return SpanContext(int(m.group(1), 16), _random.getrandbits(64), False, TraceFlags(int(m.group(3), 16)))
        return SpanContext(_random.getrandbits(128), _random.getrandbits(64), False, TraceFlags(0))
    current = trace.get_current_span().get_span_context()
    if current.is_valid:
        return SpanContext(current.trace_id, _random.getrandbits(64), False, current.trace_flags)
    return SpanContext(_random.getrandbits(128), _random.getrandbits(64), False, TraceFlags(0))


def inject(carrier: MutableMapping[str, str]) -> None:
    """Put the current span's ``traceparent`` into ``carrier`` (headers, metadata)."""
    PROPAGATOR.inject(carrier)


def current_traceparent() -> str:
    """The ``traceparent`` of the current span (the producer of an event or a call); outside
    any span, that of a new trace."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return new_traceparent()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_trace_id() -> str | None:
    """The trace id of the current span, or None outside any."""
    ctx = trace.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None


def new_traceparent(trace_id: str | None = None) -> str:
    """A fresh span id, in the given trace (or a new one); not sampled."""
    return f"00-{trace_id or secrets.token_hex(16)}-{secrets.token_hex(8)}-00"


def parse(value: str | None) -> str | None:
    """The trace id of a valid ``traceparent`` value, else None."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip())
    if m is None or m.group(1) == "0" * 32:
        return None
    return m.group(1)


class TracingMiddleware:
    """A server span per HTTP request, continuing the caller's ``traceparent`` when it sent one.

    Named by the route template once routing is done (``POST /appointments``), never by the raw
    path. Probe and scrape paths (``OPS_PATHS``) get no span.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPS_PATHS:
            await self.app(scope, receive, send)
            return
        parent = None
        for key, value in scope["headers"]:
            if key == b"traceparent":
                parent = value.decode("latin-1")
                break
        if not _State.recording:
            with _Carried(parent):  # no span to name: the response passes straight through
                await self.app(scope, receive, send)
            return
        method = scope.get("method", "")
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        with span(method, SpanKind.SERVER, parent=parent) as s:
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                if s.is_recording():
                    template = scope.get(ROUTE_KEY) or getattr(scope.get("route"), "path", None) or "unmatched"
                    s.update_name(f"{method} {template}")
                    s.set_attributes(
                        {"http.request.method": method, "http.route": template, "http.response.status_code": status[0]}
                    )
                    if status[0] >= 500:
                        s.set_status(StatusCode.ERROR)
