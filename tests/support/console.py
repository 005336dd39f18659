"""The console's web app in memory for unit tests: its app over the in-memory sessions and API
(``his.testing.console``), reached by an httpx client without a socket, signed in with tokens a
test key signs."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx

from his.console.app import create_app
from his.console.domain import Answer
from his.console.i18n import environments
from his.console.sessions import SessionBook
from his.console.settings import ConsoleSettings
from his.console.web import Console
from his.identity.keys import SigningKey, sign_access_token
from his.kernel.clock import FakeClock
from his.kernel.crypto import FieldCipher
from his.kernel.json import JsonObject
from his.kernel.security import AUDIENCE, ISSUER, TokenVerifier
from his.testing.console import FakeApi, FakeConsole
from tests.support.calendar import HARD_DATES

KEY = SigningKey.generate(datetime.now(UTC))
USER = uuid.uuid4()
PUBLIC = "http://127.0.0.1:4004"
SAME_ORIGIN = {"origin": PUBLIC, "sec-fetch-site": "same-origin"}
PASSWORD = "long enough staff passphrase"
ZONE = ZoneInfo("Europe/Istanbul")


def tokens(roles: list[str], n: int = 1) -> JsonObject:
    """What identity answers a sign-in with (the n-th pair, to tell them apart)."""
    access, ttl = sign_access_token(
        KEY, subject=str(USER), roles=roles, issuer=ISSUER, audience=AUDIENCE, now=datetime.now(UTC)
    )
    return {"access_token": access, "refresh_token": f"refresh-{n}", "token_type": "Bearer", "expires_in": ttl}


@dataclass
class Desk:
    """A browser in front of the console, and the console's in-memory ports."""

    client: httpx.AsyncClient
    api: FakeApi
    fake: FakeConsole
    clock: FakeClock
    shared: Console

    async def sign_in(self, roles: list[str] | None = None, **headers: str) -> httpx.Response:
        self.api.answer("POST", "/api/auth/login", Answer(200, tokens(roles or ["RECEPTIONIST"])))
        return await self.client.post(
            "/sign-in",
            data={"email": "desk@hospital.example", "password": PASSWORD, "next": "/"},
            headers={**SAME_ORIGIN, **headers},
        )

    async def csrf(self) -> str:
        (session, _), *_ = self.fake.state.sessions.values()
        return session.csrf

    async def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        """A form of the console's own pages, with the session's CSRF token."""
        return await self.client.post(path, data={**data, "csrf": await self.csrf()}, headers=SAME_ORIGIN)


@asynccontextmanager
async def console_desk(clock: FakeClock | None = None) -> AsyncIterator[Desk]:
    """The console (Istanbul's time zone) at ``clock``, local midnight of new year's day unless given."""
    clock = clock or HARD_DATES[0].clock(0, 0)
    fake, api = FakeConsole(clock), FakeApi(keys={"keys": [dict(KEY.public_jwk())]})
    settings = ConsoleSettings(public_url=PUBLIC, console_keys="x")
    book = SessionBook(fake, FieldCipher([os.urandom(32)]), clock)
    verifier = TokenVerifier(api.jwks, issuer=ISSUER, audience=AUDIENCE)
    shared = Console(settings, book, api, verifier, environments(ZONE), ZONE)
    # An unexpected error is answered as the browser would get it (a page), not raised in the test.
    transport = httpx.ASGITransport(app=create_app(shared), client=("203.0.113.7", 50000), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=PUBLIC) as client:
        yield Desk(client, api, fake, clock, shared)
