"""Composition root of the gateway."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import signal
from typing import Any

import httpx
import uvicorn
import uvloop
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from his.kernel import observability as obs
from his.kernel.config import ServiceSettings
from his.kernel.service import QuietServer

log = logging.getLogger("his.gateway")


def problem(status: int, title: str, detail: str = "") -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def create_app(upstreams: dict[str, str]) -> FastAPI:
    app = FastAPI(title="his", description="Hospital Information System public API", docs_url=None, redoc_url=None)
    client = httpx.AsyncClient(timeout=2.0)

    async def upstream_health() -> dict[str, str]:
        async def one(name: str, url: str) -> tuple[str, str]:
            try:
                r = await client.get(f"{url}/readyz")
                return name, "ready" if r.status_code == 200 else "not ready"
            except httpx.HTTPError:
                return name, "down"

        return dict(await asyncio.gather(*(one(n, u) for n, u in upstreams.items())))

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness of the gateway process."""
        return {"status": "ok", "service": "gateway"}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> Response:
        """Ready when every service behind the gateway is ready."""
        health = await upstream_health()
        bad = {k: v for k, v in health.items() if v != "ready"}
        return JSONResponse(
            {"status": "not ready" if bad else "ready", "services": health}, status_code=503 if bad else 200
        )

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        """Prometheus metrics of the gateway process."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def console() -> str:
        health = await upstream_health()
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td class='{html.escape(s.replace(' ', '-'))}'>{html.escape(s)}</td></tr>"
            for n, s in sorted(health.items())
        )
        return (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>his</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:40rem}"
            "td{padding:.2rem 1rem}.ready{color:#16794c}.down,.not-ready{color:#b42318}</style></head>"
            "<body><h1>his — Hospital Information System</h1><h2>Services</h2>"
            f"<table>{rows}</table></body></html>"
        )

    @app.api_route("/api/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def not_routed(path: str, request: Request) -> Response:
        return problem(404, "Not found", f"no public route for /api/{path}")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "Internal error")

    return app


def main() -> None:
    settings = ServiceSettings()
    obs.setup_logging(settings.log_level)
    upstreams: dict[str, Any] = json.loads(os.environ.get("HIS_UPSTREAMS", "{}"))
    app = create_app({str(k): str(v) for k, v in upstreams.items()})
    config = uvicorn.Config(
        obs.MetricsMiddleware(app),
        host=settings.host,
        port=settings.http_port or settings.gateway_port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="none",
        http="httptools",
    )
    server = QuietServer(config)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.request_exit)
        watch = asyncio.create_task(server.watch_parent())
        await server.serve()
        watch.cancel()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve())
