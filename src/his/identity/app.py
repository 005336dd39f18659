"""Composition root of the identity service."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from his.kernel.security import AUDIENCE, ISSUER, TokenVerifier
from his.kernel.service import ServiceContext, ServiceDefinition
from his.kernel.web import Routes

if TYPE_CHECKING:
    from his.identity.handlers import Identity, KeyRing
    from his.kernel.db import Database

PASSPHRASE_ENV = "HIS_IDENTITY_KEY_PASSPHRASE"  # noqa: S105 - the variable name, not its value


def http(identity: Identity) -> Routes:
    """Identity's routes over its use cases; tokens are verified with its own key ring."""
    from his.identity.api.http import router

    return Routes(
        router, provides=[identity], verifier=TokenVerifier(identity.keys.jwks, issuer=ISSUER, audience=AUDIENCE)
    )


def key_ring(db: Database) -> KeyRing:
    """The signing keys in ``db``, protected by the passphrase in ``HIS_IDENTITY_KEY_PASSPHRASE``."""
    from his.identity.handlers import KeyRing

    passphrase = os.environ.get(PASSPHRASE_ENV, "")
    if len(passphrase) < 16:
        raise RuntimeError(f"{PASSPHRASE_ENV} must be set (at least 16 characters) to protect the signing keys")
    return KeyRing(db, passphrase.encode())


def routes(ctx: ServiceContext) -> Routes:
    from his.identity.handlers import Identity, Registrations
    from his.identity.settings import IdentitySettings

    s = IdentitySettings()
    limits = Registrations(s.registrations_per_address, s.registrations_overall, s.registration_window_seconds)
    return http(Identity(ctx.db, key_ring(ctx.db), registrations=limits))


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models

    return ServiceDefinition(
        name="identity",
        routes=routes,
        description="Users, password hashes, roles, refresh tokens, signing keys.",
    )
