"""Trace context (OpenTelemetry) and JSON log lines, without IO."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from his.kernel import tracing
from his.kernel.events import Envelope
from his.kernel.observability import HumanFormatter, JsonFormatter, render_json_line
from tests.support.events import ThingHappened

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.setup("test", None, exporter=exporter)
    yield exporter
    tracing.setup("test", None)


def test_without_an_exporter_a_span_continues_the_trace_and_keeps_the_sampled_flag() -> None:
    with tracing.span("child", parent=PARENT):
        child = tracing.current_traceparent()
        with tracing.span("grandchild"):
            grandchild = tracing.current_traceparent()
    assert tracing.parse(child) == tracing.parse(grandchild) == "0af7651916cd43dd8448eb211c80319c"
    assert len({PARENT, child, grandchild}) == 3  # new span ids
    assert child.endswith("-01")
    assert tracing.current_trace_id() is None  # outside any span again


@pytest.mark.parametrize("bad", ["", "garbage", "00-" + "0" * 32 + "-" + "1" * 16 + "-01"])
def test_an_invalid_traceparent_starts_a_new_trace(bad: str) -> None:
    assert tracing.parse(bad) is None
    with tracing.span("x", parent=bad):
        assert tracing.parse(tracing.current_traceparent()) is not None


def test_an_event_added_in_a_span_carries_that_span_as_its_parent() -> None:
    with tracing.span("unit of work", parent=PARENT):
        producer = tracing.current_traceparent()
        env = Envelope.wrap(ThingHappened(thing_id=uuid.uuid4(), seq=0), aggregate_id=uuid.uuid4())
    assert env.traceparent == producer


def test_recorded_spans_form_one_trace_across_a_remote_hop(spans: InMemorySpanExporter) -> None:
    with tracing.span("GET /x", SpanKind.SERVER, parent=PARENT), tracing.span("call", SpanKind.CLIENT):
        sent = tracing.current_traceparent()
    with tracing.span("handle", SpanKind.SERVER, parent=sent):  # the other process
        pass
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert {s.context.trace_id for s in finished.values()} == {0x0AF7651916CD43DD8448EB211C80319C}
    assert finished["handle"].parent is not None
    assert finished["handle"].parent.span_id == finished["call"].context.span_id
    assert finished["call"].parent is not None
    assert finished["call"].parent.span_id == finished["GET /x"].context.span_id


async def test_the_http_middleware_names_the_span_by_route_and_skips_probes(spans: InMemorySpanExporter) -> None:
    class Route:
        path = "/patients/{id}"

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        scope["route"] = Route
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(_: MutableMapping[str, Any]) -> None:
        return None

    mw = tracing.TracingMiddleware(app)
    for path in ("/patients/123", "/healthz"):
        scope = {"type": "http", "method": "GET", "path": path, "headers": [(b"traceparent", PARENT.encode())]}
        await mw(scope, None, send)  # type: ignore[arg-type]
    [span] = spans.get_finished_spans()
    assert span.name == "GET /patients/{id}"
    assert span.kind is SpanKind.SERVER
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 503
    assert span.parent is not None and span.parent.span_id == 0xB7AD6B7169203331


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord("his.test", logging.WARNING, __file__, 1, msg, args, info)


def test_a_log_line_is_one_json_object_with_the_trace_ids_inside_a_span() -> None:
    fmt = JsonFormatter("scheduling")
    outside = json.loads(fmt.format(_record("booked %s", "a1")))
    assert outside["message"] == "booked a1" and outside["service"] == "scheduling"
    assert {"time", "level", "logger"} <= outside.keys() and "trace_id" not in outside
    with tracing.span("x", parent=PARENT):
        line = fmt.format(_record("failed", exc=True))
    assert "\n" not in line
    inside = json.loads(line)
    assert inside["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and len(inside["span_id"]) == 16
    assert "ValueError: boom" in inside["exception"]


def test_json_lines_render_like_the_terminal_format() -> None:
    with tracing.span("x", parent=PARENT):
        record = _record("relay is the leader")
        line, human = JsonFormatter("patients").format(record), HumanFormatter().format(record)
    assert render_json_line(line) == human == "WARNING his.test: relay is the leader [0af76519]"
    assert render_json_line("plain output of a library") == "plain output of a library"
    assert render_json_line("{not json") == "{not json"


def test_an_empty_or_invalid_parent_starts_a_new_trace_also_when_recording(spans: InMemorySpanExporter) -> None:
    with tracing.span("outer", parent=PARENT):
        with tracing.span("no parent", parent=""):
            pass
        with tracing.span("bad parent", parent="garbage"):
            pass
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert finished["no parent"].parent is None and finished["bad parent"].parent is None
    assert finished["no parent"].context.trace_id != finished["outer"].context.trace_id
