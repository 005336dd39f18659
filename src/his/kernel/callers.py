"""Who may call a process's internal HTTP listener: an allowlist of SPIFFE ids per path.

Mutual TLS proves that a caller holds a certificate from the hospital's CA; it does not say that
this caller should reach this listener. Every workload holds such a certificate, so without a
list any service could call any other's routes with a user's token it had seen. gRPC admits a
list of callers per method (``his.kernel.rpc``) and NATS a list of subjects per user
(``his.kernel.bus``); the HTTP listeners do the same here (ADR 0029):

- the transport says who the peer is: ``PeerProtocol`` (uvicorn's httptools protocol) reads the
  SPIFFE id of the certificate the TLS handshake verified, once per connection, and hands it to
  the application in the request's scope (``scope["extensions"]["his.peer"]``);
- ``Admit``, the outermost ASGI layer, answers 403 (problem+json) to a caller the ``Callers`` of
  the listener do not admit on the request's path, before any route or middleware runs.

A service declares its callers beside its definition (``ServiceDefinition.callers``); most keep
the default: the gateway, which forwards the public API, on every path, and on the operations
paths the operator (``his status``, the supervisor's health checks), Prometheus (``/metrics``)
and the process itself (the cluster's exec probe, ``his.kernel.probe``). The caller's id comes
only from the verified certificate, never from a header.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography import x509
from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from his.kernel.observability import ASGIApp, Receive, Scope, Send
from his.kernel.pki import TRUST_DOMAIN, service_of, spiffe_id, spiffe_ids
from his.kernel.problems import problem

log = logging.getLogger("his.callers")

#: The scope's extension that carries the verified peer: ``{"spiffe_id": str | None}``.
PEER = "his.peer"

GATEWAY = spiffe_id("gateway")
OPERATOR = spiffe_id("his", kind="operator")
PROMETHEUS = spiffe_id("prometheus", kind="infra")
#: Stands for any service's id (``spiffe://his.local/service/<name>``) in a path's callers: for
#: what every service of the hospital needs (the keys that verify tokens).
ANY_SERVICE = f"spiffe://{TRUST_DOMAIN}/service/*"
#: Stands for the listener's own id: its process probing itself (``his.kernel.probe``).
ITSELF = f"spiffe://{TRUST_DOMAIN}/itself"

PLACEHOLDERS = frozenset({ANY_SERVICE, ITSELF})

#: The operations paths every internal listener serves, and who may ask each.
OPERATIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "/healthz": frozenset({OPERATOR, ITSELF}),
        "/readyz": frozenset({OPERATOR, ITSELF}),
        "/metrics": frozenset({OPERATOR, PROMETHEUS}),
        "/status": frozenset({OPERATOR}),
    }
)

REFUSED = Counter(
    "his_http_callers_refused_total",
    "Requests to an internal listener refused because the caller's certificate is not admitted there",
    ["caller"],
)


def _ids(callers: Iterable[str]) -> frozenset[str]:
    ids = frozenset(callers)
    if bad := sorted(i for i in ids if not i.startswith("spiffe://")):
        raise ValueError(f"callers must be SPIFFE ids, not {bad}")
    return ids


@dataclass(frozen=True)
class Callers:
    """Who may call a listener: ``every`` path, or the ``paths`` listed (exact paths, no query).

    The operations paths (``OPERATIONS``) are added to every listener's. In a path's callers
    ``ANY_SERVICE`` admits any service's id and ``ITSELF`` the listener's own."""

    every: frozenset[str] = frozenset({GATEWAY})
    paths: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, *, every: Iterable[str] = (GATEWAY,), paths: Mapping[str, Iterable[str]] | None = None) -> Callers:
        """Callers from any iterables of ids, checked to be SPIFFE ids."""
        return cls(_ids(every), MappingProxyType({p: _ids(ids) for p, ids in (paths or {}).items()}))

    def on(self, path: str) -> frozenset[str]:
        """The ids admitted on ``path`` besides ``every`` (the operations' included)."""
        return self.paths.get(path, frozenset()) | OPERATIONS.get(path, frozenset())

    def admits(self, peer: str | None, path: str, *, own: str | None = None) -> bool:
        """Whether the caller whose verified certificate carries ``peer`` may call ``path`` on
        the listener whose own id is ``own``. No certificate, no id: refused."""
        if peer is None or peer in PLACEHOLDERS:  # they stand for ids, they are none
            return False
        if peer in self.every:
            return True
        allowed = self.on(path)
        return (
            peer in allowed
            or (ANY_SERVICE in allowed and service_of(peer) is not None)
            or (ITSELF in allowed and peer == own)
        )


def peer_of(transport: asyncio.BaseTransport) -> str | None:
    """The single SPIFFE id of the certificate a TLS peer presented (verified by the handshake),
    else None: no TLS, no certificate, or not exactly one id."""
    ssl_object = transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    ids = spiffe_ids(x509.load_der_x509_certificate(der))
    return ids[0] if len(ids) == 1 else None


class PeerProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that tells the application who the TLS peer is.

    uvicorn does not put the client's certificate in the ASGI scope; this reads its SPIFFE id
    once when the connection is made and adds it to every request's scope on the connection."""

    _peer: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer = peer_of(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {PEER: {"spiffe_id": self._peer}}


def peer(scope: Scope) -> str | None:
    """The verified caller's SPIFFE id in a request's scope (``PeerProtocol``), else None."""
    ext = scope.get("extensions") or {}
    found = ext.get(PEER) or {}
    who = found.get("spiffe_id")
    return who if isinstance(who, str) else None


class Admit:
    """The outermost layer of an internal listener: a request whose caller ``callers`` do not
    admit on its path is answered 403 (problem+json) and reaches nothing else."""

    def __init__(self, app: ASGIApp, callers: Callers, *, own: str | None) -> None:
        self.app = app
        self.callers = callers
        self.own = own

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            who = peer(scope)
            if not self.callers.admits(who, scope["path"], own=self.own):
                REFUSED.labels(who or "none").inc()
                log.warning("refused %s %s to %s: not on this listener's callers", scope["method"], scope["path"], who)
                detail = f"{who or 'a caller without a SPIFFE id'} may not call {scope['path']} here"
                await problem(403, detail)(scope, receive, send)
                return
        await self.app(scope, receive, send)
