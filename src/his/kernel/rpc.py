"""gRPC between services: mutual TLS, per-method caller allowlists, and resilient clients.

Server side: ``RpcServer`` listens with the process's workload identity and demands a client
certificate issued by the same CA. Every method has an allowlist of caller SPIFFE ids, read from
the URI SAN of the verified peer certificate (never from its CN or from metadata the caller
chose). A caller not on the list, and any method without a list, gets PERMISSION_DENIED. Handlers
find the caller's id with ``caller()`` (for auditing).

Client side: ``channel`` presents this process's identity and verifies the server against the
CA; ``RpcClient`` puts a deadline on every call, bounds calls in flight, retries idempotent calls
that got no answer, and keeps a circuit breaker. A call that gets no answer raises
``DependencyUnavailableError`` (HTTP 503), never an empty or "not found" result.

Every client in ``his.clients`` asks through ``RpcClient.ask``, the one place where answers
become results: the codes the caller names as "absent" (NOT_FOUND by default) are ``None``, any
other refusal (PERMISSION_DENIED, INVALID_ARGUMENT, ...) is ``DependencyRefusedError``, logged,
and answered 503 like an outage; a consumer or dispatcher retries it later.

The only inputs are the three PEM files of ``WorkloadIdentity``, so certificates from SPIRE or
cert-manager work the same as those of ``his``'s local CA.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import grpc
from google.protobuf.descriptor import ServiceDescriptor

from his.kernel import metrics, tracing
from his.kernel import observability as obs
from his.kernel.pki import WorkloadIdentity, spiffe_id_of_pem
from his.kernel.resilience import CircuitBreaker, DependencyRefusedError, DependencyUnavailableError, RetryPolicy

log = logging.getLogger("his.rpc")

Req = TypeVar("Req")
Resp = TypeVar("Resp")

#: The gRPC timers of this process, each child looked up once (method names and codes are bounded).
_SERVER_TIMERS = obs.Bound(metrics.GRPC_SERVER_SECONDS)
_CLIENT_TIMERS = obs.Bound(metrics.GRPC_CLIENT_SECONDS)

#: A multicallable's full method name, worked out once per multicallable.
_method_name = functools.lru_cache(maxsize=256)(metrics.method_name)

#: Requests and answers between services are small; refuse anything larger early.
MAX_MESSAGE_BYTES = 1 << 20

_CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("his_rpc_caller", default=None)


def caller() -> str:
    """The SPIFFE id of the verified caller of the gRPC call being handled."""
    who = _CALLER.get()
    if who is None:
        raise RuntimeError("caller() used outside a gRPC call admitted by the allowlist")
    return who


@functools.lru_cache(maxsize=256)
def _spiffe_id_of(pem: bytes) -> str | None:
    return spiffe_id_of_pem(pem)


def peer_spiffe_id(context: grpc.aio.ServicerContext[Req, Resp]) -> str | None:
    """The SPIFFE id in the peer's verified certificate, or None (no certificate, or no single id)."""
    pems = list(context.auth_context().get("x509_pem_cert", ()))
    return _spiffe_id_of(bytes(pems[0])) if len(pems) == 1 else None


# ---------------------------------------------------------------------------------------------
# Server


@dataclass(frozen=True)
class RpcService:
    """A servicer to expose, with the callers each of its methods admits.

    ``allow`` maps every method's short name (``GetPatient``) to the SPIFFE ids that may call
    it; a method left out, or a name that is not a method, is an error at start-up.
    """

    descriptor: ServiceDescriptor
    servicer: object
    register: Callable[[Any, grpc.aio.Server], None]
    allow: Mapping[str, Iterable[str]]

    def allowlist(self) -> dict[str, frozenset[str]]:
        """Full method name (``/pkg.Service/Method``) → allowed caller ids, checked for completeness."""
        methods = {m.name: m for m in self.descriptor.methods}
        missing, unknown = sorted(set(methods) - set(self.allow)), sorted(set(self.allow) - set(methods))
        if missing or unknown:
            raise ValueError(f"{self.descriptor.full_name}: no allowlist for {missing}; not methods: {unknown}")
        out: dict[str, frozenset[str]] = {}
        for name, callers in self.allow.items():
            ids = frozenset(callers)
            if bad := sorted(i for i in ids if not i.startswith("spiffe://")):
                raise ValueError(f"{self.descriptor.full_name}.{name}: callers must be SPIFFE ids, not {bad}")
            if methods[name].client_streaming or methods[name].server_streaming:
                raise ValueError(f"{self.descriptor.full_name}.{name}: streaming methods are not supported yet")
            out[f"/{self.descriptor.full_name}/{name}"] = ids
        return out


class AllowlistInterceptor(grpc.aio.ServerInterceptor):
    """Admit a call only if the verified caller's SPIFFE id is on the method's allowlist."""

    def __init__(self, allowlist: Mapping[str, frozenset[str]]) -> None:
        self.allowlist = dict(allowlist)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # no such method: UNIMPLEMENTED
        if handler.request_streaming or handler.response_streaming or handler.unary_unary is None:
            log.error("refusing %s: only unary methods can be guarded", handler_call_details.method)
            return None
        return _guarded(handler, handler_call_details.method, self.allowlist.get(handler_call_details.method))


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Time every unary call by method and status code (``his_grpc_server_handling_seconds``)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        return _measured(handler, handler_call_details.method)


def _measured(handler: grpc.RpcMethodHandler[Req, Resp], method: str) -> grpc.RpcMethodHandler[Req, Resp]:
    inner: Callable[[Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]] = handler.unary_unary  # type: ignore[assignment]

    async def measured(request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        start = time.perf_counter()
        code = "UNKNOWN"
        try:
            response = await inner(request, context)
            code = "OK"
            return response
        except grpc.aio.AbortError:
            aborted = context.code()
            code = aborted.name if isinstance(aborted, grpc.StatusCode) else "UNKNOWN"
            raise
        finally:
            _SERVER_TIMERS(method, code).observe(time.perf_counter() - start)

    return grpc.unary_unary_rpc_method_handler(
        measured, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


def _guarded(
    handler: grpc.RpcMethodHandler[Req, Resp], method: str, allowed: frozenset[str] | None
) -> grpc.RpcMethodHandler[Req, Resp]:
    inner: Callable[[Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]] = handler.unary_unary  # type: ignore[assignment]

    attributes = _rpc_attributes(method)

    async def guarded(request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        parent = next((str(v) for k, v in context.invocation_metadata() or () if k == "traceparent"), None)
        with tracing.span(method, tracing.SpanKind.SERVER, parent=parent, attributes=attributes):
            return await _admitted(request, context)

    async def _admitted(request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        who = peer_spiffe_id(context)
        if who is None or allowed is None or who not in allowed:
            log.warning("denied %s to %s", method, who or "a caller without a SPIFFE id")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{who or 'this caller'} may not call {method}")
        token = _CALLER.set(who)
        try:
            return await inner(request, context)
        except grpc.aio.AbortError:
            raise
        except (
            DependencyUnavailableError,
            asyncpg.PostgresConnectionError,
            asyncpg.CannotConnectNowError,
            asyncpg.InterfaceError,
            OSError,
        ) as exc:
            log.warning("dependency unavailable in %s: %r", method, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "a dependency is unavailable; try again shortly")
        except Exception:
            # grpc would put the exception's text in the status details: keep internals in the log.
            log.exception("unhandled error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            _CALLER.reset(token)

    return grpc.unary_unary_rpc_method_handler(
        guarded, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


@functools.lru_cache(maxsize=256)
def _rpc_attributes(method: str) -> dict[str, str]:
    """``/his.patients.v1.Patients/GetPatient`` as OpenTelemetry's rpc.* attributes."""
    service, _, name = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


class RpcServer:
    """A gRPC server on ``host:port`` that accepts only mutual-TLS callers on each method's allowlist."""

    def __init__(
        self,
        identity: WorkloadIdentity,
        services: Sequence[RpcService],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_concurrent_rpcs: int = 256,
    ) -> None:
        allowlist: dict[str, frozenset[str]] = {}
        for svc in services:
            allowlist.update(svc.allowlist())
        self.identity = identity
        self.services = tuple(services)
        self.host = host
        self.port = port
        self.allowlist = allowlist
        self.max_concurrent_rpcs = max_concurrent_rpcs
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Listen; return the bound port (useful with port 0)."""
        cert, key, ca = self.identity.read()
        server = grpc.aio.server(
            interceptors=[MetricsInterceptor(), AllowlistInterceptor(self.allowlist)],
            maximum_concurrent_rpcs=self.max_concurrent_rpcs,
            options=[
                ("grpc.so_reuseport", 0),  # two servers must never share a port by accident
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        for svc in self.services:
            svc.register(svc.servicer, server)
        creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
        try:
            port = server.add_secure_port(f"{self.host}:{self.port}", creds)
        except RuntimeError as exc:  # grpc raises this when the address cannot be bound
            raise OSError(f"cannot listen on {self.host}:{self.port}: {exc}") from None
        await server.start()
        self._server, self.port = server, port
        log.info("gRPC listening on %s:%d (mTLS)", self.host, port)
        return port

    async def stop(self, grace: float | None = 2.0) -> None:
        """Stop accepting calls; let running ones finish for ``grace`` seconds."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None


# ---------------------------------------------------------------------------------------------
# Client


def channel(
    target: str, identity: WorkloadIdentity, *, server_name: str | None = None, max_reconnect_backoff: float = 2.0
) -> grpc.aio.Channel:
    """A channel to ``target`` (``host:port``) that presents ``identity`` and trusts only its CA.

    The server certificate must name ``target``'s host (or ``server_name``) in a DNS or IP SAN.
    Reconnection backoff is capped low: peers are near and a restarted service should be
    reached again within seconds.
    """
    cert, key, ca = identity.read()
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    backoff_ms = int(max_reconnect_backoff * 1000)
    options: list[tuple[str, int | str]] = [
        ("grpc.initial_reconnect_backoff_ms", min(100, backoff_ms)),
        ("grpc.min_reconnect_backoff_ms", min(100, backoff_ms)),
        ("grpc.max_reconnect_backoff_ms", backoff_ms),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(target, creds, options=options)


#: Status codes that mean "no answer": the call may be retried and counts against the breaker.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
#: Overload: counts against the breaker, but retrying would only add to it.
OVERLOADED = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass
class RpcClient:
    """Calls to one other service, with a deadline, bounded concurrency, retries and a breaker.

    ``timeout`` is the budget of a whole call, retries and waits for a free slot included.
    Answers, including refusals such as NOT_FOUND or PERMISSION_DENIED, are returned or raised
    as they are (``grpc.aio.AioRpcError``); calls that got no answer raise
    ``DependencyUnavailableError`` (``CircuitOpenError`` when the breaker fails them fast).
    """

    name: str
    channel: grpc.aio.Channel
    timeout: float = 2.0
    max_in_flight: int = 64
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: CircuitBreaker | None = None
    _slots: asyncio.Semaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.max_in_flight)
        if self.breaker is None:
            self.breaker = CircuitBreaker(self.name)
        metrics.watch_breaker(self.breaker)

    async def call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        *,
        idempotent: bool,
        timeout: float | None = None,
    ) -> Resp:
        """Call ``method``; only ``idempotent`` calls are retried, and only when they got no answer."""
        name = _method_name(method)
        with tracing.span(name, tracing.SpanKind.CLIENT, attributes=_rpc_attributes(name)):
            return await self._call(method, request, idempotent=idempotent, timeout=timeout)

    async def ask(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        *,
        absent: Iterable[grpc.StatusCode] = (grpc.StatusCode.NOT_FOUND,),
        timeout: float | None = None,
    ) -> Resp | None:
        """An idempotent read: its answer, or None when the service answered with one of the
        ``absent`` codes. Any other refusal raises ``DependencyRefusedError`` (and is logged): a
        misconfigured deployment, not the user's doing. No answer raises
        ``DependencyUnavailableError``."""
        try:
            return await self.call(method, request, idempotent=True, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in set(absent):
                return None
            refused = DependencyRefusedError(self.name, exc.code().name, exc.details() or "")
            log.error("%s refused %s: %s", self.name, _method_name(method), refused.reason)
            raise refused from exc

    async def _call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        *,
        idempotent: bool,
        timeout: float | None,
    ) -> Resp:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        waits = self.retry.backoffs() if idempotent else iter(())
        while True:
            outcome = await self._attempt(method, request, deadline)
            if not isinstance(outcome, grpc.aio.AioRpcError):
                return outcome
            wait = next(waits, None) if outcome.code() in RETRYABLE else None
            if wait is None or loop.time() + wait >= deadline:
                raise DependencyUnavailableError(self.name, f"{outcome.code().name}: {outcome.details()}") from outcome
            await asyncio.sleep(wait)

    async def _attempt(
        self, method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp], request: Req, deadline: float
    ) -> Resp | grpc.aio.AioRpcError:
        """One try: the answer, or the error of a call that got none (other errors are raised)."""
        assert self.breaker is not None
        self.breaker.acquire()
        start, name = time.perf_counter(), _method_name(method)
        try:
            response = await self._send(method, request, deadline)
        except grpc.aio.AioRpcError as exc:
            _CLIENT_TIMERS(name, exc.code().name).observe(time.perf_counter() - start)
            if exc.code() in RETRYABLE or exc.code() in OVERLOADED:
                self.breaker.failure()
                return exc
            self.breaker.success()  # it answered, if only to refuse
            raise
        except BaseException:
            self.breaker.release()  # no verdict on the dependency (cancelled, no free slot, ...)
            raise
        self.breaker.success()
        _CLIENT_TIMERS(name, "OK").observe(time.perf_counter() - start)
        return response

    async def _send(self, method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp], request: Req, deadline: float) -> Resp:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            raise DependencyUnavailableError(self.name, f"{self.max_in_flight} calls in flight") from None
        try:
            metadata = (("traceparent", tracing.current_traceparent()),)
            return await method(request, timeout=max(0.001, deadline - loop.time()), metadata=metadata)
        finally:
            self._slots.release()
