"""Access tokens: what identity signs verifies; every forgery is refused (no IO: JWKS is in memory)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from his.identity.keys import SigningKey, sign_access_token
from his.kernel.security import Principal, TokenError, TokenVerifier, bearer

NOW = datetime.now(UTC)


def now() -> datetime:
    """The time a token is made: now, not when the module was imported (a long run outlives a
    token made at collection time)."""
    return datetime.now(UTC)


ISS, AUD = "https://his.local/identity", "his"
KEY = SigningKey.generate(NOW)
OTHER = SigningKey.generate(NOW)


def verifier(*keys: SigningKey) -> TokenVerifier:
    async def jwks() -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in (keys or (KEY,))]}

    return TokenVerifier(jwks, issuer=ISS, audience=AUD, leeway=5)


def good(**over: Any) -> str:
    token, _ = sign_access_token(KEY, subject="u-1", roles=["PATIENT"], issuer=ISS, audience=AUD, now=now())
    return token


def claims(**over: Any) -> dict[str, Any]:
    ts = int(now().timestamp())
    base = {
        "iss": ISS,
        "aud": AUD,
        "sub": "u-1",
        "roles": ["PATIENT"],
        "iat": ts,
        "nbf": ts,
        "exp": ts + 600,
        "jti": "j-1",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict[str, Any], key: SigningKey = KEY, **headers: Any) -> str:
    return jwt.encode(payload, key.private, algorithm="ES256", headers={"kid": key.kid, **headers})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def tamper_payload(token: str, **changes: Any) -> str:
    head, payload, sig = token.split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=="))
    doc.update(changes)
    return ".".join([head, b64(json.dumps(doc).encode()), sig])


async def test_a_token_signed_by_identity_verifies() -> None:
    p = await verifier().verify(good())
    assert p == Principal(subject="u-1", roles=frozenset({"PATIENT"}), token_id=p.token_id, expires_at=p.expires_at)


def _pub_pem() -> bytes:
    return KEY.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


FORGERIES: dict[str, Any] = {
    "alg none": lambda: jwt.encode(claims(), "", algorithm="none", headers={"kid": KEY.kid}),
    "HS256 with the public key as secret": lambda: (
        ".".join(
            [
                b64(json.dumps({"alg": "HS256", "kid": KEY.kid, "typ": "JWT"}).encode()),
                b64(json.dumps(claims()).encode()),
                "",
            ]
        )[:-1]
        + _hs256_sig()
    ),
    "expired": lambda: signed(claims(exp=int(now().timestamp()) - 60, iat=int(now().timestamp()) - 700)),
    "not yet valid (future nbf)": lambda: signed(claims(nbf=int(now().timestamp()) + 600)),
    "wrong audience": lambda: signed(claims(aud="someone-else")),
    "wrong issuer": lambda: signed(claims(iss="https://evil.example")),
    "unknown kid": lambda: signed(claims(), key=OTHER),
    "attacker key under our kid": lambda: jwt.encode(
        claims(), OTHER.private, algorithm="ES256", headers={"kid": KEY.kid}
    ),
    "stripped signature": lambda: good().rsplit(".", 1)[0] + ".",
    "altered signature": lambda: good()[:-4] + ("AAAA" if not good().endswith("AAAA") else "BBBB"),
    "tampered roles": lambda: tamper_payload(good(), roles=["ADMIN"]),
    "tampered subject": lambda: tamper_payload(good(), sub="u-2"),
    "oversized": lambda: signed(claims(pad="x" * 5000)),
    "missing exp": lambda: signed(claims(exp=None)),
    "missing jti": lambda: signed(claims(jti=None)),
    "missing sub": lambda: signed(claims(sub=None)),
    "no kid header": lambda: jwt.encode(claims(), KEY.private, algorithm="ES256"),
    "ES384 header": lambda: b64(json.dumps({"alg": "ES384", "kid": KEY.kid}).encode()) + "." + good().split(".", 1)[1],
    "jku pointing elsewhere": lambda: signed(claims(), key=OTHER, jku="https://evil.example/jwks"),
    "roles not a list": lambda: signed(claims(roles="ADMIN")),
    "garbage": lambda: "not.a.jwt",
    "empty": lambda: "",
}


def _hs256_sig() -> str:
    import hashlib
    import hmac

    head = b64(json.dumps({"alg": "HS256", "kid": KEY.kid, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims()).encode())
    return "." + b64(hmac.new(_pub_pem(), f"{head}.{body}".encode(), hashlib.sha256).digest())


@pytest.mark.parametrize("name", list(FORGERIES))
async def test_forged_tokens_are_refused(name: str) -> None:
    assert len(FORGERIES) >= 16
    token = FORGERIES[name]()
    with pytest.raises(TokenError):
        await verifier().verify(token)


async def test_rotation_old_key_verifies_until_it_leaves_the_jwks() -> None:
    old_token = good()
    new_token = signed(claims(), key=OTHER)
    both = verifier(KEY, OTHER)
    assert (await both.verify(old_token)).subject == "u-1"
    assert (await both.verify(new_token)).subject == "u-1"
    with pytest.raises(TokenError):
        await verifier(OTHER).verify(old_token)


def test_bearer_header_parsing() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer  abc ") == "abc"
    for bad in (None, "", "Basic abc", "Bearer", "Bearer   "):
        assert bearer(bad) is None


def test_keys_survive_encrypted_storage() -> None:
    pem = KEY.encrypted_pem(b"passphrase")
    assert b"ENCRYPTED" in pem
    assert SigningKey.load(pem, b"passphrase", NOW).kid == KEY.kid
    with pytest.raises(ValueError):
        SigningKey.load(pem, b"wrong", NOW)


def test_access_tokens_live_fifteen_minutes() -> None:
    token, ttl = sign_access_token(KEY, subject="u", roles=[], issuer=ISS, audience=AUD, now=NOW)
    assert ttl == 900
    body = jwt.decode(token, options={"verify_signature": False})
    assert body["exp"] - body["iat"] == 900 and timedelta(seconds=ttl) == timedelta(minutes=15)


@pytest.mark.parametrize("name", list(FORGERIES))
async def test_forgeries_are_refused_after_the_genuine_token_was_remembered(name: str) -> None:
    v = verifier()
    token = good()
    first = await v.verify(token)
    assert await v.verify(token) is first  # the second check is answered from what was remembered
    with pytest.raises(TokenError):
        await v.verify(FORGERIES[name]())


async def test_a_remembered_token_is_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = now()  # made when the test runs: PyJWT checks exp against the real clock
    clock = [t0.timestamp()]
    v = TokenVerifier(lambda: _jwks(KEY), issuer=ISS, audience=AUD, leeway=5, clock=lambda: clock[0])
    token = signed(claims(exp=int(t0.timestamp()) + 60))
    assert (await v.verify(token)).subject == "u-1"
    later = t0 + timedelta(seconds=66)  # past exp and the leeway, for the verifier and for PyJWT

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return later

    clock[0] = later.timestamp()
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)
    with pytest.raises(TokenError):
        await v.verify(token)


async def test_a_token_accepted_within_the_leeway_is_not_remembered() -> None:
    t0 = now()  # made when the test runs: PyJWT checks exp against the real clock
    clock = [t0.timestamp()]
    v = TokenVerifier(lambda: _jwks(KEY), issuer=ISS, audience=AUD, leeway=30, clock=lambda: clock[0])
    token = signed(claims(exp=int(t0.timestamp()) - 10, iat=int(t0.timestamp()) - 700))
    assert (await v.verify(token)).subject == "u-1"  # 10 s past exp, within the 30 s leeway
    assert not v._verified


async def test_remembered_tokens_are_forgotten_when_their_key_leaves_the_jwks() -> None:
    published = [KEY]

    async def jwks() -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in published]}

    v = TokenVerifier(jwks, issuer=ISS, audience=AUD, leeway=5, min_refresh_gap=0)
    old_token = good()
    assert (await v.verify(old_token)).subject == "u-1"
    published[:] = [OTHER]  # rotation: KEY is withdrawn
    assert (await v.verify(signed(claims(), key=OTHER))).subject == "u-1"  # unknown kid: JWKS refreshed
    with pytest.raises(TokenError):
        await v.verify(old_token)


async def test_the_memory_of_verified_tokens_is_bounded() -> None:
    v = TokenVerifier(lambda: _jwks(KEY), issuer=ISS, audience=AUD, leeway=5, cache_size=3)
    tokens = [signed(claims(jti=f"j-{i}")) for i in range(5)]
    for t in tokens:
        await v.verify(t)
    assert len(v._verified) == 3
    assert (await v.verify(tokens[0])).token_id == "j-0"  # forgotten, so checked in full again


async def _jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [k.public_jwk() for k in keys]}


async def test_a_token_of_a_signed_out_session_is_refused_remembered_or_not() -> None:
    from his.kernel.revocations import Revocations

    listed: list[str] = []

    async def revoked(since: str | None) -> dict[str, Any]:
        until = (now() + timedelta(minutes=16)).isoformat()
        return {"now": now().isoformat(), "sessions": [{"sid": sid, "until": until} for sid in listed]}

    async def jwks() -> dict[str, Any]:
        return {"keys": [KEY.public_jwk()]}

    v = TokenVerifier(jwks, issuer=ISS, audience=AUD, revocations=Revocations(revoked, every=0.0))
    token, _ = sign_access_token(
        KEY, subject="u-1", roles=["NURSE"], issuer=ISS, audience=AUD, now=now(), session="s-9"
    )
    assert (await v.verify(token)).session == "s-9"  # verified in full, and remembered
    listed.append("s-9")
    with pytest.raises(TokenError, match="signed out"):
        await v.verify(token)  # the remembered token too
