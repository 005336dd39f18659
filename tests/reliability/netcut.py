"""TCP proxies on 127.0.0.1 that a test can cut and heal: a network partition between processes.

Each ``Link`` forwards one listening port to one target. ``cut()`` closes every connection it
carries and refuses new ones until ``heal()``; the processes at both ends see their peer vanish,
as on a real network cut (not a hang of either process). The proxies run on their own event
loop in a thread, so a test that blocks (``time.sleep``, synchronous HTTP) does not stall them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from his.infra.nats import free_port


@dataclass
class Link:
    name: str
    target_port: int
    host: str = "127.0.0.1"
    port: int = field(default_factory=lambda: free_port("127.0.0.1"))
    is_cut: bool = False
    refused: int = 0
    carried: int = 0
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def serve(self) -> asyncio.Server:
        return await asyncio.start_server(self._accept, self.host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            self.refused += 1
            writer.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        self.carried += 1
        self._writers |= {writer, up_w}
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer), return_exceptions=True)
        self._writers -= {writer, up_w}

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.is_cut:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def _close_all(self) -> None:
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()


class Links:
    """A set of links served on a background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="netcut", daemon=True)
        self.links: dict[str, Link] = {}
        self._servers: list[asyncio.Server] = []
        self.thread.start()

    def add(self, name: str, target_port: int) -> Link:
        link = Link(name, target_port)
        server = asyncio.run_coroutine_threadsafe(link.serve(), self.loop).result(5)
        self._servers.append(server)
        self.links[name] = link
        return link

    def cut(self, links: list[Link]) -> None:
        def do() -> None:
            for link in links:
                link.is_cut = True
                link._close_all()

        self.loop.call_soon_threadsafe(do)

    def heal(self, links: list[Link]) -> None:
        def do() -> None:
            for link in links:
                link.is_cut = False

        self.loop.call_soon_threadsafe(do)

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
            for link in self.links.values():
                link._close_all()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def __iter__(self) -> Iterator[Link]:
        return iter(self.links.values())
