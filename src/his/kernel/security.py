"""Access-token verification shared by the gateway and every service.

Tokens are JWTs signed with ES256 by identity, whose public keys come from its JWKS. The
verifier accepts only the algorithms listed here (no ``none``, no HMAC, so a public key can
never be used as an HMAC secret), requires ``exp``, ``nbf``, ``iat``, ``iss``, ``aud``, ``sub``
and ``jti``, and allows a small clock leeway. An unknown ``kid`` triggers one JWKS refresh,
at most every few seconds, so rotation is picked up without letting forged kids hammer
identity. A copy of the JWKS older than ``max_key_age`` is fetched again at the next full
check, so a key that left it (retired, or withdrawn after a leak) stops being trusted; while
identity cannot be asked, the known keys stay in use.

A token that verified is remembered (by the SHA-256 of its text, in a bounded table) until its
``exp``, so the next request with the same token costs a hash and a lookup instead of an ES256
check: the gateway and every service check each request's token, and a desk sends many requests
with one token. An entry never outlives ``exp`` (without the leeway: past ``exp`` the token is
checked in full again, leeway included), a token is remembered only after it passed every check,
and the table is emptied whenever a JWKS refresh changes the keys.

Given ``revocations``, the verifier also refuses the tokens of signed-out sessions, remembered
or not, asking identity first when its last answer is too old
(``his.kernel.revocations``): every service does, so a token sent past the gateway is refused too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import jwt
from jwt import PyJWK

from his.kernel.json import JsonLike
from his.kernel.revocations import Revocations

ALGORITHMS = ("ES256",)
#: Who signs access tokens, and for whom they are meant.
ISSUER = "his.identity"
AUDIENCE = "his-api"
MAX_TOKEN_BYTES = 4096
REQUIRED_CLAIMS = ("exp", "nbf", "iat", "iss", "aud", "sub", "jti")

#: How many verified tokens a verifier remembers (the oldest is forgotten first).
CACHE_SIZE = 10_000

JwksSource = Callable[[], Awaitable[JsonLike]]


class TokenError(Exception):
    """The token is not acceptable. The message is for logs; clients only get 401."""


@dataclass(frozen=True)
class Principal:
    """The verified caller of a request."""

    subject: str
    roles: frozenset[str]
    token_id: str
    expires_at: float
    #: The sign-in the token belongs to (claim ``sid``); signing out ends it at the gateway.
    session: str = ""

    def has_any(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


class TokenVerifier:
    def __init__(
        self,
        jwks: JwksSource,
        *,
        issuer: str,
        audience: str,
        leeway: float = 30.0,
        min_refresh_gap: float = 5.0,
        max_key_age: float = 300.0,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.time,
        revocations: Revocations | None = None,
    ) -> None:
        self._source = jwks
        #: Signed-out sessions, whose tokens are refused (None: not checked here, as at the
        #: gateway, which polls them itself and answers its own message).
        self.revocations = revocations
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.min_refresh_gap = min_refresh_gap
        self.max_key_age = max_key_age
        self.cache_size = cache_size
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._jwks_seen: list[str] = []
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        #: SHA-256 of a verified token → its principal; insertion order, so the oldest is first.
        self._verified: dict[bytes, Principal] = {}

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            if not force and self._keys:
                return
            if time.monotonic() - self._fetched_at < self.min_refresh_gap and self._keys:
                return
            if self._keys:  # a failed fetch is not retried at once, by every request
                self._fetched_at = time.monotonic()
            doc = await self._source()
            listed = doc.get("keys") if isinstance(doc, Mapping) else None
            keys: dict[str, PyJWK] = {}
            seen: list[str] = []
            for member in listed if isinstance(listed, list | tuple) else []:
                if not isinstance(member, Mapping):
                    continue
                raw = dict(member)
                if raw.get("kty") == "EC" and raw.get("kid") and raw.get("alg", "ES256") in ALGORITHMS:
                    keys[str(raw["kid"])] = PyJWK.from_dict(raw, algorithm="ES256")
                    seen.append(json.dumps(raw, sort_keys=True))
            if sorted(seen) != self._jwks_seen:
                self._verified.clear()  # a key left or changed: what it vouched for is checked again
                self._jwks_seen = sorted(seen)
            self._keys = keys
            self._fetched_at = time.monotonic()

    async def _key(self, kid: str) -> PyJWK:
        if kid not in self._keys:
            await self._refresh(force=True)
        elif time.monotonic() - self._fetched_at > self.max_key_age:
            # Identity unreachable (whatever the source raises): keep the known keys for now.
            with contextlib.suppress(Exception):
                await self._refresh(force=True)
        key = self._keys.get(kid)
        if key is None:
            raise TokenError("unknown signing key")
        return key

    async def verify(self, token: str) -> Principal:
        if not token or len(token) > MAX_TOKEN_BYTES:
            raise TokenError("token missing or too large")
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        if known is not None:
            if self._clock() < known.expires_at:
                return await self._live(known)
            del self._verified[digest]
        principal = await self._verify(token)
        if self._clock() < principal.expires_at:  # one accepted only thanks to the leeway is not kept
            if len(self._verified) >= self.cache_size:
                del self._verified[next(iter(self._verified))]
            self._verified[digest] = principal
        return await self._live(principal)

    async def _live(self, principal: Principal) -> Principal:
        """``principal``, unless its session was signed out (``TokenError``)."""
        if self.revocations is not None and principal.session:
            await self.revocations.fresh()
            if principal.session in self.revocations:
                raise TokenError("session signed out")
        return principal

    async def _verify(self, token: str) -> Principal:
        """The full check: header, key, signature and claims."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError(f"malformed token: {type(exc).__name__}") from None
        if header.get("alg") not in ALGORITHMS:
            raise TokenError("algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 128:
            raise TokenError("missing kid")
        key = await self._key(kid)
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            raise TokenError(f"rejected: {type(exc).__name__}") from None
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise TokenError("bad roles claim")
        return Principal(
            subject=str(claims["sub"]),
            roles=frozenset(roles),
            token_id=str(claims["jti"]),
            expires_at=float(claims["exp"]),
            session=str(claims.get("sid") or ""),
        )


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
