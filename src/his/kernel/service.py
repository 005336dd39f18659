"""The process runner every service shares: database, NATS, relay, consumers, DLQ mover, HTTP.

A service package describes itself with a ``ServiceDefinition`` in its ``app.py``; this module
wires it to real infrastructure (its composition root calls ``main``). Nothing connects at
import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import ssl
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias, TypedDict

import uvicorn
import uvloop
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi.telemetry import TelemetryConfig
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from his.kernel import bus, faults, problems, safety, tracing, web
from his.kernel import observability as obs
from his.kernel.callers import Admit, Callers, PeerProtocol
from his.kernel.config import ProcessSettings, ServiceSettings
from his.kernel.consumer import ConsumerLoop, Subscription
from his.kernel.db import Combine, Database
from his.kernel.dlq import DlqMover
from his.kernel.metrics import refresh, watch_pool
from his.kernel.observability import ASGIApp
from his.kernel.outbox import OutboxRelay, backlog
from his.kernel.pki import WorkloadIdentity
from his.kernel.streams import ADVISORY_STREAM, DAY, REPLAY_STREAM
from his.kernel.web import Routes

if TYPE_CHECKING:
    from his.kernel.rpc import RpcServer, RpcService

log = logging.getLogger("his.service")

#: Seconds an internal listener keeps an idle connection open. Its callers (the gateway above
#: all) keep connections to it and drop idle ones sooner (60 s); with uvicorn's default of 5 s,
#: a pause of a few seconds cost a mutual-TLS handshake on both sides per connection afterwards.
KEEP_ALIVE = 75

#: FastAPI's own OpenTelemetry bridge stays off: ``TracingMiddleware`` makes the server span (one
#: per request, not two), and with the bridge on FastAPI looked up three global providers on
#: every request only to find them unconfigured.
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


@dataclass
class ServiceContext:
    """What a service's adapters get: its settings and its connections."""

    name: str
    settings: ServiceSettings
    db: Database
    nc: NATS
    js: JetStreamContext
    relay: OutboxRelay
    consumers: list[ConsumerLoop] = field(default_factory=list)
    started: float = field(default_factory=time.time)


#: A long-running task of a service, as its coroutine (run with ``asyncio.create_task``).
Background: TypeAlias = Coroutine[object, None, None]


@dataclass(frozen=True)
class ServiceDefinition:
    """A service: its name, the events it consumes, its HTTP routes and its gRPC services."""

    name: str
    subscriptions: tuple[Subscription, ...] = ()
    #: Its HTTP routes: a module-level router and the use cases its routes depend on (``his.kernel.web``).
    routes: Callable[[ServiceContext], Routes] | None = None
    description: str = ""
    #: Long-running tasks of the service (e.g. a dispatcher), by name; readiness watches them.
    background: Callable[[ServiceContext], dict[str, Background]] | None = None
    #: gRPC services it offers other services, served with mutual TLS on ``HIS_GRPC_PORT``.
    grpc_services: Callable[[ServiceContext], Sequence[RpcService]] | None = None
    #: Merges the events of audited reads committed together (``Database.read``) into fewer.
    combine_reads: Combine | None = None
    #: Who may call its HTTP listener, by path (``his.kernel.callers``): by default the gateway,
    #: which forwards the public API, and on the operations paths the operator, Prometheus and
    #: the process itself. Any other workload's certificate is answered 403.
    callers: Callers = field(default_factory=Callers)
    #: Run first when the process starts: raises ``SystemExit`` naming a setting it needs and
    #: lacks (a key), before it reads or publishes anything. Not run by what only describes the
    #: service (its durables, the events catalogue).
    requires: Callable[[], None] | None = None

    @property
    def dlq_mover(self) -> str:
        """The durable name of its DLQ mover's consumer."""
        return f"dlq_{self.name}"

    def consumer_durables(self) -> tuple[str, ...]:
        """Its subscriptions' durable consumers and their replay feeds (what its DLQ mover watches)."""
        return tuple(n for s in self.subscriptions for n in (s.name, s.replay_name))

    def durables(self) -> dict[str, str]:
        """Every durable consumer it reads from, with the stream it reads: its subscriptions (on
        their producers' streams), their replay feeds (the replay stream), its DLQ mover (the
        advisories). NATS lets it read and acknowledge these, each on its stream, and no other
        (``his.kernel.bus``)."""
        found = {
            name: stream
            for s in self.subscriptions
            for name, stream in ((s.name, s.stream), (s.replay_name, REPLAY_STREAM))
        }
        return {**found, self.dlq_mover: ADVISORY_STREAM} if found else {}


class OutboxStatus(BaseModel):
    backlog: int
    oldest_age_seconds: float | None
    relay_leader: bool
    published: int
    last_error: str


class ConsumerStatus(BaseModel):
    name: str
    stream: str
    applied: int
    duplicates: int
    failed: int
    terminated: int


class ServiceStatus(BaseModel):
    """A service's ``/status``: its outbox and relay, its consumers (``his status`` reads it)."""

    service: str
    pid: int
    uptime_seconds: float
    outbox: OutboxStatus
    consumers: list[ConsumerStatus]


def ops_router(ctx: ServiceContext, tasks: dict[str, asyncio.Task[None]]) -> APIRouter:
    # Not in the service's OpenAPI document: operations endpoints, not its API (the gateway builds
    # the public document from the services' documents, and must find the same ones offline).
    router = APIRouter(tags=["ops"], include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "service": ctx.name}

    @router.get("/readyz")
    async def readyz() -> Response:
        """Readiness: database reachable, NATS connected, background tasks running."""
        problems = []
        try:
            await asyncio.wait_for(ctx.db.pool.fetchval("SELECT 1"), 2.0)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            problems.append(f"database: {type(exc).__name__}")
        if not ctx.nc.is_connected:
            problems.append("nats: disconnected")
        problems += [f"{name}: stopped" for name, t in tasks.items() if t.done()]
        status = 503 if problems else 200
        return JSONResponse(
            {"status": "ready" if not problems else "not ready", "problems": problems}, status_code=status
        )

    @router.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics of this process."""

        async def outbox() -> tuple[int, float | None]:
            async with ctx.db.pool.acquire() as conn:
                return await backlog(conn)

        durables = [(c.sub.stream, c.sub.name) for c in ctx.consumers]
        await refresh(backlog=outbox, js=ctx.js, consumers=durables)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @router.get("/status")
    async def status() -> ServiceStatus:
        """Operational status: outbox backlog and relay, consumers."""
        async with ctx.db.pool.acquire() as conn:
            count, age = await backlog(conn)
        stats = ctx.relay.stats
        return ServiceStatus(
            service=ctx.name,
            pid=os.getpid(),
            uptime_seconds=round(time.time() - ctx.started, 1),
            outbox=OutboxStatus(
                backlog=count,
                oldest_age_seconds=age,
                relay_leader=stats.leader,
                published=stats.published,
                last_error=stats.last_error,
            ),
            consumers=[
                ConsumerStatus(
                    name=c.sub.name,
                    stream=c.sub.stream,
                    applied=c.stats.applied,
                    duplicates=c.stats.duplicates,
                    failed=c.stats.failed,
                    terminated=c.stats.terminated,
                )
                for c in ctx.consumers
            ],
        )

    return router


#: Seconds between the client's PINGs, and how many may go unanswered before it gives the
#: connection up as stale and reconnects. A connection that hangs without closing (a dead peer,
#: a dropped NAT entry) is noticed only this way; with nats-py's defaults (120 s, 2) the relay
#: and the consumers would sit on it for up to six minutes, publishing and fetching nothing.
PING_SECONDS = 5.0
MAX_OUTSTANDING_PINGS = 2


async def connect_nats(
    url: str,
    name: str,
    *,
    identity: WorkloadIdentity | None = None,
    service: str | None = None,
    ping_interval: float = PING_SECONDS,
    max_outstanding_pings: int = MAX_OUTSTANDING_PINGS,
) -> NATS:
    """A service's NATS connection: reconnects forever; TLS with its workload identity when given.

    A connection whose PINGs go unanswered for ``(max_outstanding_pings + 1) * ping_interval``
    seconds is dropped and reconnected, so a hung connection costs seconds, not minutes.
    """
    return await bus.connect(
        url,
        name=name,
        identity=identity,
        service=service,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        allow_reconnect=True,
        pending_size=64 * 1024 * 1024,
        ping_interval=ping_interval,
        max_outstanding_pings=max_outstanding_pings,
    )


def rpc_identity(defn: ServiceDefinition, settings: ServiceSettings) -> WorkloadIdentity | None:
    """The identity to serve gRPC with, or None when this process serves none. Never plaintext."""
    if defn.grpc_services is None:
        return None
    if settings.grpc_port is None:
        log.warning("%s: HIS_GRPC_PORT is not set, so its gRPC API is off", defn.name)
        return None
    identity = settings.workload()
    if identity is None:
        raise SystemExit(f"{defn.name}: gRPC needs a workload identity: set HIS_TLS_CERT, HIS_TLS_KEY and HIS_TLS_CA")
    return identity


async def serve(defn: ServiceDefinition, settings: ServiceSettings) -> None:
    if defn.requires is not None:
        defn.requires()
    identity = rpc_identity(defn, settings)
    db = Database(
        settings.service_database_url,
        schema=defn.name,
        min_size=2,
        max_size=16,
        combine_reads=defn.combine_reads,
        timeout=settings.db_timeout,
    )
    await db.open()
    watch_pool(defn.name, db.pool)
    watch_pool(f"{defn.name}-read", db.opened_read_pool)  # opened by the first audited read
    safety.enforce(await safety.commit_problems(db), allow_unsafe=settings.allow_unsafe_durability)
    nc = await connect_nats(
        settings.service_nats_url, f"his-{defn.name}", identity=settings.workload(), service=defn.name
    )
    js = nc.jetstream(timeout=5.0)
    relay = OutboxRelay(
        settings.service_database_url,
        js,
        schema=defn.name,
        signal=db.signal,
        poll_seconds=settings.outbox_poll_seconds,
        retention_seconds=settings.outbox_retention_seconds,
        inbox_retention_seconds=settings.inbox_retention_days * DAY,
        db_timeout=settings.db_timeout,
    )
    ctx = ServiceContext(defn.name, settings, db, nc, js, relay)
    ctx.consumers = [ConsumerLoop(db, nc, js, s) for s in defn.subscriptions]
    mover = DlqMover(js, name=defn.dlq_mover, durables=defn.consumer_durables())
    tasks: dict[str, asyncio.Task[None]] = {"relay": asyncio.create_task(relay.run(), name="relay")}
    for c in ctx.consumers:
        tasks[c.sub.name] = asyncio.create_task(c.run(), name=c.sub.name)
    if mover.durables:
        tasks["dlq-mover"] = asyncio.create_task(mover.run(), name="dlq-mover")
    if defn.background is not None:
        for name, coro in defn.background(ctx).items():
            tasks[name] = asyncio.create_task(coro, name=name)

    app = FastAPI(
        title=f"his {defn.name}", description=defn.description, docs_url=None, redoc_url=None, telemetry=NO_TELEMETRY
    )
    app.include_router(ops_router(ctx, tasks))
    if defn.routes is not None:
        web.mount(app, defn.routes(ctx))
    app.state.ctx = ctx
    faults.arm(settings.fault_points, scope=defn.name)  # test-only; after the routes declared theirs

    problems.install(app)

    rpc_server: RpcServer | None = None
    if identity is not None and defn.grpc_services is not None:
        from his.kernel.rpc import RpcServer  # grpcio costs ~9 MB: only processes that serve gRPC load it here

        rpc_server = RpcServer(identity, defn.grpc_services(ctx), host=settings.host, port=settings.grpc_port or 0)
        await rpc_server.start()

    server = QuietServer(http_config(tracing.TracingMiddleware(obs.MetricsMiddleware(app)), settings, defn.callers))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_exit)
    scheme, note = ("https", " (mutual TLS)") if settings.workload() else ("http", "")
    log.info("%s listening on %s://%s:%d%s", defn.name, scheme, settings.host, settings.http_port, note)
    tasks["parent-watch"] = asyncio.create_task(server.watch_parent(), name="parent-watch")
    stopped = watch_tasks(tasks, server)
    # What start-up created (modules, the app, models) lives as long as the process: freeze it,
    # so full collections walk only newer objects. Walking everything took ~70 ms here, an
    # event-loop stall charged to the relay's and consumers' latency (docs/performance.md).
    gc.collect()
    gc.freeze()
    try:
        await server.serve()
    finally:
        if rpc_server is not None:
            await rpc_server.stop(grace=2.0)
        for t in tasks.values():
            t.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 5)
        await db.close()
        tracing.shutdown()
        log.info("%s stopped", defn.name)
    if stopped:
        raise TaskStoppedError(f"{defn.name} exited because {', '.join(stopped)} stopped on its own")


class TaskStoppedError(RuntimeError):
    """A task the service lives for (its relay, a consumer, a dispatcher) ended on its own."""


def watch_tasks(tasks: dict[str, asyncio.Task[None]], server: QuietServer) -> list[str]:
    """Make the service exit if one of its tasks ends while it is not stopping; returns the names
    of such tasks as they end.

    A relay or consumer that died inside a live process would leave events unpublished or
    unapplied while the process looks up; exiting lets ``his up`` (or Kubernetes) start it again,
    with everything it needs set up afresh.
    """
    stopped: list[str] = []

    def done(task: asyncio.Task[None]) -> None:
        if task.cancelled() or server.should_exit:
            return
        exc = task.exception()
        log.error("task %s stopped on its own (%r): exiting, to be restarted", task.get_name(), exc, exc_info=exc)
        stopped.append(task.get_name())
        server.request_exit()

    for task in tasks.values():
        task.add_done_callback(done)
    return stopped


class MutualTls(TypedDict, total=False):
    """uvicorn's options for a listener requiring a client certificate (``uvicorn.Config``'s)."""

    ssl_certfile: str
    ssl_keyfile: str
    ssl_ca_certs: str
    ssl_cert_reqs: int


def mutual_tls(settings: ProcessSettings) -> MutualTls:
    """uvicorn's options for a listener that requires a client certificate from the trusted CA
    (none without a workload identity)."""
    ident = settings.workload()
    if ident is None:
        return {}
    return {
        "ssl_certfile": str(ident.cert),
        "ssl_keyfile": str(ident.key),
        "ssl_ca_certs": str(ident.ca),
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
    }


def http_config(app: ASGIApp, settings: ServiceSettings, callers: Callers | None = None) -> uvicorn.Config:
    """The internal HTTP listener: with a workload identity it requires a client certificate
    from the trusted CA (mutual TLS), and admits on each path only the ``callers`` listed there
    (``his.kernel.callers``; the default ones when not given): any other is answered 403."""
    tls = mutual_tls(settings)
    ident = settings.workload()
    if ident is not None:
        app = Admit(app, callers or Callers(), own=ident.spiffe_id)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.http_port,
        log_level="warning",
        log_config=None,  # its loggers propagate to the root one: JSON lines like the rest
        access_log=False,
        lifespan="off",
        loop="none",
        http=PeerProtocol if ident is not None else "httptools",  # it tells Admit who the caller is
        proxy_headers=False,  # callers are his workloads: no proxy in front whose headers to believe
        timeout_keep_alive=KEEP_ALIVE,
        **tls,
    )


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self) -> None:
        self.should_exit = True

    async def watch_parent(self) -> None:
        """Stop when the supervisor that started this process is gone (no orphans)."""
        parent = os.getppid()
        while not self.should_exit:
            if os.getppid() != parent:
                log.warning("supervisor (pid %d) is gone; stopping", parent)
                self.request_exit()
                return
            await asyncio.sleep(1.0)


def main(build: Callable[[], ServiceDefinition]) -> None:
    """Entry point of a service process (``python -m his.<service>``)."""
    settings = ServiceSettings()
    defn = build()
    obs.setup_logging(settings.log_level, defn.name)
    tracing.setup(defn.name, tracing.otlp_endpoint(settings.otlp_endpoint))
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(defn, settings))
    except KeyboardInterrupt:
        pass
    except safety.UnsafeDurabilityError as exc:
        log.error("%s", exc)
        raise SystemExit(3) from None
    except TaskStoppedError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
