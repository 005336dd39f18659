"""gzip for the console's static assets (``/console/assets/…``), and for nothing else.

The vendored USWDS stylesheet is 527 KB as it is and 61 KB gzipped: without compression the
first page a browser loads weighs about 625 KB, with it about 125 KB (``his bench console``).

Pages are never compressed: a page carries the session's CSRF token next to text the request
put there (a search, a form sent back with its errors), and the size of a compressed answer
would then tell someone who can make the browser send requests, and watch their sizes, how much
of a guess matches the token (BREACH). Assets hold no secret and nothing of the request.

Each asset is compressed once, the first time it is asked for, and kept by its ETag (a new
version of the file has another); every other header of the answer is the app's own, with
``Content-Encoding: gzip``, ``Vary: Accept-Encoding`` and the ETag made weak (the bytes differ).
"""

from __future__ import annotations

import asyncio
import gzip

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/console/assets/"
#: What is worth compressing: text, scripts, styles and SVG (fonts and bitmaps are compressed already).
COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")
#: Smaller answers are sent as they are (a gzip header and trailer are 18 bytes).
MINIMUM_SIZE = 512
#: At most this many compressed versions are kept (the assets are a fixed set of files).
KEPT = 256


def accepts_gzip(headers: Headers) -> bool:
    """Whether ``Accept-Encoding`` takes gzip (not with ``q=0``)."""
    for part in headers.get("accept-encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().lower().removeprefix("q=").strip()
            return not q or _weight(q) > 0
    return False


def _weight(q: str) -> float:
    try:
        return float(q)
    except ValueError:
        return 0.0


class AssetGzip:
    """ASGI middleware: gzip the answers under ``/console/assets/`` for a browser that takes it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.kept: dict[str, bytes] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        # The app writes every answer as messages here (not a file path the server would send).
        extensions = {k: v for k, v in (scope.get("extensions") or {}).items() if k != "http.response.pathsend"}
        scope = {**scope, "extensions": extensions}
        wanted = scope.get("method") in ("GET", "HEAD") and accepts_gzip(Headers(scope=scope))
        head = scope.get("method") == "HEAD"
        start: Message | None = None
        body: list[bytes] = []
        passing = True

        async def sending(message: Message) -> None:
            nonlocal start, passing
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.add_vary_header("Accept-Encoding")
                etag = headers.get("etag")
                passing = not (
                    wanted
                    and message["status"] == 200
                    and etag is not None
                    and "content-encoding" not in headers
                    and headers.get("content-type", "").startswith(COMPRESSIBLE)
                    and int(headers.get("content-length", "0") or 0) >= MINIMUM_SIZE
                    and (not head or etag in self.kept)
                )
                if passing:
                    await send(message)
                else:
                    start = message
                return
            if passing or start is None:
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await send_gzipped(start, b"".join(body))

        async def send_gzipped(message: Message, raw: bytes) -> None:
            headers = MutableHeaders(scope=message)
            etag = headers["etag"]
            packed = self.kept.get(etag)
            if packed is None:
                packed = await asyncio.to_thread(gzip.compress, raw, 9, mtime=0)
                if len(packed) >= len(raw):  # not worth it: sent as it is (and never kept)
                    await send(message)
                    await send({"type": "http.response.body", "body": raw})
                    return
                if len(self.kept) >= KEPT:
                    self.kept.clear()
                self.kept[etag] = packed
            headers["content-encoding"] = "gzip"
            headers["content-length"] = str(len(packed))
            if not etag.startswith("W/"):
                headers["etag"] = f"W/{etag}"
            await send(message)
            await send({"type": "http.response.body", "body": b"" if head else packed})

        await self.app(scope, receive, sending)


__all__ = ["PREFIX", "AssetGzip", "accepts_gzip"]
