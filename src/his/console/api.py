"""The console's calls to the public API, on the gateway's console listener (docs/adr/0027).

The console is a client of the API like any other: each call carries the user's access token
(never a back door), and names the browser it is made for in ``X-His-Client-IP``, which that
listener (mutual TLS, the console's certificate only) alone believes.
"""

from __future__ import annotations

import json
import logging

import aiohttp

from his.console.domain import Answer, ApiUnavailableError, Method, Params
from his.kernel.json import Json, JsonObject
from his.kernel.pki import WorkloadIdentity

log = logging.getLogger("his.console.api")


class Api:
    """The public API, reached through the gateway's console listener at ``base``."""

    def __init__(self, base: str, identity: WorkloadIdentity | None, timeout: float = 10.0) -> None:
        self.base = base.rstrip("/")
        self._tls = identity.client_context() if identity else True
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=2.0)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on first use, inside the running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=60.0, ssl=self._tls),
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self,
        method: Method,
        path: str,
        *,
        client_ip: str,
        token: str | None = None,
        body: JsonObject | None = None,
        params: Params = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One call of the public API (``path`` starts with ``/api/``) for the browser at
        ``client_ip``; raises ``ApiUnavailableError`` when the gateway cannot be reached."""
        sent = {"x-his-client-ip": client_ip, "accept": "application/json", **(headers or {})}
        if token is not None:
            sent["authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            sent["content-type"] = "application/json"
            data = json.dumps(body).encode()
        try:
            async with self.session.request(
                method, f"{self.base}{path}", data=data, params=params, headers=sent, allow_redirects=False
            ) as r:
                raw = await r.read()
                retry_after = r.headers.get("retry-after")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("the API could not be reached for %s %s: %r", method, path, exc)
            raise ApiUnavailableError(f"{method} {path}") from None
        parsed: Json = None
        if raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
        return Answer(r.status, parsed, retry_after)

    async def jwks(self) -> Json:
        """The signing keys (``GET /api/auth/jwks``), for the console to read its users' tokens."""
        answer = await self.call("GET", "/api/auth/jwks", client_ip="127.0.0.1")
        if not answer.ok:
            raise ApiUnavailableError(f"the signing keys were answered {answer.status}")
        return answer.body
