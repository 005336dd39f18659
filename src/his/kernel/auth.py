"""Request authentication inside a service: it re-verifies the caller's token itself.

Services never trust identity headers from the gateway: each one verifies the bearer token
against identity's JWKS (fetched over HTTP and cached) and gets a ``Principal``, and refuses the
tokens of sessions identity lists as signed out (``his.kernel.revocations``).
"""

from __future__ import annotations

import os
from urllib.parse import urlencode

import aiohttp
from fastapi import Request

from his.kernel.json import Json
from his.kernel.pki import WorkloadIdentity
from his.kernel.problems import HTTPException
from his.kernel.revocations import Revocations
from his.kernel.security import AUDIENCE, ISSUER, Principal, TokenError, TokenVerifier, bearer

#: How old identity's list of signed-out sessions may be when a token is checked (seconds): a
#: service busy enough asks twice a second, an idle one not at all.
FRESH_FOR = 0.5


def jwks_verifier(identity_url: str | None = None) -> TokenVerifier:
    url = (identity_url or os.environ.get("HIS_IDENTITY_URL", "")).rstrip("/")
    if not url:
        raise RuntimeError("HIS_IDENTITY_URL is not set: the service cannot verify tokens")
    ident = WorkloadIdentity.from_env()  # identity's listener requires our workload certificate
    tls = ident.client_context() if ident else True
    # aiohttp, not httpx: nats-py loads aiohttp anyway, and httpx would import its command-line
    # module (rich, pygments) into every service process, about 0.2 s of CPU at each start.
    sessions: list[aiohttp.ClientSession] = []  # made on first use, inside the running loop

    async def get(path: str) -> Json:
        if not sessions:
            sessions.append(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)))
        async with sessions[0].get(f"{url}{path}", ssl=tls) as r:
            r.raise_for_status()
            doc: Json = await r.json()
        return doc

    async def jwks() -> Json:
        return await get("/auth/jwks")

    async def revoked(since: str | None) -> Json:
        return await get("/auth/revoked-sessions" + (f"?{urlencode({'since': since})}" if since else ""))

    return TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE, revocations=Revocations(revoked, every=FRESH_FOR))


async def authenticate(request: Request, verifier: TokenVerifier) -> Principal:
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise HTTPException(401, "bearer token required", headers={"WWW-Authenticate": "Bearer"})
    try:
        return await verifier.verify(token)
    except TokenError:
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"}) from None
    except (aiohttp.ClientError, TimeoutError):
        raise HTTPException(503, "identity is unavailable") from None
