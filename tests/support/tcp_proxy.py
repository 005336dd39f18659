"""A TCP proxy on 127.0.0.1 that can black-hole or reset the connections through it.

Put between clients and a server (NATS here) it forwards bytes both ways until told otherwise:

- ``freeze()``: every open connection stays open but nothing more is forwarded on it, ever (what
  a dropped NAT entry or a dead peer behind a firewall looks like): bytes are read and dropped,
  so the clients' writes succeed and only a timeout can tell them. Connections accepted while
  frozen are black-holed the same way (their server never answers). ``heal()`` lets new
  connections through again; the frozen ones stay dead until their client closes them.
- ``reset()``: every open connection is closed with a TCP RST (``SO_LINGER`` 0) on both sides.

``stats`` counts what happened, so a test can prove its fault landed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field


@dataclass
class ProxyStats:
    accepted: int = 0
    accepted_frozen: int = 0  # connections accepted while frozen (clients trying again)
    forwarded: int = 0  # bytes, both directions
    dropped: int = 0  # bytes read from a frozen connection and thrown away
    resets: int = 0  # connections closed with RST
    open_at: dict[str, int] = field(default_factory=dict)  # open connections when a fault began


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None
    frozen: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultyProxy:
    """``async with FaultyProxy(host, port) as proxy``: clients connect to ``proxy.url``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.stats = ProxyStats()
        self.frozen = False
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        return sum(1 for link in self._links if not link.client.is_closing())

    async def __aenter__(self) -> FaultyProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            self._close(link, rst=False)
            for task in link.tasks:
                task.cancel()
        await self._server.wait_closed()

    def freeze(self) -> None:
        """Black-hole every open connection, and every new one until ``heal()``."""
        self.stats.open_at["freeze"] = self.open_connections
        self.frozen = True
        for link in self._links:
            link.frozen = True

    def heal(self) -> None:
        """Forward new connections again (the frozen ones stay black-holed)."""
        self.frozen = False

    def reset(self) -> None:
        """Close every open connection with RST, on the client's side and the server's."""
        self.stats.open_at["reset"] = self.open_connections
        for link in list(self._links):
            self._close(link, rst=True)
            self.stats.resets += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        link = _Link(writer, None, frozen=self.frozen)
        self._links.add(link)
        if link.frozen:
            self.stats.accepted_frozen += 1
            await self._pump(link, reader, None, from_client=True)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self._close(link, rst=True)
            return
        link.server = up_writer
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, up_writer, from_client=True)),
            asyncio.create_task(self._pump(link, up_reader, writer, from_client=False)),
        ]

    async def _pump(
        self, link: _Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter | None, *, from_client: bool
    ) -> None:
        try:
            while data := await src.read(65536):
                if link.frozen or dst is None:
                    self.stats.dropped += len(data)
                    continue
                dst.write(data)
                self.stats.forwarded += len(data)  # counted when written: none once frozen
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side closed: close the other, unless it is the server's side of a frozen
            # link (a black hole tells its client nothing).
            if from_client or not link.frozen:
                self._close(link, rst=False)

    def _close(self, link: _Link, *, rst: bool) -> None:
        self._links.discard(link)
        for w in (link.client, link.server):
            if w is None or w.is_closing():
                continue
            if rst:
                sock = w.get_extra_info("socket")
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.transport.abort()
            else:
                w.close()
