"""Signing keys of identity: ES256 key pairs, their JWKS, and access-token signing.

Private keys are stored encrypted (PKCS#8 with a passphrase from the service's secrets), so a
database dump alone cannot mint tokens. ``kid`` is the RFC 7638 thumbprint of the public key.
A key signs for ``ROTATE_AFTER``; it stays in the JWKS until every token it signed has
expired.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from his.identity.domain import ACCESS_TOKEN_TTL
from his.kernel.json import Json, object_of, text

ROTATE_AFTER = timedelta(days=30)
RETIRE_AFTER = ROTATE_AFTER + ACCESS_TOKEN_TTL + timedelta(hours=1)


@dataclass(frozen=True)
class StoredKey:
    """A signing key as the key ring keeps it: the private key encrypted with the passphrase,
    the public one as a JWK, signing from ``created_at`` and published until ``retires_at``."""

    kid: str
    private_pem: bytes = field(repr=False)
    #: The public key as a JWK: every member of an EC public key is text.
    public_jwk: dict[str, str]
    created_at: datetime
    retires_at: datetime


def jwk_of(doc: Json) -> dict[str, str]:
    """A public EC key's JWK (``kty``, ``crv``, ``x``, ``y``, ``kid`` …: all text), checked."""
    return {k: text(v) for k, v in object_of(doc).items()}


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: ec.EllipticCurvePrivateKey
    created_at: datetime

    def public_jwk(self) -> dict[str, str]:
        jwk = jwk_of(json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key())))
        jwk.update({"kid": self.kid, "alg": "ES256", "use": "sig"})
        return jwk

    def encrypted_pem(self, passphrase: bytes) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )

    def stored(self, passphrase: bytes) -> StoredKey:
        """The key as the key ring keeps it: signing for ``ROTATE_AFTER`` from its creation, published
        until every token it signed has expired (``RETIRE_AFTER``)."""
        return StoredKey(
            self.kid, self.encrypted_pem(passphrase), self.public_jwk(), self.created_at, self.created_at + RETIRE_AFTER
        )

    @classmethod
    def load(cls, pem: bytes, passphrase: bytes, created_at: datetime) -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=passphrase)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("signing key is not an EC key")
        return cls(thumbprint(key.public_key()), key, created_at)

    @classmethod
    def generate(cls, now: datetime) -> SigningKey:
        key = ec.generate_private_key(ec.SECP256R1())
        return cls(thumbprint(key.public_key()), key, now)


def thumbprint(public: ec.EllipticCurvePublicKey) -> str:
    numbers = public.public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()

    canonical = json.dumps(
        {"crv": "P-256", "kty": "EC", "x": b64(numbers.x), "y": b64(numbers.y)}, separators=(",", ":"), sort_keys=True
    )
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def sign_access_token(
    key: SigningKey,
    *,
    subject: str,
    roles: list[str],
    issuer: str,
    audience: str,
    now: datetime,
    ttl: timedelta = ACCESS_TOKEN_TTL,
    session: str | None = None,
) -> tuple[str, int]:
    """A signed access token and its lifetime in seconds. ``session`` (claim ``sid``) names the
    sign-in it belongs to (its refresh-token family): signing out ends every token of it."""
    ts = int(now.timestamp())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "roles": sorted(roles),
        "iat": ts,
        "nbf": ts,
        "exp": ts + int(ttl.total_seconds()),
        "jti": str(uuid.uuid4()),
    }
    if session:
        claims["sid"] = session
    token = jwt.encode(claims, key.private, algorithm="ES256", headers={"kid": key.kid, "typ": "JWT"})
    return token, int(ttl.total_seconds())
