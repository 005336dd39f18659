"""The console's calls to the public API, on the gateway's console listener (docs/adr/0027).

The console is a client of the API like any other: each call carries the user's access token
(never a back door), and names the browser it is made for in ``X-His-Client-IP``, which that
listener (mutual TLS, the console's certificate only) alone believes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Literal

import aiohttp

from his.console.domain import Tokens
from his.kernel.json import Json, JsonObject, object_of, text
from his.kernel.pki import WorkloadIdentity

log = logging.getLogger("his.console.api")

Method = Literal["GET", "POST", "PATCH", "PUT", "DELETE"]


@dataclass(frozen=True)
class Answer:
    """What the API answered: its status and its JSON body (None when it had none, or none that
    parsed), with the ``Retry-After`` it named."""

    status: int
    body: Json = None
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def problem(self) -> Problem:
        """The problem+json of an error answer, as a form shows it."""
        return Problem.of(self)


@dataclass(frozen=True)
class Problem:
    """An error the API answered: its title and detail, and the fields it names (``errors``:
    ``loc`` and ``msg``), so that a form can show each message beside its field."""

    status: int
    title: str
    detail: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, answer: Answer) -> Problem:
        doc: JsonObject = answer.body if isinstance(answer.body, dict) else {}
        title = doc.get("title")
        detail = doc.get("detail")
        fields: dict[str, str] = {}
        errors = doc.get("errors")
        for error in errors if isinstance(errors, list) else []:
            if not isinstance(error, dict):
                continue
            loc, msg = error.get("loc"), error.get("msg")
            names = [str(p) for p in loc if p != "body"] if isinstance(loc, list) else []
            if names and isinstance(msg, str):
                fields.setdefault(".".join(names), msg)
        return cls(
            answer.status,
            title if isinstance(title, str) else "",
            detail if isinstance(detail, str) else "",
            fields,
        )


class ApiUnavailableError(Exception):
    """The gateway could not be reached, or did not answer in time."""


def tokens_of(body: Json) -> Tokens:
    """The tokens of a sign-in's or refresh's answer (``ValueError`` if it is not one)."""
    doc = object_of(body)
    return Tokens(access=text(doc["access_token"]), refresh=text(doc["refresh_token"]))


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
        params: dict[str, str] | None = None,
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
