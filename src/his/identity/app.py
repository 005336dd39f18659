"""Composition root of the identity service."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from his.kernel.callers import ANY_SERVICE, Callers
from his.kernel.pki import spiffe_id
from his.kernel.security import AUDIENCE, ISSUER, TokenVerifier
from his.kernel.service import ServiceContext, ServiceDefinition
from his.kernel.web import Routes

if TYPE_CHECKING:
    from datetime import datetime

    from his.identity.domain import PasswordPolicy
    from his.identity.handlers import Identity
    from his.identity.passwords import Passwords
    from his.identity.ports import IdentityUnits
    from his.identity.recovery import PasswordRecovery
    from his.identity.registration import Registration
    from his.identity.throttles import Registrations, Throttle
    from his.kernel.clock import Clock
    from his.kernel.db import Database
    from his.kernel.json import Json

PASSPHRASE_ENV = "HIS_IDENTITY_KEY_PASSPHRASE"  # noqa: S105 - the variable name, not its value


def http(
    identity: Identity, recovery: PasswordRecovery | None = None, registration: Registration | None = None
) -> Routes:
    """Identity's routes over its use cases, whichever units of work they run on (the database's,
    ``use_cases``; any others, ``use_cases_over``: the in-memory ones of ``his.testing.identity``
    in unit tests). Tokens are verified with its own key ring. Reset links are sent by
    ``recovery``, confirmation links by ``registration`` (default: e-mail that goes nowhere, for
    the API reference)."""
    from datetime import datetime

    from fastapi import APIRouter

    from his.identity.accounts import Accounts
    from his.identity.api import admin as admin_api
    from his.identity.api import http as http_api
    from his.identity.recovery import PasswordRecovery
    from his.identity.registration import Registration
    from his.kernel.auth import FRESH_FOR
    from his.kernel.mail import FakeChannel
    from his.kernel.revocations import Revocations

    async def revoked(since: str | None) -> Json:
        now, rows = await identity.revoked_sessions(datetime.fromisoformat(since) if since else None)
        return {"now": now.isoformat(), "sessions": [{"sid": s, "until": u.isoformat()} for s, u in rows]}

    verifier = TokenVerifier(
        identity.keys.jwks, issuer=ISSUER, audience=AUDIENCE, revocations=Revocations(revoked, every=FRESH_FOR)
    )
    router = APIRouter()
    router.include_router(http_api.router)
    router.include_router(admin_api.router)  # the administrators' routes on accounts
    accounts = Accounts(identity.units, identity.throttle, identity.refusals)
    recovery = recovery or PasswordRecovery(identity, FakeChannel(), "http://127.0.0.1:4004")
    registration = registration or Registration(identity, FakeChannel(), "http://127.0.0.1:4004")
    return Routes(router, provides=[identity, accounts, recovery, registration], verifier=verifier)


def use_cases(
    db: Database,
    passphrase: bytes,
    *,
    passwords: Passwords | None = None,
    policy: PasswordPolicy | None = None,
    throttle: Throttle | None = None,
    registrations: Registrations | None = None,
) -> Identity:
    """Identity's use cases over its database (``IdentityStore``) and the database's clock, with
    the signing keys kept there protected by ``passphrase``."""
    from his.identity.store import IdentityStore

    def clock() -> datetime:
        """The database's clock, read when asked: the routes are built before the database is
        opened (and, for the API reference, without one)."""
        return db.clock()

    return use_cases_over(
        IdentityStore(db),
        passphrase,
        clock=clock,
        passwords=passwords,
        policy=policy,
        throttle=throttle,
        registrations=registrations,
    )


def use_cases_over(
    units: IdentityUnits,
    passphrase: bytes,
    *,
    clock: Clock,
    passwords: Passwords | None = None,
    policy: PasswordPolicy | None = None,
    throttle: Throttle | None = None,
    registrations: Registrations | None = None,
) -> Identity:
    """The same use cases over any units of work: the database's, or the in-memory ones of
    ``his.testing.identity`` in unit tests. ``clock`` is the one the units run by: the throttles
    count by it and the key ring rotates by it outside a unit."""
    from his.identity.handlers import Identity, KeyRing

    return Identity(
        units,
        KeyRing(units, passphrase, clock),
        clock=clock,
        passwords=passwords,
        policy=policy,
        throttle=throttle,
        registrations=registrations,
    )


def key_passphrase() -> bytes:
    """The passphrase that protects the signing keys, from ``HIS_IDENTITY_KEY_PASSPHRASE``."""
    passphrase = os.environ.get(PASSPHRASE_ENV, "")
    if len(passphrase) < 16:
        raise RuntimeError(f"{PASSPHRASE_ENV} must be set (at least 16 characters) to protect the signing keys")
    return passphrase.encode()


def routes(ctx: ServiceContext) -> Routes:
    from his.identity.recovery import PasswordRecovery
    from his.identity.registration import Registration
    from his.identity.settings import IdentitySettings
    from his.identity.throttles import Registrations
    from his.kernel.mail import email_channel

    s = IdentitySettings()
    limits = Registrations(s.registrations_per_address, s.registrations_overall, s.registration_window_seconds)
    identity = use_cases(ctx.db, key_passphrase(), registrations=limits)
    mail = email_channel(s, ctx.settings.data_path)
    return http(identity, PasswordRecovery(identity, mail, s.public_url), Registration(identity, mail, s.public_url))


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models

    return ServiceDefinition(
        name="identity",
        routes=routes,
        description="Users, password hashes, roles, refresh tokens, signing keys.",
        # Every service verifies tokens itself: it fetches the keys that sign them and the
        # sessions signed out (his.kernel.auth). Audit names the staff who read a patient's record
        # (the caller's own token goes with it: ADR 0028). The gateway calls every route.
        callers=Callers.of(
            paths={
                "/auth/jwks": [ANY_SERVICE],
                "/auth/revoked-sessions": [ANY_SERVICE],
                "/staff": [spiffe_id("audit")],
            }
        ),
    )
