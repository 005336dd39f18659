"""The gateway's listeners against slow and greedy clients: read deadlines and connection caps.

uvicorn bounds none of this itself. Its keep-alive timeout runs only between requests and is
cancelled by the first byte of the next one; ``limit_concurrency`` is checked only once a
request's headers are complete, which is exactly what a slow client never lets happen; and
httptools buffers a header of any size. So a client that opens connections and sends a request
a byte at a time (slowloris) held every one of them for as long as it liked.

``guarded`` returns uvicorn's httptools protocol with, per listener:

- a deadline for a request's head (request line and headers), from the connection's start or
  the request's first byte: past it the connection is answered 408 and closed;
- a deadline for its body, from the end of the head: past it, 408 (or just closed, when the
  application has answered already) — the application sees the client disconnect;
- a cap on a head's size (431), since a single header can otherwise grow without end;
- a cap on open connections, in all and per peer address: one more is answered 503 with
  ``Retry-After`` and closed at once, before it can cost anything. Refused connections no longer
  count against the caps, whether they still linger (see ``LINGER``) or not.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field

from cryptography import x509
from prometheus_client import Counter as Total
from prometheus_client import Gauge
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from his.kernel.callers import PEER
from his.kernel.pki import spiffe_ids
from his.kernel.problems import TITLES

CONNECTIONS = Gauge(
    "his_gateway_connections", "Client connections a gateway listener holds (refused ones left out)", ["listener"]
)
CUT = Total(
    "his_gateway_connections_cut_total",
    "Client connections a gateway listener closed or refused, by reason",
    ["listener", "reason"],
)
_END_OF_HEAD = b"\r\n\r\n"
#: Seconds a refused connection stays half-open after its answer, its input read and dropped:
#: closed with unread input at once, the kernel resets it, and the client may lose the answer.
LINGER = 2.0
#: Refused connections lingering at once, at most, per listener (beyond them, closed at once).
MAX_LINGERING = 256


@dataclass(frozen=True)
class Limits:
    """What one listener allows a client."""

    #: Seconds to receive a request's head, from the connection's start or the request's first byte.
    header_timeout: float = 10.0
    #: Seconds to receive a request's body, from the end of its head.
    body_timeout: float = 30.0
    #: Bytes of a request's head (request line and headers).
    max_header_bytes: int = 32 * 1024
    #: Open connections of the listener, and of one peer address.
    max_connections: int = 1000
    max_per_address: int = 100


def peer_id(transport: asyncio.BaseTransport) -> str | None:
    """The SPIFFE id of the certificate a TLS client presented, or None (no TLS, no certificate,
    or none of one)."""
    ssl_object = transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    ids = spiffe_ids(x509.load_der_x509_certificate(der))
    return ids[0] if len(ids) == 1 else None


@dataclass
class _Counts:
    """A listener's connections that count against its caps (refused ones do not), and its
    refused ones still lingering."""

    open: int = 0
    lingering: int = 0
    per_address: Counter[str] = field(default_factory=Counter)


def guarded(limits: Limits, listener: str, *, peer: str | None = None) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol class with ``limits``; one class per listener (its counts).

    ``peer``: the only SPIFFE id the listener admits (its TLS handshake has verified the client's
    certificate against the hospital's CA; any other workload's is answered 403 and closed)."""
    counts = _Counts()
    gauge = CONNECTIONS.labels(listener)
    reasons = ("connections", "address", "head", "body", "head_size", "peer")
    cuts = {r: CUT.labels(listener, r) for r in reasons}

    class Guarded(HttpToolsProtocol):
        # None while no deadline runs; the byte count of the head being read, None past its end.
        _deadline: asyncio.TimerHandle | None = None
        _head: int | None = 0
        _tail = b""
        _address = ""
        _peer: str | None = None
        _counted = False
        _refused = False
        _lingering = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._address = self.client[0] if self.client else ""
            self._peer = peer_id(transport)
            if peer is not None and self._peer != peer:
                self._refuse(403, "this listener admits one workload only", "peer")
            elif counts.open >= limits.max_connections:
                self._refuse(503, "too many connections; try again shortly", "connections", retry_after=1)
            elif counts.per_address[self._address] >= limits.max_per_address:
                self._refuse(503, "too many connections from your address", "address", retry_after=1)
            else:
                self._counted = True
                counts.open += 1
                counts.per_address[self._address] += 1
                gauge.inc()
                self._arm(limits.header_timeout, "head")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._uncount()
            if self._lingering:
                counts.lingering -= 1
            super().connection_lost(exc)

        def _uncount(self) -> None:
            if self._counted:
                self._counted = False
                counts.open -= 1
                counts.per_address[self._address] -= 1
                if counts.per_address[self._address] <= 0:
                    del counts.per_address[self._address]
                gauge.dec()

        def data_received(self, data: bytes) -> None:
            if self._refused or self.transport.is_closing():  # refused or cut: the rest is dropped
                return
            if self._head is not None:
                if self._deadline is None:  # the first byte of a request on a kept-alive connection
                    self._arm(limits.header_timeout, "head")
                end = (self._tail + data).find(_END_OF_HEAD)
                size = self._head + (len(data) if end < 0 else end - len(self._tail))
                if size > limits.max_header_bytes:
                    self._refuse(431, "request headers too large", "head_size")
                    return
                self._head, self._tail = (size, data[-3:]) if end < 0 else (None, b"")
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            # Who the verified caller is, for an allowlist behind it (his.kernel.callers.Admit).
            self.scope["extensions"] = {PEER: {"spiffe_id": self._peer}}

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._head, self._tail = None, b""
            self._arm(limits.body_timeout, "body")

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()
            self._head = 0  # what comes next is the head of the next request

        def _arm(self, seconds: float, phase: str) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired, phase)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self, phase: str) -> None:
            self._deadline = None
            if self._refused or self.transport.is_closing():
                return
            cycle = self.cycle
            if phase == "head":
                if cycle is not None and not cycle.response_complete:
                    # A pipelined head behind a request still being answered: no room for a 408.
                    cuts[phase].inc()
                    self.transport.close()
                    return
                self._refuse(408, "request headers not received in time", phase)
                return
            if cycle is not None and cycle.response_started:
                # Answered already (without reading the whole body): nothing more to say.
                cuts[phase].inc()
                self.transport.close()
                return
            if cycle is not None:
                # The application waits for the rest of the body: it gets a disconnect, and what
                # it answers then is dropped (the 408 is the answer).
                cycle.disconnected = True
                cycle.message_event.set()
            self._refuse(408, "request body not received in time", phase)

        def _refuse(self, status: int, detail: str, reason: str, retry_after: int | None = None) -> None:
            """Answer ``status`` as problem+json and close the connection."""
            cuts[reason].inc()
            self._disarm()
            self._head = None
            doc = {"type": "about:blank", "title": TITLES[status], "status": status, "detail": detail}
            body = json.dumps(doc).encode()
            head: list[bytes] = [STATUS_LINE[status]]
            for name, value in self.server_state.default_headers:
                head += [name, b": ", value, b"\r\n"]
            if retry_after is not None:
                head.append(b"retry-after: %d\r\n" % retry_after)
            head += [
                b"content-type: application/problem+json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
                body,
            ]
            self.transport.write(b"".join(head))
            self._refused = True
            self._uncount()  # what lingers no longer counts against the caps
            if counts.lingering < MAX_LINGERING and self.transport.can_write_eof():
                counts.lingering += 1
                self._lingering = True
                self.transport.write_eof()
                self._deadline = self.loop.call_later(LINGER, self.transport.close)
            else:  # a flood of refusals: no time for politeness
                self.transport.close()

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded_{listener}"
    return Guarded
