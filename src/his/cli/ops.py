"""Operator views of a running hospital, from its run-state file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal, NotRequired, TypedDict, TypeVar

import httpx
from nats.js.client import JetStreamContext
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from his.cli import scrape, state
from his.cli.services import SERVICES
from his.cli.settings import OperatorSettings
from his.kernel import bus, dlq
from his.kernel.json import Json, boolean, field, integer, list_of, number, object_of, optional, text
from his.kernel.pki import WorkloadIdentity

T = TypeVar("T")


class Outbox(TypedDict):
    """A service's outbox and its relay, as its ``/status`` tells."""

    backlog: int
    oldest_age_seconds: float | None
    relay_leader: bool
    published: int
    #: The relay's last error ("" for none).
    last_error: str


class Consumer(TypedDict):
    """One of a service's consumers, as its ``/status`` tells, and what JetStream says of it."""

    name: str
    stream: str
    applied: int
    duplicates: int
    failed: int
    terminated: int
    pending: NotRequired[int | None]
    ack_pending: NotRequired[int | None]
    redelivered: NotRequired[int | None]


class Status(TypedDict):
    """A service's ``/status`` answer (``his.kernel.service.ops_router``)."""

    service: str
    pid: int
    uptime_seconds: float
    outbox: Outbox
    consumers: list[Consumer]


class Http(TypedDict):
    """HTTP figures between two scrapes of a process's /metrics."""

    requests_per_second: float | None
    errors_per_second: float | None
    p95_ms: float | None
    window_seconds: float
    requests_total: int
    errors_total: int


class Service(TypedDict):
    """A service (or the gateway) in a snapshot: what it answered, and its figures."""

    name: str
    url: str
    health: Literal["ready", "not ready", "down"]
    #: Why it is not ready, from its /readyz.
    problems: NotRequired[list[str]]
    #: From its /status (a service's, not the gateway's).
    service: NotRequired[str]
    pid: NotRequired[int]
    uptime_seconds: NotRequired[float]
    outbox: NotRequired[Outbox]
    consumers: NotRequired[list[Consumer]]
    #: When its /status failed: the problem it answered instead (problem+json), as it came.
    type: NotRequired[str]
    title: NotRequired[str]
    status: NotRequired[int]
    detail: NotRequired[str]
    #: From its /metrics.
    http: NotRequired[Http]
    metrics: NotRequired[dict[str, float]]


class Stopped(TypedDict):
    """A snapshot of a data directory where no hospital runs."""

    running: Literal[False]
    healthy: bool
    data_dir: str


class DlqDepth(TypedDict, total=False):
    dlq_depth: int


class Running(TypedDict):
    """A snapshot of a running hospital (``his status --json``)."""

    running: Literal[True]
    data_dir: str
    services: list[Service]
    gateway_url: str
    #: Dead letters waiting, when NATS answered.
    dlq_depth: NotRequired[int]
    #: "connected", or why NATS could not be reached.
    nats: str
    healthy: bool


Snapshot = Stopped | Running


class NotRunningError(RuntimeError):
    """No hospital is running on this data directory."""


def nats_url(settings: OperatorSettings) -> str:
    st = state.read(settings.data_path)
    if st and st.nats_url:
        return st.nats_url
    if settings.nats_url:
        return settings.nats_url
    raise NotRunningError(f"no running hospital found in {settings.data_path} (start it with `his up`)")


async def with_jetstream(settings: OperatorSettings, fn: Callable[[JetStreamContext], Awaitable[T]]) -> T:
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


def _consumer(value: Json) -> Consumer:
    doc = object_of(value)
    return {
        "name": text(field(doc, "name")),
        "stream": text(field(doc, "stream")),
        "applied": integer(field(doc, "applied")),
        "duplicates": integer(field(doc, "duplicates")),
        "failed": integer(field(doc, "failed")),
        "terminated": integer(field(doc, "terminated")),
    }


def _status(value: Json) -> Status:
    """A service's /status answer, checked; ``ValueError`` if it is not one."""
    doc = object_of(value)
    outbox = object_of(field(doc, "outbox"))
    return {
        "service": text(field(doc, "service")),
        "pid": integer(field(doc, "pid")),
        "uptime_seconds": number(field(doc, "uptime_seconds")),
        "outbox": {
            "backlog": integer(field(outbox, "backlog")),
            "oldest_age_seconds": optional(number, field(outbox, "oldest_age_seconds")),
            "relay_leader": boolean(field(outbox, "relay_leader")),
            "published": integer(field(outbox, "published")),
            "last_error": text(field(outbox, "last_error")),
        },
        "consumers": list_of(_consumer, field(doc, "consumers")),
    }


def _problem(value: Json, doc: Service) -> None:
    """The problem a failed /status answered (``his.kernel.problems``), added to ``doc`` as it came."""
    problem = object_of(value)
    doc["type"] = text(field(problem, "type"))
    doc["title"] = text(field(problem, "title"))
    doc["status"] = integer(field(problem, "status"))
    if "detail" in problem:
        doc["detail"] = text(problem["detail"])


async def _service(client: httpx.AsyncClient, name: str, url: str) -> Service:
    doc: Service = {"name": name, "url": url, "health": "down"}
    try:
        r = await client.get(f"{url}/readyz")
        doc["health"] = "ready" if r.status_code == 200 else "not ready"
        if r.status_code != 200:
            readiness: Json = r.json()
            doc["problems"] = list_of(text, object_of(readiness).get("problems", []))
        if name in SERVICES:  # the gateway and the console have no outbox or consumers
            r = await client.get(f"{url}/status")
            if not r.is_success:
                _problem(r.json(), doc)
                return doc
            status = _status(r.json())
            doc["service"] = status["service"]
            doc["pid"] = status["pid"]
            doc["uptime_seconds"] = status["uptime_seconds"]
            doc["outbox"] = status["outbox"]
            doc["consumers"] = status["consumers"]
    except (httpx.HTTPError, ValueError):
        pass
    return doc


async def _scrape(client: httpx.AsyncClient, url: str) -> scrape.Scrape | None:
    try:
        r = await client.get(f"{url}/metrics")
        r.raise_for_status()
        return scrape.parse(r.text, time.monotonic())
    except (httpx.HTTPError, ValueError):
        return None


Scrapes = dict[str, scrape.Scrape]


async def scrape_all(settings: OperatorSettings) -> Scrapes:
    """One scrape of every running process's /metrics, by process name (unreachable ones left out)."""
    st = state.read(settings.data_path)
    if st is None:
        return {}
    operator = state.operator_identity(settings.data_path)
    verify = operator.client_context() if operator else True
    async with httpx.AsyncClient(timeout=2.0, verify=verify) as client:
        names = list(st.services)
        found = await asyncio.gather(*(_scrape(client, st.services[n].url) for n in names))
    return {n: s for n, s in zip(names, found, strict=True) if s is not None}


def _figures(doc: Service, before: scrape.Scrape | None, after: scrape.Scrape | None) -> None:
    """Add the HTTP figures between two scrapes, and the scraped gauges, to a service's entry."""
    if after is None:
        return
    w = scrape.window(before, after)
    doc["http"] = {
        "requests_per_second": round(w.rate, 2) if w.seconds else None,
        "errors_per_second": round(w.error_rate, 2) if w.seconds else None,
        "p95_ms": round(w.p95 * 1000, 1) if w.p95 is not None else None,
        "window_seconds": round(w.seconds, 2),
        "requests_total": int(after.requests),
        "errors_total": int(after.errors),
    }
    doc["metrics"] = after.gauges


async def collect_status(settings: OperatorSettings, before: Scrapes | None = None) -> tuple[Snapshot, Scrapes]:
    """A snapshot of the hospital, and this round's scrapes (pass them as ``before`` to the next
    round: request rates and p95 cover the time between the two)."""
    st = state.read(settings.data_path)
    if st is None:
        return {"running": False, "healthy": False, "data_dir": str(settings.data_path)}, {}
    operator = state.operator_identity(settings.data_path)
    verify = operator.client_context() if operator else True
    names = list(st.services)
    async with httpx.AsyncClient(timeout=2.0, verify=verify) as client:
        services, found = await asyncio.gather(
            asyncio.gather(*(_service(client, n, st.services[n].url) for n in names)),
            asyncio.gather(*(_scrape(client, st.services[n].url) for n in names)),
        )
    after = {n: s for n, s in zip(names, found, strict=True) if s is not None}
    for doc in services:
        _figures(doc, (before or {}).get(doc["name"]), after.get(doc["name"]))
    depth, nats = await _from_jetstream(st, operator, services)
    snapshot: Running = {
        "running": True,
        "data_dir": str(settings.data_path),
        "services": services,
        "gateway_url": st.gateway_url,
        **depth,
        "nats": nats,
        "healthy": all(s["health"] == "ready" for s in services) and nats == "connected",
    }
    return snapshot, after


async def _from_jetstream(
    st: state.RunState, operator: WorkloadIdentity | None, services: list[Service]
) -> tuple[DlqDepth, str]:
    """DLQ depth and each consumer's pending counts, straight from JetStream; and "connected", or
    why NATS could not be reached."""
    depth: DlqDepth = {}
    try:
        nc = await bus.connect(
            st.nats_url, name="his-status", identity=operator, connect_timeout=2, max_reconnect_attempts=1
        )
        try:
            js = nc.jetstream(timeout=3.0)
            depth["dlq_depth"] = await dlq.depth(js)
            for svc in services:
                for c in svc.get("consumers", []):
                    info = await js.consumer_info(c["stream"], c["name"])
                    c["pending"] = info.num_pending
                    c["ack_pending"] = info.num_ack_pending
                    c["redelivered"] = info.num_redelivered
        finally:
            await nc.close()
    except Exception as exc:  # noqa: BLE001 - report, do not crash the status view
        return depth, f"unreachable: {exc!r}"
    return depth, "connected"


async def snapshot_once(settings: OperatorSettings, interval: float) -> Snapshot:
    """One snapshot; with ``interval`` > 0 the rates cover that many seconds before it."""
    before = None
    if interval > 0:
        before = await scrape_all(settings)
        await asyncio.sleep(interval)  # the window the rates are measured over, not a synchronisation
    snap, _ = await collect_status(settings, before)
    return snap


async def watch(settings: OperatorSettings, console: Console, every: float = 2.0) -> None:
    """Redraw the status view every ``every`` seconds until cancelled (Ctrl-C)."""
    before = await scrape_all(settings)
    with Live(Text("reading the hospital's metrics…"), console=console, auto_refresh=False, screen=False) as live:
        while True:
            await asyncio.sleep(every)
            snap, before = await collect_status(settings, before)
            live.update(status_view(snap, every), refresh=True)


def _ms(value: float | None) -> str:
    return f"{value:.1f} ms" if isinstance(value, (int, float)) else "-"


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else "-"


def _table(*headers: str, title: str) -> Table:
    """A table that fits an 80-column terminal: no borders, one space between columns; a value too
    long for its column folds onto the next line instead of being cut."""
    table = Table(title=title, box=None, collapse_padding=True, pad_edge=False, header_style="bold")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right", overflow="fold")
    return table


def status_view(snap: Snapshot, every: float | None = None) -> RenderableType:
    """The status screen of a snapshot: services, consumers, and a summary line.

    It fits 80 columns: no name is cut (the longest consumer name has 38 characters; a narrower
    terminal folds it). Each consumer's stream is in ``--json``.
    """
    if not snap["running"]:
        return Text(f"his is not running on {snap['data_dir']}")
    table = _table(
        "service",
        "health",
        "req/s",
        "p95",
        "5xx/s",
        "outbox\nbacklog",
        "oldest\nevent",
        "relay",
        "consumer\nlag",
        title="Services",
    )
    table.columns[1].justify = "left"
    consumers = _table("consumer", "applied", "pending", "ack\npending", "re-\ndelivered", "failed", title="Consumers")
    quiet = 0
    for s in snap["services"]:
        colour = "green" if s["health"] == "ready" else "red"
        ob = s.get("outbox")
        http = s.get("http")
        age = ob["oldest_age_seconds"] if ob else None
        lag = [pending for c in s.get("consumers", []) if isinstance(pending := c.get("pending"), int)]
        errors = http["errors_per_second"] if http else None
        table.add_row(
            s["name"],
            f"[{colour}]{s['health']}[/]",
            _num(http["requests_per_second"] if http else None),
            _ms(http["p95_ms"] if http else None),
            f"[red]{errors:.1f}[/]" if isinstance(errors, (int, float)) and errors > 0 else _num(errors),
            str(ob["backlog"]) if ob else "-",
            f"{age:.1f}s" if isinstance(age, (int, float)) else "-",
            ("leader" if ob["relay_leader"] else "standby") if ob else "-",
            str(sum(lag)) if lag else "-",
        )
        for c in s.get("consumers", []):
            if every and not _busy(c):
                quiet += 1
                continue
            consumers.add_row(
                c["name"],
                str(c["applied"]),
                str(c.get("pending", "?")),
                str(c.get("ack_pending", "?")),
                str(c.get("redelivered", "?")),
                str(c["failed"]),
            )
    depth = snap.get("dlq_depth", "?")
    dlq_text = f"[red]{depth}[/]" if isinstance(depth, int) and depth > 0 else str(depth)
    footer = Text.from_markup(f"NATS: {snap.get('nats')}   DLQ depth: {dlq_text}   console: {snap.get('gateway_url')}")
    if every:
        footer.append(f"\n{quiet} idle consumers not shown; refreshing every {every:g} s; Ctrl-C to stop", "dim")
    problems = [Text(f"{s['name']}: {p}", "red") for s in snap["services"] for p in s.get("problems", [])]
    shown = [table, consumers] if consumers.row_count or not every else [table]
    return Group(*shown, *problems, footer)


def dead_letters_view(items: list[dlq.DeadLetter]) -> RenderableType:
    """``his dlq list``: one block per dead letter, whole (its error wrapped, never cut), so that it
    reads in an 80-column terminal: its id, then the consumer, how it failed and when, the event's
    subject and id, and the error."""
    if not items:
        return Text("no dead letters")
    table = Table(title="Dead letters", box=None, pad_edge=False, padding=(0, 1, 1, 0), show_header=False)
    table.add_column("id", justify="right", no_wrap=True, style="bold")
    table.add_column("dead letter", overflow="fold")
    for d in items:
        times = "delivery" if d.deliveries == 1 else "deliveries"
        how = {"max_deliveries": "gave up", "terminated": "refused"}.get(d.kind, d.kind)
        when = f" at {d.captured_at[:19].replace('T', ' ')}" if d.captured_at else ""
        block = Text()
        block.append(d.target or d.consumer, "bold")
        block.append(f"\n{how} after {d.deliveries} {times}{when}")
        block.append(f"\n{d.subject or '(subject unknown)'}\nevent {d.event_id or '(unknown)'}")
        block.append(f"\n{d.error or '(no error recorded)'}", "red")
        table.add_row(str(d.id), block)
    return table


def _busy(consumer: Consumer) -> bool:
    """Whether a consumer has anything worth a row in the live view (work waiting, or failures)."""
    counts = (consumer.get("pending"), consumer.get("ack_pending"), consumer.get("redelivered"), consumer["failed"])
    return any(isinstance(n, int) and n > 0 for n in counts)


def render_status(console: Console, snap: Snapshot) -> None:
    console.print(status_view(snap))
