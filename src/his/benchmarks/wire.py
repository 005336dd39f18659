"""A minimal HTTP/1.1 keep-alive client for load generation.

The load generator shares the machine's two cores with the system it measures, so its own cost
per request must be small and the same for every target: a general client (httpx) spends
several hundred microseconds of CPU per request, which would cap the faster baseline and flatter
the ratio. This client writes a prepared request and reads the response (``Content-Length`` or
chunked), nothing else. It is used only by the benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field


class WireError(RuntimeError):
    """The server's answer could not be read as HTTP/1.1."""


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    host: str

    @classmethod
    async def open(cls, host: str, port: int, tls: ssl.SSLContext | None = None) -> Connection:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=tls, server_hostname="localhost" if tls else None
        )
        return cls(reader, writer, f"{host}:{port}")

    async def request(self, method: str, path: str, body: bytes = b"", headers: bytes = b"") -> tuple[int, bytes]:
        """Send one request and read its response: (status, body). ``headers`` are raw header lines."""
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-length: {len(body)}\r\n".encode()
            + headers
            + b"\r\n"
        )
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 "):
            raise WireError(f"not an HTTP/1.1 response: {lines[0][:60]!r}")
        status = int(lines[0][9:12])
        length, chunked, close = -1, False, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if chunked:
            payload = await self._chunks()
        elif length >= 0:
            payload = await self.reader.readexactly(length)
        else:
            raise WireError("response without Content-Length or chunked body")
        if close:
            await self.close()
        return status, payload

    async def _chunks(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    @property
    def closed(self) -> bool:
        return self.writer.is_closing()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


@dataclass
class Pool:
    """Keep-alive connections to one server, opened on demand; a connection that failed is dropped."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None
    #: At most this many connections at once; further requests wait for one (file descriptors are finite).
    limit: int = 512
    idle: list[Connection] = field(default_factory=list)
    opened: int = 0
    _slots: asyncio.Semaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.limit)

    async def request(self, method: str, path: str, body: bytes = b"", headers: bytes = b"") -> tuple[int, bytes]:
        """One request on a kept-alive connection (or a new one). A kept-alive connection the server
        closed while it was idle (uvicorn closes them after 5 s) is replaced, as any client does:
        the server read nothing from it, so sending the request again is safe."""
        async with self._slots:
            conn = self._reusable()
            if conn is not None:
                try:
                    answer = await conn.request(method, path, body, headers)
                except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
                    await conn.close()
                    if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                        raise
                else:
                    self._release(conn)
                    return answer
            conn = await Connection.open(self.host, self.port, self.tls)
            self.opened += 1
            try:
                answer = await conn.request(method, path, body, headers)
            except BaseException:
                await conn.close()
                raise
            self._release(conn)
            return answer

    def _reusable(self) -> Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and not conn.reader.at_eof():
                return conn
            conn.writer.close()
        return None

    def _release(self, conn: Connection) -> None:
        if not conn.closed:
            self.idle.append(conn)

    async def warm(self, count: int) -> None:
        """Open connections up to ``count`` idle ones (so a measurement does not pay for opening them)."""
        while len(self.idle) < count:
            self.idle.append(await Connection.open(self.host, self.port, self.tls))
            self.opened += 1

    async def close(self) -> None:
        conns, self.idle = self.idle, []
        for c in conns:
            await c.close()
