"""Composition root of the identity service."""

from __future__ import annotations

import os

from fastapi import APIRouter

from his.kernel.security import TokenVerifier
from his.kernel.service import ServiceContext, ServiceDefinition

PASSPHRASE_ENV = "HIS_IDENTITY_KEY_PASSPHRASE"  # noqa: S105 - the variable name, not its value


def routes(ctx: ServiceContext) -> APIRouter:
    from his.identity.api.http import router
    from his.identity.handlers import Identity, KeyRing, Registrations
    from his.identity.settings import IdentitySettings
    from his.kernel.security import AUDIENCE, ISSUER

    passphrase = os.environ.get(PASSPHRASE_ENV, "")
    if len(passphrase) < 16:
        raise RuntimeError(f"{PASSPHRASE_ENV} must be set (at least 16 characters) to protect the signing keys")
    keys = KeyRing(ctx.db, passphrase.encode())
    s = IdentitySettings()
    limits = Registrations(s.registrations_per_address, s.registrations_overall, s.registration_window_seconds)
    identity = Identity(ctx.db, keys, registrations=limits)
    return router(identity, TokenVerifier(keys.jwks, issuer=ISSUER, audience=AUDIENCE))


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models

    return ServiceDefinition(
        name="identity",
        routes=routes,
        description="Users, password hashes, roles, refresh tokens, signing keys.",
    )
