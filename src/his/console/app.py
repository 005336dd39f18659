"""Composition root of the console (``python -m his.console``): its sessions on its database, the
API through the gateway's console listener, its pages and assets, on an internal listener that
the gateway forwards the browser's pages to (docs/adr/0027)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import uvloop
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import RequestResponseEndpoint
from starlette.staticfiles import StaticFiles

from his.console import account, admin, appointments, chart, front_desk, pages, portal, registration, signing_in
from his.console.api import Api
from his.console.compress import AssetGzip
from his.console.domain import ApiUnavailableError
from his.console.i18n import N_, environments
from his.console.live import Feed
from his.console.sessions import SessionBook
from his.console.settings import ConsoleSettings
from his.console.store import ConsoleStore
from his.console.web import (
    SECURITY_HEADERS,
    Console,
    CsrfError,
    SignedOutError,
    origin_refusal,
    problem_page,
    to_sign_in,
)
from his.kernel import bus, tracing
from his.kernel import observability as obs
from his.kernel.crypto import FieldCipher, parse_key
from his.kernel.db import Database
from his.kernel.security import AUDIENCE, ISSUER, TokenVerifier
from his.kernel.service import NO_TELEMETRY, QuietServer, http_config

log = logging.getLogger("his.console")

STATIC = Path(__file__).parent / "static"
#: The paths of the console's own operations (the gateway never forwards them).
OPS = ("/healthz", "/readyz", "/metrics")
#: Seconds between sweeps of the ended sessions.
SWEEP_SECONDS = 300.0


def create_app(shared: Console, db: Database | None = None) -> FastAPI:
    """The console's web app over ``shared`` (and ``db``, for its readiness)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, telemetry=NO_TELEMETRY)
    app.state.console = shared
    app.include_router(signing_in.router)
    app.include_router(pages.router)
    app.include_router(account.router)
    app.include_router(admin.router)
    app.include_router(registration.router)
    app.include_router(front_desk.router)
    app.include_router(appointments.router)
    app.include_router(chart.router)
    app.include_router(portal.router)
    app.mount("/console/assets", StaticFiles(directory=STATIC, follow_symlink=False), name="assets")

    @app.exception_handler(SignedOutError)
    async def signed_out(request: Request, exc: SignedOutError) -> Response:
        return to_sign_in(request, ended=exc.ended)

    @app.exception_handler(CsrfError)
    async def csrf(request: Request, exc: CsrfError) -> Response:
        message = N_("This form has expired. Go back, reload the page and try again.")
        return problem_page(request, shared, 403, message)

    @app.exception_handler(ApiUnavailableError)
    async def unavailable(request: Request, exc: ApiUnavailableError) -> Response:
        message = N_("The hospital's services cannot be reached right now. Try again in a moment.")
        return problem_page(request, shared, 503, message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return problem_page(request, shared, 404, N_("There is no such page."))
        if exc.status_code == 405:
            return problem_page(request, shared, 405, N_("This page cannot be used that way."))
        return problem_page(request, shared, exc.status_code, N_("The request could not be answered."))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_page(request, shared, 500, N_("Something went wrong on our side. Try again in a moment."))

    @app.middleware("http")
    async def guard(request: Request, call_next: RequestResponseEndpoint) -> Response:
        refusal = origin_refusal(request, shared.settings)
        if refusal is not None:
            log.warning("refused %s %s: %s", request.method, request.url.path, refusal)
            response: Response = problem_page(
                request, shared, 403, N_("This form was not sent from the hospital's own pages, so it was refused.")
            )
        else:
            response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if request.url.path.startswith("/console/assets/"):
            response.headers["cache-control"] = "public, max-age=3600"
        else:
            response.headers["cache-control"] = "no-store"
        return response

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": "console"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        problems = []
        if db is not None:
            try:
                await asyncio.wait_for(db.pool.fetchval("SELECT 1"), 2.0)
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                problems.append(f"database: {type(exc).__name__}")
        ready = not problems
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "problems": problems}, status_code=200 if ready else 503
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(AssetGzip)  # gzip for /console/assets/… only, never for a page (BREACH)
    return app


def cipher(settings: ConsoleSettings) -> FieldCipher:
    keys = [parse_key(k) for k in settings.console_keys.split(",") if k.strip()]
    if not keys:
        raise SystemExit("the console needs HIS_CONSOLE_KEYS (`his up` generates one under the data directory)")
    return FieldCipher(keys)


async def sweep(book: SessionBook) -> None:
    """Remove ended sessions now and then (an ended one is refused at once, swept or not)."""
    while True:
        with contextlib.suppress(Exception):
            removed = await book.sweep()
            if removed:
                log.info("removed %d ended sessions", removed)
        await asyncio.sleep(SWEEP_SECONDS)


async def hear_the_bus(settings: ConsoleSettings, zone: tzinfo) -> tuple[Feed | None, NATS | None]:
    """Subscribe to what the console hears of the bus (``his.kernel.bus.CONSOLE_HEARS``), for the
    pages that follow it live; without NATS the pages are still there, only not live."""
    if not settings.service_nats_url:
        log.warning("HIS_SERVICE_NATS_URL is not set: the day lists will not follow changes live")
        return None, None
    feed = Feed(zone)
    nc = await bus.connect(
        settings.service_nats_url,
        name="his-console",
        identity=settings.workload(),
        service="console",
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
    )

    async def heard(msg: Msg) -> None:
        feed.hear(msg.data)

    for subject in bus.CONSOLE_HEARS:
        await nc.subscribe(subject, cb=heard)
    return feed, nc


async def serve(settings: ConsoleSettings) -> None:
    if not settings.console_api_url:
        raise SystemExit("the console needs HIS_CONSOLE_API_URL: the gateway's console listener")
    identity = settings.workload()
    if identity is None:
        raise SystemExit("the console needs a workload identity (HIS_TLS_*) to call the gateway's console listener")
    db = Database(settings.service_database_url, schema="console", min_size=1, max_size=8, timeout=settings.db_timeout)
    await db.open()
    api = Api(settings.console_api_url, identity)
    book = SessionBook(ConsoleStore(db), cipher(settings), db.clock)
    verifier = TokenVerifier(api.jwks, issuer=ISSUER, audience=AUDIENCE)
    zone = ZoneInfo(settings.timezone)
    feed, nc = await hear_the_bus(settings, zone)
    shared = Console(settings, book, api, verifier, environments(zone), zone, feed)
    app = create_app(shared, db)
    server = QuietServer(http_config(tracing.TracingMiddleware(obs.MetricsMiddleware(app)), settings))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_exit)
    tasks = [asyncio.create_task(server.watch_parent()), asyncio.create_task(sweep(book))]
    log.info("console listening on https://%s:%d (mutual TLS)", settings.host, settings.http_port)
    try:
        await server.serve()
    finally:
        for t in tasks:
            t.cancel()
        await api.close()
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 5)
        await db.close()
        tracing.shutdown()


def main() -> None:
    settings = ConsoleSettings()
    obs.setup_logging(settings.log_level, "console")
    tracing.setup("console", tracing.otlp_endpoint(settings.otlp_endpoint))
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings))
