"""`his status` and `his dlq list` read whole in an 80-column terminal: no name or error is cut."""

from __future__ import annotations

import importlib

from rich.console import Console, RenderableType

from his.cli.ops import Consumer, Running, Service, dead_letters_view, status_view
from his.cli.services import SERVICES
from his.kernel.dlq import DeadLetter

WIDTH = 80


def render(renderable: RenderableType) -> str:
    console = Console(width=WIDTH, record=True, color_system=None, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def snapshot() -> Running:
    """A snapshot shaped as `collect_status` makes it, with every service's real consumers."""
    services: list[Service] = []
    for name in SERVICES:
        defn = importlib.import_module(f"his.{name}.app").build()
        consumers: list[Consumer] = [
            {
                "name": sub.name,
                "stream": sub.stream,
                "applied": 123456,
                "duplicates": 2,
                "failed": 3,
                "terminated": 1,
                "pending": 98765,
                "ack_pending": 12,
                "redelivered": 4567,
            }
            for sub in defn.subscriptions
        ]
        services.append(
            {
                "name": name,
                "url": "https://127.0.0.1:60083",
                "health": "ready",
                "pid": 4242,
                "outbox": {
                    "backlog": 123456,
                    "oldest_age_seconds": 1234.56,
                    "relay_leader": name != "audit",
                    "published": 654321,
                    "last_error": "",
                },
                "consumers": consumers,
                "http": {
                    "requests_per_second": 1234.5,
                    "errors_per_second": 12.3,
                    "p95_ms": 1234.5,
                    "window_seconds": 2.0,
                    "requests_total": 1234567,
                    "errors_total": 12345,
                },
            }
        )
    services[2] |= {"health": "not ready", "problems": ["database: ConnectionDoesNotExistError", "relay: stopped"]}
    services.append({"name": "gateway", "url": "http://127.0.0.1:4004", "health": "down"})
    nats = "unreachable: TimeoutError('nats: timeout connecting to tls://127.0.0.1:41234 after 2 s')"
    return {
        "running": True,
        "healthy": False,
        "data_dir": "/srv/his",
        "services": services,
        "gateway_url": "http://127.0.0.1:4004",
        "dlq_depth": 12,
        "nats": nats,
    }


def test_the_status_view_cuts_no_name_in_80_columns() -> None:
    snap = snapshot()
    text = render(status_view(snap))
    assert "…" not in text, text
    lines = text.splitlines()
    for service in snap["services"]:
        assert any(line.startswith(f"{service['name']} ") for line in lines), service["name"]
        for consumer in service.get("consumers", []):
            assert any(line.startswith(f"{consumer['name']} ") for line in lines), (consumer["name"], text)
        for problem in service.get("problems", []):
            assert f"{service['name']}: {problem}" in text
    assert snap["nats"] in " ".join(text.split())
    assert max(len(line) for line in lines) <= WIDTH


def test_the_live_view_cuts_nothing_either() -> None:
    snap = snapshot()
    text = render(status_view(snap, every=2.0))  # only busy consumers: all of these are
    assert "…" not in text and "Ctrl-C" in text


def test_dead_letters_are_listed_whole_in_80_columns() -> None:
    error = (
        "DependencyUnavailableError: patients did not answer GetContact within 2.0 s (UNAVAILABLE: failed to "
        "connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:56889: Failed to connect to remote host: "
        "Connection refused)"
    )
    letters = [
        DeadLetter(
            id=12,
            consumer="notifications_emergency_access_granted",
            target="notifications_emergency_access_granted",
            stream="HIS_PATIENTS",
            stream_seq=4,
            subject="his.patients.emergency_access.granted.v1",
            kind="max_deliveries",
            error=error,
            deliveries=5,
            captured_at="2026-12-06T22:10:03.123456+00:00",
            data=b'{"id": "0b8f3c1e-6a0d-4c43-9a8e-2a3b7e1f5d21"}',
        ),
        DeadLetter(
            id=13,
            consumer="dlq_replay_billing_lab_order_resulted",
            target="billing_lab_order_resulted",
            stream="HIS_REPLAY",
            stream_seq=9,
            subject="his.laboratory.order.resulted.v1",
            kind="terminated",
            error="invalid event: 1 validation error for LabOrderResulted",
            deliveries=1,
            captured_at="",
            data=b"",
        ),
    ]
    text = render(dead_letters_view(letters))
    flat = " ".join(text.split())
    assert "…" not in text
    for d in letters:
        assert d.target in flat and d.subject in flat and " ".join(d.error.split()) in flat
    assert "0b8f3c1e-6a0d-4c43-9a8e-2a3b7e1f5d21" in flat
    assert "gave up after 5 deliveries at 2026-12-06 22:10:03" in flat and "refused after 1 delivery" in flat
    assert render(dead_letters_view([])).strip() == "no dead letters"
