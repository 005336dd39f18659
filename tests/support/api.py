"""A service's HTTP router run in-process against the real database, with real signed tokens.

Tokens are ES256 access tokens signed by one key made for the test run; the router verifies
them through the same ``TokenVerifier`` the services use, with that key as its JWKS.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, ItemsView, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from his.identity.keys import SigningKey, sign_access_token
from his.kernel import problems
from his.kernel.security import AUDIENCE, ISSUER, TokenVerifier
from his.kernel.web import Routes, mount

KEY = SigningKey.generate(datetime.now(UTC))


def bearer(sub: uuid.UUID, *roles: str) -> dict[str, str]:
    """Headers of a caller signed in as ``sub`` with ``roles`` (a token made now)."""
    token, _ = sign_access_token(
        KEY, subject=str(sub), roles=list(roles), issuer=ISSUER, audience=AUDIENCE, now=datetime.now(UTC)
    )
    return {"authorization": f"Bearer {token}"}


class Bearer(Mapping[str, str]):
    """Headers of a caller that stay valid however long the suite runs: a fresh token is made
    each time the headers are read (for module-level callers; a token made at import expires
    when the suite outlives the token lifetime)."""

    def __init__(self, sub: uuid.UUID, *roles: str) -> None:
        self.sub, self.roles = sub, roles

    def _now(self) -> dict[str, str]:
        return bearer(self.sub, *self.roles)

    def __getitem__(self, key: str) -> str:
        return self._now()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(("authorization",))

    def __len__(self) -> int:
        return 1

    def items(self) -> ItemsView[str, str]:  # one token for the whole set of headers
        return self._now().items()


def verifier() -> TokenVerifier:
    async def jwks() -> dict[str, Any]:
        return {"keys": [KEY.public_jwk()]}

    return TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE)


@asynccontextmanager
async def serve(*routes: Routes, base_url: str = "http://his") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for services' routes, mounted as a service mounts them (problem+json
    errors); their tokens are verified with this module's key (``verifier()``)."""
    app = FastAPI()
    problems.install(app)
    for r in routes:
        mount(app, r, verifier=verifier())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client
