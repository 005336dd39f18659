"""Operator views of a running hospital, from its run-state file."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from nats.js.client import JetStreamContext
from rich.console import Console
from rich.table import Table

from his.cli import state
from his.kernel import bus, dlq
from his.kernel.config import Settings

T = TypeVar("T")


class NotRunningError(RuntimeError):
    """No hospital is running on this data directory."""


def nats_url(settings: Settings) -> str:
    st = state.read(settings.data_path)
    if st and st.get("nats_url"):
        return str(st["nats_url"])
    if settings.nats_url:
        return settings.nats_url
    raise NotRunningError(f"no running hospital found in {settings.data_path} (start it with `his up`)")


async def with_jetstream(settings: Settings, fn: Callable[[JetStreamContext], Awaitable[T]]) -> T:
    url = nats_url(settings)

    async def quiet(_: Exception) -> None:
        return None

    nc = await asyncio.wait_for(
        bus.connect(
            url,
            name="his-cli",
            identity=state.operator_identity(settings.data_path),
            connect_timeout=3,
            max_reconnect_attempts=0,
            allow_reconnect=False,
            error_cb=quiet,
        ),
        5,
    )
    try:
        return await fn(nc.jetstream(timeout=5.0))
    finally:
        await nc.close()


async def _service(client: httpx.AsyncClient, name: str, url: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": name, "url": url, "health": "down"}
    try:
        r = await client.get(f"{url}/readyz")
        doc["health"] = "ready" if r.status_code == 200 else "not ready"
        if r.status_code != 200:
            doc["problems"] = r.json().get("problems", [])
        if name != "gateway":
            doc.update((await client.get(f"{url}/status")).json())
    except (httpx.HTTPError, ValueError):
        pass
    return doc


async def collect_status(settings: Settings) -> dict[str, Any]:
    st = state.read(settings.data_path)
    if st is None:
        return {"running": False, "healthy": False, "data_dir": str(settings.data_path)}
    operator = state.operator_identity(settings.data_path)
    verify = operator.client_context() if operator else True
    async with httpx.AsyncClient(timeout=2.0, verify=verify) as client:
        services = await asyncio.gather(*(_service(client, n, s["url"]) for n, s in st["services"].items()))
    snapshot: dict[str, Any] = {
        "running": True,
        "data_dir": str(settings.data_path),
        "services": services,
        "gateway_url": st.get("gateway_url"),
    }
    try:
        nc = await bus.connect(
            st["nats_url"], name="his-status", identity=operator, connect_timeout=2, max_reconnect_attempts=1
        )
        try:
            js = nc.jetstream(timeout=3.0)
            snapshot["dlq_depth"] = await dlq.depth(js)
            for svc in services:
                for c in svc.get("consumers", []):
                    info = await js.consumer_info(c["stream"], c["name"])
                    c["pending"] = info.num_pending
                    c["ack_pending"] = info.num_ack_pending
                    c["redelivered"] = info.num_redelivered
        finally:
            await nc.close()
        snapshot["nats"] = "connected"
    except Exception as exc:  # noqa: BLE001 - report, do not crash the status view
        snapshot["nats"] = f"unreachable: {exc!r}"
    snapshot["healthy"] = all(s["health"] == "ready" for s in services) and snapshot["nats"] == "connected"
    return snapshot


def render_status(console: Console, snap: dict[str, Any]) -> None:
    if not snap.get("running"):
        console.print(f"his is not running on {snap['data_dir']}")
        return
    table = Table("service", "health", "outbox backlog", "oldest unpublished", "relay", title="Services")
    consumers = Table(
        "consumer", "stream", "applied", "pending", "ack pending", "redelivered", "failed", title="Consumers"
    )
    for s in snap["services"]:
        colour = "green" if s["health"] == "ready" else "red"
        ob = s.get("outbox") or {}
        age = ob.get("oldest_age_seconds")
        table.add_row(
            s["name"],
            f"[{colour}]{s['health']}[/]",
            str(ob.get("backlog", "-")),
            f"{age:.1f}s" if isinstance(age, (int, float)) else "-",
            ("leader" if ob.get("relay_leader") else "standby") if ob else "-",
        )
        for c in s.get("consumers", []):
            consumers.add_row(
                c["name"],
                c["stream"],
                str(c["applied"]),
                str(c.get("pending", "?")),
                str(c.get("ack_pending", "?")),
                str(c.get("redelivered", "?")),
                str(c["failed"]),
            )
    console.print(table)
    console.print(consumers)
    console.print(
        f"NATS: {snap.get('nats')}   DLQ depth: {snap.get('dlq_depth', '?')}   console: {snap.get('gateway_url')}"
    )
