"""The gateway: the only public listener. Routes, token checks, limits; no domain logic."""

from __future__ import annotations

import asyncio
import html
import ipaddress
import json
import logging
import os
import resource
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar
from urllib.parse import urlencode

import aiohttp
import uvicorn
import uvloop
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import ClientDisconnect
from yarl import URL

from his.gateway import explorer
from his.gateway.guard import Limits, guarded
from his.gateway.limits import RateLimiter, retry_after
from his.gateway.openapi import assemble
from his.gateway.routing import ROUTES, Match, resolve
from his.gateway.settings import GatewaySettings
from his.kernel import observability as obs
from his.kernel import tracing
from his.kernel.callers import Admit, Callers
from his.kernel.json import Json, JsonObject, object_of
from his.kernel.params import page_size
from his.kernel.pki import WorkloadIdentity, spiffe_id
from his.kernel.problems import install, problem
from his.kernel.revocations import Revocations
from his.kernel.security import AUDIENCE, ISSUER, TokenError, TokenVerifier, bearer
from his.kernel.service import KEEP_ALIVE, NO_TELEMETRY, QuietServer, mutual_tls

log = logging.getLogger("his.gateway")
T = TypeVar("T")

MAX_BODY = 1024 * 1024
#: The caller's ``traceparent`` is not among them: the gateway's own span is the upstream's parent.
FORWARDED_HEADERS = ("content-type", "accept", "authorization", "idempotency-key", "user-agent", "payment-signature")
RETURNED_HEADERS = ("content-type", "retry-after", "location", "www-authenticate", "etag", "idempotent-replayed")
#: On every response of the gateway's listeners (uvicorn's own error answers included): browsers
#: must not guess a type other than the one declared. And no ``server`` header.
EVERY_RESPONSE = [("x-content-type-options", "nosniff")]
#: On every API response and the console: what a patient's record holds must not stay in a cache.
NO_STORE = (b"cache-control", b"no-store")
#: The operations listener serves operators, Prometheus and probes: a few connections suffice.
OPS_LIMITS = Limits(max_connections=64, max_per_address=32)
#: A service that cannot be reached now may be reached in a moment.
RETRY_SOON = {"Retry-After": "1"}
#: Seconds a request may wait for a connection to its upstream (a pooled one or a new one).
CONNECT = 2.0
#: Seconds the console reuses the services' health it shows.
HEALTH_TTL = 5.0
#: The upstream that serves the console's pages (docs/adr/0027), when the gateway has one.
CONSOLE = "console"
#: What a browser's request for a page brings to the console, and what comes back of its answer.
#: The console names the browser to the API itself (``X-His-Client-IP``, set here from the peer).
PAGE_HEADERS = (
    "accept",
    "accept-encoding",
    "accept-language",
    "content-type",
    "cookie",
    "origin",
    "referer",
    "sec-fetch-site",
    "sec-fetch-mode",
    "sec-fetch-dest",
    "user-agent",
    "x-csrf-token",
    "hx-request",
    "hx-target",
    "hx-trigger",
    "hx-trigger-name",
    "hx-current-url",
    "hx-boosted",
    "if-none-match",
    "if-modified-since",
)
PAGE_RETURNED = (
    "content-type",
    "content-encoding",
    "content-language",
    "location",
    "set-cookie",
    "cache-control",
    "content-security-policy",
    "x-frame-options",
    "referrer-policy",
    "cross-origin-opener-policy",
    "permissions-policy",
    "vary",
    "etag",
    "last-modified",
    "retry-after",
    "hx-redirect",
    "hx-location",
    "hx-refresh",
    "hx-trigger",
    "hx-retarget",
    "hx-reswap",
    "hx-push-url",
)
#: Paths the gateway answers itself (``/docs/…`` too), and the operations paths of the console's
#: listener, which the public never reaches through it.
#: Seconds a console's event stream may stay silent before the gateway gives it up.
STREAM_SILENCE = 60.0
GATEWAY_PAGES = frozenset({"/healthz", "/openapi.json", "/docs"})
NEVER_FORWARDED = frozenset({"/readyz", "/metrics", "/status"})


class Gateway:
    def __init__(
        self,
        upstreams: dict[str, str],
        *,
        timeout: float = 10.0,
        per_ip: float = 50.0,
        per_subject: float = 20.0,
        burst: int = 100,
        identity: WorkloadIdentity | None = None,
    ) -> None:
        self.upstreams = upstreams
        self._bases = {name: URL(url) for name, url in upstreams.items()}
        # ``connect`` bounds the wait for one of the pool's connections to an upstream as well as
        # opening one: past it the upstream is too busy and the request is answered 503 unsent
        # (otherwise an overload queues requests here until they are answered 504 or not at all).
        self.timeout = aiohttp.ClientTimeout(total=timeout, connect=CONNECT, sock_connect=CONNECT)
        # Upstreams are reached over mutual TLS: the gateway presents its workload certificate.
        self._tls = identity.client_context() if identity else True
        self._session: aiohttp.ClientSession | None = None
        self.by_ip = RateLimiter(per_ip, burst)
        self.by_subject = RateLimiter(per_subject, burst)
        self.verifier = TokenVerifier(self._jwks, issuer=ISSUER, audience=AUDIENCE)
        #: Sessions signed out lately; ``main`` runs its poller (``revocations.run()``).
        self.revocations = Revocations(self._revoked_sessions)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled keep-alive connections to the upstreams (made on first use, in the event loop).

        aiohttp rather than httpx: httpx's pool checks every pooled connection on every request
        (a ``poll()`` each), which was half of the gateway's CPU per request at 50 concurrent
        users (docs/performance.md). aiohttp keeps a list of idle connections per upstream and
        takes one. Idle connections are dropped after 60 s, before the services' listeners close
        them (75 s, ``his.kernel.service.KEEP_ALIVE``): a POST is never retried on a stale one.
        """
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=200, limit_per_host=100, keepalive_timeout=60.0, ssl=self._tls)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                cookie_jar=aiohttp.DummyCookieJar(),  # one session serves every user: keep no cookies
                skip_auto_headers=("Accept-Encoding", "Content-Type"),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, url: str, timeout: float) -> tuple[int, bytes]:
        """A GET to an upstream for the gateway itself (JWKS, readiness, OpenAPI): (status, body)."""
        async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False) as r:
            return r.status, await r.read()

    async def upstream_health(self) -> dict[str, str]:
        """Each service's readiness, asked of its ``/readyz``: ready, not ready or down."""

        async def one(name: str, url: str) -> tuple[str, str]:
            try:
                status, _ = await self.get(f"{url}/readyz", 2.0)
                return name, "ready" if status == 200 else "not ready"
            except (aiohttp.ClientError, TimeoutError):
                return name, "down"

        return dict(await asyncio.gather(*(one(n, u) for n, u in self.upstreams.items())))

    async def _jwks(self) -> Json:
        status, body = await self.get(f"{self.upstreams['identity']}/auth/jwks", 5.0)
        if status != 200:
            raise UpstreamError(f"identity answered {status} for its JWKS")
        doc: Json = json.loads(body)
        return doc

    async def _revoked_sessions(self, since: str | None) -> Json:
        query = f"?{urlencode({'since': since})}" if since else ""
        status, body = await self.get(f"{self.upstreams['identity']}/auth/revoked-sessions{query}", 5.0)
        if status != 200:
            raise UpstreamError(f"identity answered {status} for the revoked sessions")
        doc: Json = json.loads(body)
        return doc

    async def route(self, request: Request) -> Response:
        """Answer a public API request: resolve its route, check it, forward it."""
        path = request.scope["path"]
        match = resolve(request.method, path)
        if match is None:
            return problem(404, f"no public route for {path}")
        if match is False:
            return problem(405, "method not allowed for this route")
        assert isinstance(match, Match)
        request.scope[tracing.ROUTE_KEY] = match.route.path  # the span's name: the public route template
        return await self.handle(request, match)

    async def handle(self, request: Request, match: Match) -> Response:
        request.scope["route"] = match.route  # metrics label requests by its template (``path``)
        peer = request.client.host if request.client else "unknown"
        wait = self.by_ip.take(f"ip:{peer}", time.monotonic())
        if wait:
            return problem(429, "rate limit exceeded", headers={"Retry-After": retry_after(wait)})
        if len(request.headers.getlist("authorization")) > 1:  # one is checked, the other forwarded
            return problem(400, "send at most one Authorization header")
        if not match.route.public:
            token = bearer(request.headers.get("authorization"))
            if token is None:
                return problem(401, "bearer token required", headers={"WWW-Authenticate": "Bearer"})
            try:
                principal = await self.verifier.verify(token)
            except TokenError:
                return problem(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
            except (aiohttp.ClientError, TimeoutError, UpstreamError, ValueError):
                return problem(503, "identity is unavailable", headers=RETRY_SOON)
            if principal.session and principal.session in self.revocations:
                return problem(
                    401,
                    "this session has been signed out; sign in again",
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
            wait = self.by_subject.take(f"sub:{principal.subject}", time.monotonic())
            if wait:
                return problem(429, "rate limit exceeded", headers={"Retry-After": retry_after(wait)})
        if any(ord(ch) < 0x20 for value in request.query_params.values() for ch in value):
            return problem(400, "query parameters must not contain control characters")
        for limit in request.query_params.getlist("limit"):
            try:
                page_size(limit)
            except ValueError as exc:  # the services' own rule, answered before they are asked
                return problem(422, str(exc), errors=[{"loc": ["limit"], "msg": str(exc)}])
        body = await read_capped(request)
        if body is None:
            return problem(413, f"request body larger than {MAX_BODY} bytes")
        return await self.forward(request, match, body, peer)

    async def forward(self, request: Request, match: Match, body: bytes, peer: str) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED_HEADERS}
        headers["x-his-client-ip"] = peer
        headers["x-request-id"] = str(uuid.uuid4())
        headers["traceparent"] = tracing.current_traceparent()
        base = self._bases[match.route.service]
        # The path is the route's own upstream path; its id segments are quoted again, so a "?" or
        # "#" in an id stays in the path. Query parameters are re-encoded from the parsed ones.
        url = URL.build(
            scheme=base.scheme,
            host=base.raw_host or "",
            port=base.port,
            path=match.upstream_path,
            query=request.query_params.multi_items(),
        )
        try:
            async with self.session.request(
                request.method, url, data=body, headers=headers, allow_redirects=False
            ) as r:
                content = await r.read()
        except aiohttp.ConnectionTimeoutError:  # not even a connection in time: it is overloaded
            return problem(503, f"{match.route.service} is busy; try again shortly", headers=RETRY_SOON)
        except TimeoutError:
            return problem(504, f"{match.route.service} did not answer in time")
        except aiohttp.ClientError:
            return problem(503, f"{match.route.service} is unavailable", headers=RETRY_SOON)
        out = {k: v for k, v in r.headers.items() if k.lower() in RETURNED_HEADERS}
        return Response(content, status_code=r.status, headers=out)

    async def page(self, request: Request, peer: str) -> Response:
        """Forward a browser's request for a console page to the console, with the browser's
        address; its answer comes back with its own headers (cookies and security policy)."""
        if request.url.path in NEVER_FORWARDED:
            return problem(404, f"no page at {request.url.path}")
        body = await read_capped(request)
        if body is None:
            return problem(413, f"request body larger than {MAX_BODY} bytes")
        headers = [(k, v) for k, v in request.headers.items() if k.lower() in PAGE_HEADERS]
        headers += [(CLIENT_HEADER, peer), ("x-request-id", str(uuid.uuid4()))]
        headers.append(("traceparent", tracing.current_traceparent()))
        base = self._bases[CONSOLE]
        url = URL.build(
            scheme=base.scheme,
            host=base.raw_host or "",
            port=base.port,
            encoded=True,
            path=request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0] or "/",
            query_string=request.scope.get("query_string", b"").decode("latin-1"),
        )
        # An event stream stays open as long as the page does: no total deadline, only a limit on
        # silence (the console sends a comment every 15 s).
        streams = "text/event-stream" in request.headers.get("accept", "")
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT, sock_read=STREAM_SILENCE) if streams else None
        try:
            r = await self.session.request(
                request.method, url, data=body, headers=headers, allow_redirects=False, timeout=timeout
            )
            returned = [(k.lower(), v) for k, v in r.raw_headers if k.decode("latin-1").lower() in PAGE_RETURNED]
            if r.content_type == "text/event-stream":
                return streamed(r, returned)
            try:
                content = await r.read()
            finally:
                r.release()
        except aiohttp.ConnectionTimeoutError:
            return problem(503, "the console is busy; try again shortly", headers=RETRY_SOON)
        except TimeoutError:
            return problem(504, "the console did not answer in time")
        except aiohttp.ClientError:
            return problem(503, "the console is unavailable", headers=RETRY_SOON)
        response = Response(content, status_code=r.status)
        response.raw_headers = [*returned, (b"content-length", str(len(content)).encode())]
        return response


def streamed(r: aiohttp.ClientResponse, headers: list[tuple[bytes, bytes]]) -> StreamingResponse:
    """The console's event stream, passed on as it comes; the upstream connection is given back
    when the browser goes away or the stream ends."""

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in r.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError):
            return
        finally:
            r.release()

    response = StreamingResponse(chunks(), status_code=r.status)
    response.raw_headers = headers
    return response


def forwards_page(path: str) -> bool:
    """Whether a path that is not the API's goes to the console (the gateway's own pages do not)."""
    return path not in GATEWAY_PAGES and not path.startswith("/docs/")


class UpstreamError(Exception):
    """An upstream answered the gateway's own request with an error status."""


async def read_capped(request: Request) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(upstreams: dict[str, str], settings: GatewaySettings | None = None) -> FastAPI:
    app = FastAPI(title="his", docs_url=None, redoc_url=None, openapi_url=None, telemetry=NO_TELEMETRY)
    install(app)
    s = settings or GatewaySettings()
    gw = Gateway(
        upstreams,
        per_ip=s.gateway_rate_per_ip,
        per_subject=s.gateway_rate_per_subject,
        burst=s.gateway_burst,
        identity=s.workload(),
    )
    app.state.gateway = gw

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness of the gateway process (readiness and metrics are on its operations listener)."""
        return {"status": "ok", "service": "gateway"}

    #: The document once every service answered for it (until then, it is assembled again).
    complete: list[JsonObject] = []

    async def public_openapi() -> JsonObject:
        if complete:
            return dict(complete[0])
        documents: dict[str, JsonObject] = {}
        for name in {r.service for r in ROUTES}:
            try:
                _, body = await gw.get(f"{upstreams[name]}/openapi.json", 5.0)
                documents[name] = object_of(json.loads(body))
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                continue
        doc = assemble(documents)
        if len(documents) == len({r.service for r in ROUTES}):
            complete[:] = [doc]
        return doc

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(await public_openapi())

    app.include_router(explorer.router())  # /docs: the interactive explorer of that document

    health = Recent(gw.upstream_health, HEALTH_TTL)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def console() -> str:
        # Asked of the services at most once per HEALTH_TTL, however many ask for the page.
        services = await health.get()
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td class='{html.escape(s.replace(' ', '-'))}'>{html.escape(s)}</td></tr>"
            for n, s in sorted(services.items())
        )
        return (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>his</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:40rem}"
            "td{padding:.2rem 1rem}.ready{color:#16794c}.down,.not-ready{color:#b42318}</style></head>"
            "<body><h1>his — Hospital Information System</h1><h2>Services</h2>"
            f"<table>{rows}</table></body></html>"
        )

    return app


def ops_app(gw: Gateway) -> FastAPI:
    """The gateway's operations listener: liveness, readiness and metrics, apart from the public
    port, so that no client can flood them (a flood of the public port still leaves them able to
    say how the gateway is)."""
    app = FastAPI(
        title="his gateway operations", docs_url=None, redoc_url=None, openapi_url=None, telemetry=NO_TELEMETRY
    )
    install(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness of the gateway process."""
        return {"status": "ok", "service": "gateway"}

    @app.get("/readyz")
    async def readyz() -> Response:
        """Ready when every service behind the gateway is ready."""
        health = await gw.upstream_health()
        bad = {k: v for k, v in health.items() if v != "ready"}
        return JSONResponse(
            {"status": "not ready" if bad else "ready", "services": health}, status_code=503 if bad else 200
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics of the gateway process (its public listener's requests among them)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


class Recent(Generic[T]):
    """The last result of an async call, reused for ``ttl`` seconds; one call at a time."""

    def __init__(self, fn: Callable[[], Awaitable[T]], ttl: float, clock: Callable[[], float] = time.monotonic):
        self.fn, self.ttl, self.clock = fn, ttl, clock
        self._value: T | None = None
        self._at = -float("inf")
        self._lock = asyncio.Lock()

    async def get(self) -> T:
        value = self._value
        if value is not None and self.clock() - self._at < self.ttl:
            return value
        async with self._lock:  # the others wait for this one's answer instead of asking again
            value = self._value
            if value is None or self.clock() - self._at >= self.ttl:
                value = self._value = await self.fn()
                self._at = self.clock()
            return value


class _Template:
    """What ``MetricsMiddleware`` reads from ``scope["route"]``: the template to label a request with."""

    path = "/api/{path:path}"


class Edge:
    """The gateway's ASGI app: ``/api/…`` goes straight to ``Gateway.route``; on the public
    listener, with a console upstream, every page but the gateway's own (``/healthz``, ``/docs…``,
    ``/openapi.json``) to the console (``Gateway.page``); the rest to the FastAPI app.

    Every public API request is forwarded as it is, so FastAPI's routing, dependency solving and
    middleware stack would only add CPU to each one (about a fifth of the gateway's CPU per
    forwarded booking). Errors are still answered as problem+json: every outcome of
    ``Gateway.route`` is a response, and anything unexpected is logged and answered 500.
    """

    def __init__(self, app: FastAPI, gateway: Gateway, *, names_client: bool = False) -> None:
        self.app = app
        self.gateway = gateway
        #: On the console's listener only: the caller names the browser it acts for
        #: (``X-His-Client-IP``), whose address the limits then count (``client_named``).
        self.names_client = names_client

    async def __call__(self, scope: obs.Scope, receive: obs.Receive, send: obs.Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.names_client:
            named = client_named(scope)
            if named is None:
                await problem(400, f"name the browser's address in {CLIENT_HEADER}")(scope, receive, send)
                return
            scope["client"] = (named, 0)
        path = scope["path"]
        console = CONSOLE in self.gateway.upstreams and not self.names_client and forwards_page(path)
        if path.startswith("/api/") or (path == "/" and not console):
            send = no_store(send)  # the console says itself what a browser may keep
        if not path.startswith("/api/"):
            # Documents, console and liveness cost little, but nothing here is free to flood.
            client = scope.get("client")
            peer = client[0] if client else "unknown"
            wait = self.gateway.by_ip.take(f"ip:{peer}", time.monotonic())
            if wait:
                await problem(429, "rate limit exceeded", headers={"Retry-After": retry_after(wait)})(
                    scope, receive, send
                )
            elif console:
                await self.page(scope, receive, send, peer)
            else:
                await self.app(scope, receive, send)
            return
        scope["route"] = _Template
        try:
            response = await self.gateway.route(Request(scope, receive))
        except ClientDisconnect:  # gone, or cut off for sending its body too slowly: nobody to answer
            response = problem(408, "request body not received in time")
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            response = problem(500)
        await response(scope, receive, send)

    async def page(self, scope: obs.Scope, receive: obs.Receive, send: obs.Send, peer: str) -> None:
        scope["route"] = _Page
        try:
            response = await self.gateway.page(Request(scope, receive), peer)
        except ClientDisconnect:
            response = problem(408, "request body not received in time")
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            response = problem(500)
        await response(scope, receive, send)


class _Page:
    """The template the console's pages are counted under in the gateway's metrics."""

    path = "/{page:path}"


def no_store(send: obs.Send) -> obs.Send:
    """``send`` that adds ``Cache-Control: no-store`` to the response."""

    async def sending(message: obs.Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), NO_STORE]}
        await send(message)

    return sending


def limits(settings: GatewaySettings) -> Limits:
    """What the public listener allows one client (``HIS_GATEWAY_*``)."""
    return Limits(
        header_timeout=settings.gateway_header_timeout,
        body_timeout=settings.gateway_body_timeout,
        max_connections=settings.gateway_max_connections,
        max_per_address=settings.gateway_max_connections_per_address,
    )


#: The header in which the console names the browser it calls the API for (and in which the
#: gateway tells every upstream who its client is).
CLIENT_HEADER = "x-his-client-ip"


def client_named(scope: obs.Scope) -> str | None:
    """The address one ``X-His-Client-IP`` header names, if it is an IP address."""
    values = [v for k, v in scope.get("headers", ()) if k.lower() == CLIENT_HEADER.encode()]
    if len(values) != 1:
        return None
    try:
        return str(ipaddress.ip_address(values[0].decode("ascii").strip()))
    except (UnicodeDecodeError, ValueError):
        return None


def console_listener(edge: Edge, settings: GatewaySettings) -> uvicorn.Config:
    """The console's listener, on ``HIS_CONSOLE_PORT``: the public API (an ``Edge`` that takes the
    client's address from the console), over mutual TLS admitting the console's workload
    certificate only (docs/adr/0027). Its limits are the public listener's."""
    return uvicorn.Config(
        tracing.TracingMiddleware(obs.MetricsMiddleware(edge)),
        host=settings.host,
        port=settings.console_port or 0,
        log_level="warning",
        log_config=None,
        access_log=False,
        lifespan="off",
        loop="none",
        http=guarded(limits(settings), "console", peer=spiffe_id("console")),
        ws="none",
        server_header=False,
        headers=EVERY_RESPONSE,
        proxy_headers=False,
        timeout_keep_alive=KEEP_ALIVE,
        **mutual_tls(settings),
    )


def listener(edge: Edge, settings: GatewaySettings) -> uvicorn.Config:
    """The public listener: the edge with its tracing and metrics middlewares."""
    return uvicorn.Config(
        tracing.TracingMiddleware(obs.MetricsMiddleware(edge)),
        host=settings.host,
        port=settings.http_port or settings.gateway_port,
        log_level="warning",
        log_config=None,  # its loggers propagate to the root one: JSON lines like the rest
        access_log=False,
        lifespan="off",
        loop="none",
        http=guarded(limits(settings), "public"),
        ws="none",
        server_header=False,
        headers=EVERY_RESPONSE,
        # The peer address keys the per-IP rate limit: never take it from a client's X-Forwarded-For
        # (uvicorn believes that header from 127.0.0.1 by default, where local clients connect).
        proxy_headers=False,
    )


def ops_listener(app: FastAPI, settings: GatewaySettings) -> uvicorn.Config:
    """The operations listener, on ``HIS_OPS_PORT``: mutual TLS as the services' own listeners,
    admitting on the operations paths only the operator's, Prometheus's and the gateway's own
    (its probe's) certificates (``his.kernel.callers``), so neither the public nor another
    workload reaches it, even where it binds every address."""
    ident = settings.workload()
    admitted = Admit(app, Callers.of(every=()), own=ident.spiffe_id) if ident is not None else app
    return uvicorn.Config(
        admitted,
        host=settings.host,
        port=settings.ops_port or 0,
        log_level="warning",
        log_config=None,
        access_log=False,
        lifespan="off",
        loop="none",
        http=guarded(OPS_LIMITS, "ops"),
        ws="none",
        server_header=False,
        headers=EVERY_RESPONSE,
        proxy_headers=False,
        timeout_keep_alive=KEEP_ALIVE,
        **mutual_tls(settings),
    )


def enough_files(settings: GatewaySettings) -> None:
    """Raise this process's open-file limit to what its connection caps need, if the hard limit allows."""
    public = settings.gateway_max_connections * (2 if settings.console_port else 1)  # the console's is alike
    want = public + OPS_LIMITS.max_connections + 512  # upstream pool, logs, slack
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        top = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))
        if top < want:
            log.warning("open files limited to %d: fewer than HIS_GATEWAY_MAX_CONNECTIONS needs", top)


def main() -> None:
    settings = GatewaySettings()
    obs.setup_logging(settings.log_level, "gateway")
    tracing.setup("gateway", tracing.otlp_endpoint(settings.otlp_endpoint))
    enough_files(settings)
    upstreams = object_of(json.loads(os.environ.get("HIS_UPSTREAMS", "{}")))
    app = create_app({str(k): str(v) for k, v in upstreams.items()}, settings)
    gateway: Gateway = app.state.gateway
    servers = [QuietServer(listener(Edge(app, gateway), settings))]
    if settings.console_port and settings.workload() is not None:
        servers.append(QuietServer(console_listener(Edge(app, gateway, names_client=True), settings)))
    elif settings.console_port:
        log.warning("HIS_CONSOLE_PORT is set without a workload identity: the console has no listener")
    if settings.ops_port:
        servers.append(QuietServer(ops_listener(ops_app(gateway), settings)))
    else:
        log.warning("HIS_OPS_PORT is not set: the gateway serves no readiness or metrics")

    def stop() -> None:
        for server in servers:
            server.request_exit()

    async def run(server: QuietServer) -> None:
        try:
            await server.serve()
        finally:
            stop()  # one listener stopped (a signal, a port taken): the process stops

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        watch = asyncio.create_task(servers[0].watch_parent())
        revocations = asyncio.create_task(gateway.revocations.run(), name="revocations")
        try:
            await asyncio.gather(*(run(s) for s in servers))
        finally:
            watch.cancel()
            revocations.cancel()
            await gateway.close()
            tracing.shutdown()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve())
