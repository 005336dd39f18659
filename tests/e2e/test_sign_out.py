"""Signing out ends the session at once under `his up`: its access token, still unexpired and
correctly signed, is refused at the gateway within seconds; the same user's other sessions go on.
A stolen refresh token used after its rotation ends the whole session too."""

from __future__ import annotations

import time
import uuid

import httpx

from tests.e2e.harness import Hospital, own_account
from tests.support.waiting import wait_until

PASSWORD = "Quiet-Orchard-Lamp-58"
SEEN_WITHIN = 5.0  # seconds: the gateway asks identity every second


def sign_in(gw: str, email: str) -> dict[str, str]:
    r = httpx.post(f"{gw}/api/auth/login", json={"email": email, "password": PASSWORD}, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def bearer(tokens: dict[str, str]) -> dict[str, str]:
    return {"authorization": f"Bearer {tokens['access_token']}"}


def catalogue(gw: str, tokens: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{gw}/api/lab/catalog", headers=bearer(tokens), timeout=10)


def refused(gw: str, tokens: dict[str, str]) -> bool:
    """Refused by the gateway itself: a service behind it may say "invalid token" a little sooner
    (each service asks identity as the gateway does, on its own schedule)."""
    r = catalogue(gw, tokens)
    return r.status_code == 401 and "signed out" in r.json().get("detail", "")


def test_signing_out_ends_the_session_at_the_gateway_within_seconds(shared_hospital: Hospital) -> None:
    gw = shared_hospital.gateway
    email = f"sign-out-{uuid.uuid4().hex[:8]}@example.org"
    own_account(shared_hospital, email, PASSWORD, "Out")
    laptop, phone = sign_in(gw, email), sign_in(gw, email)
    assert catalogue(gw, laptop).status_code == 200 and catalogue(gw, phone).status_code == 200

    out = httpx.post(f"{gw}/api/auth/logout", json={"refresh_token": laptop["refresh_token"]}, timeout=10)
    assert out.status_code == 204
    signed_out = time.monotonic()
    wait_until(lambda: refused(gw, laptop), timeout=SEEN_WITHIN, every=0.2, what="the signed-out token refused")
    took = time.monotonic() - signed_out
    r = catalogue(gw, laptop)
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert "signed out" in r.json()["detail"]
    print(f"[sign-out] the access token was refused {took:.2f}s after the sign-out")

    # The other session of the same user is untouched, and so are its refreshes.
    assert catalogue(gw, phone).status_code == 200
    r = httpx.post(f"{gw}/api/auth/refresh", json={"refresh_token": phone["refresh_token"]}, timeout=10)
    assert r.status_code == 200, r.text
    phone_next = dict(r.json())
    assert catalogue(gw, phone_next).status_code == 200

    # The rotated refresh token comes back (someone kept a copy): the whole session ends, including
    # the access token just issued to whoever refreshed first.
    stolen = httpx.post(f"{gw}/api/auth/refresh", json={"refresh_token": phone["refresh_token"]}, timeout=10)
    assert stolen.status_code == 401
    wait_until(lambda: refused(gw, phone_next), timeout=SEEN_WITHIN, every=0.2, what="the stolen session ended")
    assert refused(gw, phone)

    # Signing in again opens a new session.
    assert catalogue(gw, sign_in(gw, email)).status_code == 200
