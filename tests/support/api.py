"""A service's HTTP router run in-process against the real database, with real signed tokens.

Tokens are ES256 access tokens signed by one key made for the test run; the router verifies
them through the same ``TokenVerifier`` the services use, with that key as its JWKS.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI

from his.identity.keys import SigningKey, sign_access_token
from his.kernel import problems
from his.kernel.security import AUDIENCE, ISSUER, TokenVerifier

KEY = SigningKey.generate(datetime.now(UTC))


def bearer(sub: uuid.UUID, *roles: str) -> dict[str, str]:
    """Headers of a caller signed in as ``sub`` with ``roles`` (a token made now)."""
    token, _ = sign_access_token(
        KEY, subject=str(sub), roles=list(roles), issuer=ISSUER, audience=AUDIENCE, now=datetime.now(UTC)
    )
    return {"authorization": f"Bearer {token}"}


def verifier() -> TokenVerifier:
    async def jwks() -> dict[str, Any]:
        return {"keys": [KEY.public_jwk()]}

    return TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE)


@asynccontextmanager
async def serve(*routers: APIRouter, base_url: str = "http://his") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the routers, mounted as a service mounts them (problem+json errors)."""
    app = FastAPI()
    problems.install(app)
    for r in routers:
        app.include_router(r)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client
