"""Identity's use cases through its routes, over the in-memory ports (no database, no network):
self-registration and the accounts an administrator creates, signing in and the throttles that
keep a guesser from locking anyone out, refresh-token rotation and the reuse that revokes a
session, signing out and the sessions announced to the gateway, password changes, the
administrator created at start, and the key ring's rotation and JWKS.

The routes are the service's own (``his.identity.app.http``), mounted in-process over
``his.testing.identity``, whose contract with the PostgreSQL store is
``tests/integration/test_identity_contract.py``. The service's clock is a fake one half an hour
after midnight on new year's day and on the day the clocks go back (``tests.support.calendar``).
Passwords are hashed with argon2id's cheapest parameters (the service's cost about 200 ms a hash;
``tests/integration/test_passwords.py`` checks them). Tokens are issued at the service clock's
moments, while the routes' verifier, like every service's, checks them against the wall clock: a
test reads a token's claims with its signature checked against identity's JWKS (``Idp.claims``)
and calls a route as its holder with the same claims signed now by identity's key
(``Idp.as_holder``). What needs PostgreSQL (guesses racing the throttles' advisory locks, two
administrators created at once, tokens checked by the wall clock as identity issues them) stays
in the integration suite.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from argon2 import PasswordHasher, extract_parameters, profiles

from his.access import Role
from his.events.identity import UserRegistered
from his.gateway.routing import Match, resolve
from his.identity.app import http, use_cases_over
from his.identity.domain import (
    ACCESS_TOKEN_TTL,
    REFRESH_TOKEN_TTL,
    REVOCATION_LEEWAY,
    Backoff,
    EmailTakenError,
    StaffMember,
    User,
    WeakPasswordError,
    in_directory,
    in_order,
    normalise_email,
    staff_roles,
    token_hash,
)
from his.identity.handlers import PRUNE_EVERY, Identity
from his.identity.keys import RETIRE_AFTER, ROTATE_AFTER, sign_access_token
from his.identity.passwords import Passwords
from his.identity.registration import Registration
from his.identity.throttles import Registrations, Throttle
from his.kernel.clock import FakeClock
from his.kernel.mail import FakeChannel
from his.kernel.security import AUDIENCE, ISSUER, TokenError, TokenVerifier
from his.testing.identity import FakeIdentity, FakeUsers
from tests.support.api import serve
from tests.support.calendar import HARD_DATES, HardDate

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "violet kettle under the moon"
WRONG = "wrong wrong wrong wrong"
PASSPHRASE = b"a passphrase for the test keys"
HOME, NURSE, ATTACKER = "192.0.2.1", "198.51.100.20", "203.0.113.66"
#: argon2id at its cheapest: a hash in microseconds.
CHEAP = Passwords(PasswordHasher.from_parameters(profiles.CHEAPEST))
#: How long a signed-out session is listed: its last access token's life and the leeway.
LISTED = ACCESS_TOKEN_TTL + REVOCATION_LEEWAY


def email() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@Example.org"


#: Where the e-mailed links point (the console).
PUBLIC = "https://his.example.org"


@dataclass
class Idp:
    client: httpx.AsyncClient
    fake: FakeIdentity
    identity: Identity
    clock: FakeClock
    #: What identity e-mails (confirmation links, and reset links where a test gives them here).
    mail: FakeChannel = field(default_factory=FakeChannel)
    registration: Registration | None = None

    async def register(
        self, address: str, password: str = PASSWORD, *, at: str = HOME, name: str = "Ay Se"
    ) -> httpx.Response:
        body = {"email": address, "password": password, "full_name": name}
        return await self.client.post("/auth/register", json=body, headers={"x-his-client-ip": at})

    async def signed_up(self, address: str | None = None) -> str:
        """A new account's address (a new PATIENT account, its address confirmed)."""
        address = address or email()
        r = await self.register(address)
        assert r.status_code == 201, r.text
        assert (await self.confirm(await self.link(address))).status_code == 204
        return address

    async def link(self, address: str, path: str = "/verify-email") -> str:
        """The token of the last link e-mailed to ``address`` (once every e-mail was handed over)."""
        assert self.registration is not None
        await self.registration.sent()
        for message in reversed(self.mail.sent):
            if normalise_email(message.to) == normalise_email(address):
                found = [w for w in message.body.split() if w.startswith(PUBLIC + path + "?")]
                if found:
                    return parse_qs(urlsplit(found[0]).query)["token"][0]
        raise AssertionError(f"no link to {path} was e-mailed to {address}")

    async def confirm(self, token: str, password: str = PASSWORD, *, at: str = HOME) -> httpx.Response:
        body = {"token": token, "password": password}
        return await self.client.post("/auth/verify-email", json=body, headers={"x-his-client-ip": at})

    async def login(self, address: str, password: str = PASSWORD, *, at: str = HOME) -> httpx.Response:
        # The gateway sets x-his-client-ip from the peer address; here the test plays the gateway.
        body = {"email": address, "password": password}
        return await self.client.post("/auth/login", json=body, headers={"x-his-client-ip": at})

    async def tokens(self, address: str, password: str = PASSWORD) -> dict[str, Any]:
        r = await self.login(address, password)
        assert r.status_code == 200, r.text
        tokens: dict[str, Any] = r.json()
        return tokens

    async def refresh(self, token: str) -> httpx.Response:
        return await self.client.post("/auth/refresh", json={"refresh_token": token})

    async def logout(self, token: str) -> httpx.Response:
        return await self.client.post("/auth/logout", json={"refresh_token": token})

    async def claims(self, access_token: str) -> dict[str, Any]:
        """The token's claims and header, its signature checked against identity's JWKS (its
        moments are the service clock's: the tests check them)."""
        keys = {k["kid"]: k for k in (await self.client.get("/auth/jwks")).json()["keys"]}
        header = jwt.get_unverified_header(access_token)
        key = jwt.PyJWK.from_dict(keys[header["kid"]], algorithm="ES256")
        claims: dict[str, Any] = jwt.decode(
            access_token,
            key.key,
            algorithms=["ES256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
        return claims | {"kid": header["kid"]}

    async def as_holder(self, access_token: str) -> dict[str, str]:
        """Headers of the token's holder for the routes, which check tokens by the wall clock: the
        same subject, roles and session, signed now with identity's key."""
        c = await self.claims(access_token)
        token, _ = sign_access_token(
            await self.identity.keys.active(),
            subject=c["sub"],
            roles=c["roles"],
            issuer=ISSUER,
            audience=AUDIENCE,
            now=datetime.now(UTC),
            session=c.get("sid"),
        )
        return {"authorization": f"Bearer {token}"}

    def account(self, address: str) -> User:
        key = normalise_email(address)
        return next(u for u in self.fake.state.users.values() if u.email_key == key)

    async def revoked(self, since: str | None = None) -> dict[str, datetime]:
        """The sessions ``/auth/revoked-sessions`` lists, with until when."""
        r = await self.client.get("/auth/revoked-sessions", params={"since": since} if since else {})
        assert r.status_code == 200, r.text
        return {s["sid"]: datetime.fromisoformat(s["until"]) for s in r.json()["sessions"]}


Make = Callable[..., Awaitable[Idp]]


@pytest.fixture(params=[HARD_DATES[0], HARD_DATES[4]], ids=str)
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Identity on the hard date, over a fake of its own each time, with the given options (every
    registration of a test may come from one address unless told otherwise)."""
    hard: HardDate = request.param
    async with contextlib.AsyncExitStack() as stack:

        async def build(
            *,
            throttle: Throttle | None = None,
            registrations: Registrations | None = None,
            passwords: Passwords = CHEAP,
        ) -> Idp:
            clock = hard.clock(0, 30)
            fake = FakeIdentity(clock)
            identity = use_cases_over(
                fake,
                PASSPHRASE,
                clock=clock,
                passwords=passwords,
                throttle=throttle,
                registrations=registrations or Registrations(per_address=10_000, overall=10_000),
            )
            mail = FakeChannel()
            registration = Registration(identity, mail, PUBLIC)
            client = await stack.enter_async_context(
                serve(http(identity, registration=registration), base_url="http://identity")
            )
            return Idp(client, fake, identity, clock, mail, registration)

        yield build


@pytest.fixture
async def idp(make: Make) -> Idp:
    """Identity whose accounts take three failures in fifteen minutes."""
    return await make(throttle=Throttle(account_limit=3, ip_limit=1000))


async def test_self_registration_is_always_a_patient_and_emails_are_case_insensitive(idp: Idp) -> None:
    address = "Ay.Se@Example.org"
    r = await idp.register(address)
    assert r.status_code == 201, r.text
    user_id = uuid.UUID(r.json()["user_id"])
    again = await idp.register(address.upper(), name="Ay Se Again")  # one account: its name is the latest
    assert again.status_code == 201 and uuid.UUID(again.json()["user_id"]) not in idp.fake.state.users
    sneaky = await idp.client.post(
        "/auth/register", json={"email": email(), "password": PASSWORD, "full_name": "X Y", "roles": ["ADMIN"]}
    )
    assert sneaky.status_code == 422 and sneaky.headers["content-type"] == "application/problem+json"
    weak = await idp.register(email(), "password1234")
    assert weak.status_code == 422 and "too common" in weak.json()["detail"]
    blank = await idp.register(email(), name="   ")
    assert blank.status_code == 422 and "blank" in blank.json()["detail"]
    assert (await idp.register("not an address")).status_code == 422
    user = idp.fake.state.users[user_id]
    assert (user.email, user.email_key, user.full_name) == (address, "ay.se@example.org", "Ay Se Again")
    assert (user.roles, user.created_at, user.disabled_at) == (("PATIENT",), idp.clock(), None)
    assert user.email_verified_at is None  # until the e-mailed link is opened
    assert user.password_hash.startswith("$argon2id$")
    assert len(idp.fake.state.users) == 1
    assert idp.fake.events(UserRegistered) == [UserRegistered(user_id=user_id, roles=["PATIENT"], created_by=None)]


async def test_text_the_database_cannot_store_is_a_422_and_stores_nothing(idp: Idp) -> None:
    """A NUL character passes the schema and the address's rules, and is refused where the tables
    refuse it: a 422, as the service answers PostgreSQL's refusal."""
    nul = await idp.register("ay\x00se@example.org")
    assert nul.status_code == 422 and "cannot be stored" in nul.json()["detail"]
    assert (await idp.register(email(), name="Ay\x00Se")).status_code == 422
    assert idp.fake.state.users == {} and idp.fake.events(UserRegistered) == []
    signing_in = await idp.login("ay\x00se@example.org")
    assert signing_in.status_code == 422 and "cannot be stored" in signing_in.json()["detail"]


async def test_tokens_are_issued_at_the_service_clock_and_name_their_session(idp: Idp) -> None:
    address = await idp.signed_up()
    r = await idp.login(address)
    assert r.status_code == 200
    pair = r.json()
    assert (pair["token_type"], pair["expires_in"]) == ("Bearer", 900)
    claims = await idp.claims(pair["access_token"])
    now = int(idp.clock().timestamp())
    user = idp.account(address)
    assert (claims["sub"], claims["roles"], claims["iss"], claims["aud"]) == (
        str(user.id),
        ["PATIENT"],
        ISSUER,
        AUDIENCE,
    )
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (now, now, now + 900)
    [stored] = idp.fake.state.refresh_tokens.values()
    assert str(stored.family_id) == claims["sid"] and stored.user_id == user.id
    assert (stored.issued_at, stored.expires_at) == (idp.clock(), idp.clock() + REFRESH_TOKEN_TTL)
    assert stored.token_hash == token_hash(pair["refresh_token"])  # only its hash is kept
    assert (await idp.claims((await idp.tokens(address))["access_token"]))["sid"] != claims["sid"]


async def test_unknown_user_and_wrong_password_look_the_same(idp: Idp) -> None:
    address = await idp.signed_up()
    wrong = await idp.login(address, "not the password at all")
    unknown = await idp.login(email(), "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


async def test_refresh_rotates_and_reuse_revokes_the_family(idp: Idp) -> None:
    address = await idp.signed_up()
    first = await idp.tokens(address)
    idp.clock.advance(timedelta(minutes=10))
    second = await idp.refresh(first["refresh_token"])
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    session = (await idp.claims(first["access_token"]))["sid"]
    renewed = await idp.claims(rotated["access_token"])
    assert renewed["sid"] == session and renewed["iat"] == int(idp.clock().timestamp())
    rotated_at = idp.clock()
    # The old token comes back (stolen copy): refused, and the whole family is revoked.
    idp.clock.advance(timedelta(minutes=1))
    reuse = await idp.refresh(first["refresh_token"])
    assert reuse.status_code == 401 and reuse.json()["detail"] == "invalid refresh token"
    assert (await idp.refresh(rotated["refresh_token"])).status_code == 401
    family = sorted(idp.fake.state.refresh_tokens.values(), key=lambda t: t.issued_at)
    assert [(t.rotated_at, t.revoked_at) for t in family] == [(rotated_at, idp.clock()), (None, idp.clock())]
    assert (await idp.refresh("never issued")).status_code == 401


async def test_a_refresh_token_expires_after_fourteen_days_of_elapsed_time(idp: Idp) -> None:
    """Fourteen days of 24 hours, whatever the wall clock does between: an expired token is
    refused and its session is not revoked (nobody else held it)."""
    address = await idp.signed_up()
    kept, lapsed = await idp.tokens(address), await idp.tokens(address)
    idp.clock.advance(REFRESH_TOKEN_TTL - timedelta(seconds=1))
    assert (await idp.refresh(kept["refresh_token"])).status_code == 200
    idp.clock.advance(timedelta(seconds=1))
    assert (await idp.refresh(lapsed["refresh_token"])).status_code == 401
    assert all(t.revoked_at is None for t in idp.fake.state.refresh_tokens.values())


async def test_logout_revokes_the_refresh_token(idp: Idp) -> None:
    address = await idp.signed_up()
    tokens = await idp.tokens(address)
    assert (await idp.logout(tokens["refresh_token"])).status_code == 204
    assert (await idp.refresh(tokens["refresh_token"])).status_code == 401
    assert (await idp.logout("never issued")).status_code == 204  # nothing to revoke: no answer tells


async def test_signed_out_and_stolen_sessions_are_announced_to_the_gateway(idp: Idp) -> None:
    """Every access token names its session (``sid``); a sign-out, or a rotated refresh token that
    comes back, lists the session at ``/auth/revoked-sessions`` until its last token expires."""
    address = await idp.signed_up()
    before = (await idp.client.get("/auth/revoked-sessions")).json()
    assert datetime.fromisoformat(before["now"]) == idp.clock() and before["sessions"] == []
    a, b = await idp.tokens(address), await idp.tokens(address)
    sa, sb = (await idp.claims(a["access_token"]))["sid"], (await idp.claims(b["access_token"]))["sid"]
    assert sa and sb and sa != sb
    rotated = (await idp.refresh(b["refresh_token"])).json()
    assert (await idp.claims(rotated["access_token"]))["sid"] == sb  # a refresh stays in its session
    assert not {sa, sb} & set(await idp.revoked())
    idp.clock.advance(timedelta(minutes=1))
    signed_out = idp.clock()
    assert (await idp.logout(a["refresh_token"])).status_code == 204
    assert await idp.revoked(before["now"]) == {sa: signed_out + LISTED}
    idp.clock.advance(timedelta(minutes=1))
    assert (await idp.refresh(b["refresh_token"])).status_code == 401
    assert await idp.revoked(before["now"]) == {sa: signed_out + LISTED, sb: idp.clock() + LISTED}
    # An answer's ``now`` is the next question's ``since``: nothing new since then.
    idp.clock.advance(timedelta(seconds=1))
    latest = (await idp.client.get("/auth/revoked-sessions")).json()["now"]
    assert await idp.revoked(latest) == {}
    # Without ``since``: as far back as an access token lives, and the leeway.
    idp.clock.advance(signed_out + LISTED - idp.clock())
    assert sa in await idp.revoked()
    idp.clock.advance(timedelta(microseconds=1))
    assert set(await idp.revoked()) == {sb}
    r = await idp.client.get("/auth/revoked-sessions", params={"since": "2026-01-01T00:00:00"})
    assert r.status_code == 422


async def test_repeated_failures_throttle_the_account(idp: Idp) -> None:
    address = await idp.signed_up()
    for _ in range(3):
        assert (await idp.login(address, WRONG)).status_code == 401
    throttled = await idp.login(address)  # even the right password waits now
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "900"
    idp.clock.advance(timedelta(seconds=899))
    assert (await idp.login(address)).status_code == 429
    idp.clock.advance(timedelta(seconds=1))
    assert (await idp.login(address)).status_code == 200


async def test_only_admin_creates_staff(idp: Idp) -> None:
    admin_email = email()
    admin_id = await idp.identity.register(email=admin_email, password=PASSWORD, full_name="Ad Min", roles=[Role.ADMIN])
    patient_email = await idp.signed_up()
    doctor_email = email()
    body = {"email": doctor_email, "password": PASSWORD, "full_name": "Dr Who", "roles": ["DOCTOR"]}
    assert (await idp.client.post("/admin/users", json=body)).status_code == 401
    patient = await idp.as_holder((await idp.tokens(patient_email))["access_token"])
    denied = await idp.client.post("/admin/users", json=body, headers=patient)
    assert denied.status_code == 403 and denied.headers["content-type"] == "application/problem+json"
    admin = await idp.as_holder((await idp.tokens(admin_email))["access_token"])
    assert (await idp.client.post("/admin/users", json=body | {"roles": []}, headers=admin)).status_code == 422
    created = await idp.client.post("/admin/users", json=body, headers=admin)
    assert created.status_code == 201
    doctor_id = uuid.UUID(created.json()["user_id"])
    assert (await idp.claims((await idp.tokens(doctor_email))["access_token"]))["roles"] == ["DOCTOR"]
    assert (await idp.client.post("/admin/users", json=body, headers=admin)).status_code == 409
    assert idp.fake.events(UserRegistered)[-1] == UserRegistered(
        user_id=doctor_id, roles=["DOCTOR"], created_by=admin_id
    )


async def test_a_weaker_hash_is_upgraded_at_the_next_login(idp: Idp) -> None:
    address = await idp.signed_up()
    user = idp.account(address)
    older = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1).hash(PASSWORD)
    idp.fake.state.users[user.id] = replace(user, password_hash=older)
    assert (await idp.login(address, WRONG)).status_code == 401
    assert idp.account(address).password_hash == older  # a wrong password changes nothing
    assert (await idp.login(address)).status_code == 200
    upgraded = idp.account(address).password_hash
    assert upgraded != older and extract_parameters(upgraded) == profiles.CHEAPEST
    assert (await idp.login(address)).status_code == 200


async def test_a_key_that_left_the_jwks_stops_being_trusted(idp: Idp) -> None:
    """A verifier fetches the JWKS again once its copy is old, so a signing key that left it
    (retired, or withdrawn after a leak) stops vouching for tokens someone still mints with it."""
    key = await idp.identity.keys.active()
    verifier = TokenVerifier(idp.identity.keys.jwks, issuer=ISSUER, audience=AUDIENCE)

    def mint() -> str:
        token, _ = sign_access_token(
            key, subject=str(uuid.uuid4()), roles=["ADMIN"], issuer=ISSUER, audience=AUDIENCE, now=datetime.now(UTC)
        )
        return token

    assert (await verifier.verify(mint())).roles == {"ADMIN"}
    kept = idp.fake.state.signing_keys[key.kid]
    idp.fake.state.signing_keys[key.kid] = replace(kept, retires_at=idp.clock())
    verifier._fetched_at -= 24 * 3600  # as if the keys had been fetched a day ago
    with pytest.raises(TokenError):
        await verifier.verify(mint())


async def test_keys_sign_for_thirty_days_and_stay_published_until_their_tokens_expired(idp: Idp) -> None:
    address = await idp.signed_up()
    first = (await idp.claims((await idp.tokens(address))["access_token"]))["kid"]
    idp.clock.advance(ROTATE_AFTER - timedelta(microseconds=1))
    assert (await idp.claims((await idp.tokens(address))["access_token"]))["kid"] == first
    idp.clock.advance(timedelta(microseconds=1))
    second = (await idp.claims((await idp.tokens(address))["access_token"]))["kid"]
    assert second != first
    assert [k["kid"] for k in (await idp.client.get("/auth/jwks")).json()["keys"]] == [second, first]
    idp.clock.advance(RETIRE_AFTER - ROTATE_AFTER - timedelta(microseconds=1))
    assert len((await idp.client.get("/auth/jwks")).json()["keys"]) == 2
    idp.clock.advance(timedelta(microseconds=1))
    jwks = (await idp.client.get("/auth/jwks")).json()
    assert [k["kid"] for k in jwks["keys"]] == [second]
    assert set(jwks["keys"][0]) >= {"kty", "crv", "x", "y", "kid", "alg", "use"} and "d" not in jwks["keys"][0]
    assert jwks["keys"][0]["alg"] == "ES256"


async def test_attempts_older_than_every_window_are_forgotten(idp: Idp) -> None:
    address = await idp.signed_up()
    assert (await idp.login(address, WRONG)).status_code == 401
    counted = list(idp.fake.state.attempts)
    assert {k.split(":")[0] for k, _ in counted} >= {"ip", "acct-ip", "acct"}
    idp.clock.advance(timedelta(hours=24) + PRUNE_EVERY)  # the backoff's window is the longest
    assert (await idp.login(address, WRONG)).status_code == 401
    assert all(at == idp.clock() for _, at in idp.fake.state.attempts)
    assert [k for k, _ in idp.fake.state.attempts if k.startswith("register")] == []


# Password changes (``POST /api/auth/password``).


async def signed_in_twice(idp: Idp) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A new account and two of its sessions (say, a laptop and a phone)."""
    address = await idp.signed_up()
    return address, await idp.tokens(address), await idp.tokens(address)


async def change(idp: Idp, tokens: dict[str, Any], current: str, new: str) -> httpx.Response:
    return await idp.client.post(
        "/auth/password",
        json={"current_password": current, "new_password": new},
        headers=await idp.as_holder(tokens["access_token"]),
    )


def test_the_gateway_routes_password_changes_to_identity() -> None:
    match = resolve("POST", "/api/auth/password")
    assert isinstance(match, Match)
    assert (match.route.service, match.upstream_path, match.route.public) == ("identity", "/auth/password", False)


async def test_a_user_changes_their_password_and_their_other_sessions_end(idp: Idp) -> None:
    address, here, elsewhere = await signed_in_twice(idp)
    idp.clock.advance(timedelta(minutes=5))
    r = await change(idp, here, PASSWORD, NEW_PASSWORD)
    assert r.status_code == 204, r.text
    assert (await idp.login(address)).status_code == 401
    new = await idp.login(address, NEW_PASSWORD)
    assert new.status_code == 200
    # The session that changed it goes on; the other one is signed out, now.
    assert (await idp.refresh(here["refresh_token"])).status_code == 200
    assert (await idp.refresh(elsewhere["refresh_token"])).status_code == 401
    gone = (await idp.claims(elsewhere["access_token"]))["sid"]
    assert await idp.revoked() == {gone: idp.clock() + LISTED}


async def test_the_current_password_and_the_policy_are_checked(idp: Idp) -> None:
    address, here, _ = await signed_in_twice(idp)
    wrong = await change(idp, here, "not the password at all", NEW_PASSWORD)
    assert wrong.status_code == 403 and wrong.headers["content-type"] == "application/problem+json"
    assert "current password is wrong" in wrong.json()["detail"]
    weak = await change(idp, here, PASSWORD, "password1234")
    assert weak.status_code == 422 and "too common" in weak.json()["detail"]
    same = await change(idp, here, PASSWORD, PASSWORD)
    assert same.status_code == 422 and "differ" in same.json()["detail"]
    named = await change(idp, here, PASSWORD, f"{address.split('@')[0]} and more words")
    assert named.status_code == 422 and "e-mail" in named.json()["detail"]
    unsigned = await idp.client.post(
        "/auth/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert unsigned.status_code == 401
    # Nothing changed: the old password still signs in, and no session ended.
    assert (await idp.login(address)).status_code == 200
    assert all(t.revoked_at is None for t in idp.fake.state.refresh_tokens.values())


async def test_guessing_the_current_password_is_throttled(idp: Idp) -> None:
    _, here, _ = await signed_in_twice(idp)
    for _ in range(3):  # the account limit of this test's throttle
        assert (await change(idp, here, "a wrong guess here", NEW_PASSWORD)).status_code == 403
    throttled = await change(idp, here, PASSWORD, NEW_PASSWORD)
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "900"
    idp.clock.advance(timedelta(seconds=900))
    assert (await change(idp, here, PASSWORD, NEW_PASSWORD)).status_code == 204


# What one client can do to sign-in and registration (ADR 0017), on the service's clock.


async def test_a_guesser_at_one_address_cannot_lock_the_nurse_out(make: Make) -> None:
    idp = await make()
    nurse = await idp.signed_up()
    for _ in range(5):
        assert (await idp.login(nurse, WRONG, at=ATTACKER)).status_code == 401
    held = await idp.login(nurse, at=ATTACKER)  # even the right password waits there now
    assert held.status_code == 429 and held.headers["retry-after"] == "1"
    assert held.headers["content-type"] == "application/problem+json"
    # Shift change: the nurse signs in from the ward's workstation at once.
    assert (await idp.login(nurse, at=NURSE)).status_code == 200
    # Her own mistakes at her own address do not block her either.
    assert (await idp.login(nurse, WRONG, at=NURSE)).status_code == 401
    assert (await idp.login(nurse, at=NURSE)).status_code == 200


async def test_each_further_failure_at_an_address_doubles_the_wait_up_to_a_cap(make: Make) -> None:
    idp = await make(throttle=Throttle(pair=Backoff(free=2, base_seconds=1, cap_seconds=4)))
    account = await idp.signed_up()
    for _ in range(2):
        assert (await idp.login(account, WRONG, at=ATTACKER)).status_code == 401
    waits = []
    for _ in range(5):
        refused = await idp.login(account, WRONG, at=ATTACKER)
        assert refused.status_code == 429
        waits.append(int(refused.headers["retry-after"]))
        idp.clock.advance(timedelta(seconds=waits[-1] - 0.001))
        assert (await idp.login(account, WRONG, at=ATTACKER)).status_code == 429, "let in before its time"
        idp.clock.advance(timedelta(seconds=0.001))
        assert (await idp.login(account, WRONG, at=ATTACKER)).status_code == 401
    assert waits == [1, 2, 4, 4, 4]
    idp.clock.advance(timedelta(seconds=4))
    assert (await idp.login(account, at=ATTACKER)).status_code == 200
    # The right password forgave that address's failures: the next mistakes are free again.
    assert [(await idp.login(account, WRONG, at=ATTACKER)).status_code for _ in range(2)] == [401, 401]


async def test_guessing_one_account_from_many_addresses_meets_the_account_ceiling(make: Make) -> None:
    idp = await make(throttle=Throttle(account_limit=6, window_seconds=900))
    account = await idp.signed_up()
    botnet = [f"203.0.113.{n}" for n in range(1, 4)]
    for address in botnet:
        for _ in range(2):  # within each address's free failures
            assert (await idp.login(account, WRONG, at=address)).status_code == 401
    idp.clock.advance(timedelta(seconds=60))
    ceiling = await idp.login(account, at="192.0.2.200")  # from anywhere, until the window passes
    assert ceiling.status_code == 429 and int(ceiling.headers["retry-after"]) == 900 - 60
    other = await idp.signed_up()  # other accounts are not affected
    assert (await idp.login(other, at=botnet[0])).status_code == 200
    idp.clock.advance(timedelta(seconds=900 - 60))
    assert (await idp.login(account, at="192.0.2.200")).status_code == 200


async def test_registrations_are_limited_per_address_and_overall(make: Make) -> None:
    idp = await make(registrations=Registrations(per_address=3, overall=5, window_seconds=600))
    home, cafe, library = "192.0.2.10", "192.0.2.11", "192.0.2.12"
    weak = await idp.register(email(), "password1234", at=home)
    assert weak.status_code == 422  # refused before it counts
    assert [(await idp.register(email(), at=home)).status_code for _ in range(4)] == [201, 201, 201, 429]
    idp.clock.advance(timedelta(seconds=100))
    assert [(await idp.register(email(), at=cafe)).status_code for _ in range(2)] == [201, 201]
    everyone = await idp.register(email(), at=library)  # five in ten minutes: nobody now
    assert everyone.status_code == 429 and int(everyone.headers["retry-after"]) == 600 - 100
    assert everyone.headers["content-type"] == "application/problem+json"
    # An administrator's account creation is not a self-registration: not limited.
    assert await idp.identity.register(email=email(), password=PASSWORD, full_name="Staff Member")
    idp.clock.advance(timedelta(seconds=500))
    assert (await idp.register(email(), at=library)).status_code == 201


# The administrator `his up` has identity create (``python -m his.identity.admin``).


async def test_the_administrator_is_created_once(idp: Idp) -> None:
    assert await idp.identity.ensure_admin(email="Chief@His.local", password=NEW_PASSWORD)
    # At the next start it is there: nothing changes, whatever the settings say now.
    assert not await idp.identity.ensure_admin(email="other@his.local", password="another fine passphrase")
    assert not await idp.identity.ensure_admin(email="other@his.local", password="password1234")
    [admin] = idp.fake.state.users.values()
    assert (admin.email, admin.email_key, admin.full_name, admin.roles) == (
        "Chief@His.local",
        "chief@his.local",
        "Administrator",
        ("ADMIN",),
    )
    assert idp.fake.events(UserRegistered) == [UserRegistered(user_id=admin.id, roles=["ADMIN"], created_by=None)]
    assert (await idp.login("chief@his.local", NEW_PASSWORD)).status_code == 200


async def test_a_generated_administrator_password_is_changed_at_the_first_sign_in(idp: Idp) -> None:
    assert await idp.identity.ensure_admin(email="root@his.local", password=NEW_PASSWORD, change_required=True)
    told = await idp.login("root@his.local", NEW_PASSWORD)
    assert told.status_code == 403 and told.json()["code"] == "password_change_required"
    body = {"email": "root@his.local", "current_password": NEW_PASSWORD, "new_password": PASSWORD}
    assert (await idp.client.post("/auth/login/password", json=body)).status_code == 200
    assert (await idp.login("root@his.local", PASSWORD)).status_code == 200


async def test_an_administrator_the_rules_refuse_is_not_created(make: Make) -> None:
    idp = await make()
    with pytest.raises(WeakPasswordError, match="too common"):
        await idp.identity.ensure_admin(email="admin@his.local", password="password1234")
    with pytest.raises(WeakPasswordError, match="your name"):
        await idp.identity.ensure_admin(email="chief@his.local", password="the administrator of it all")
    taken = await idp.signed_up("boss@his.local")
    with pytest.raises(EmailTakenError):
        await idp.identity.ensure_admin(email=taken, password=NEW_PASSWORD)
    assert [u.roles for u in idp.fake.state.users.values()] == [("PATIENT",)]


# --- the staff directory -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("roles", "disabled", "listed", "shown"),
    [
        (("DOCTOR",), False, True, ("DOCTOR",)),
        (("NURSE", "LAB_TECH"), False, True, ("LAB_TECH", "NURSE")),
        (("ADMIN",), False, True, ("ADMIN",)),
        (("RECEPTIONIST",), False, True, ("RECEPTIONIST",)),
        (("BILLING",), False, True, ("BILLING",)),
        (("AUDITOR",), False, True, ("AUDITOR",)),
        (("PATIENT",), False, False, ()),
        (("PATIENT", "NURSE"), False, True, ("NURSE",)),  # a nurse who is also a patient: named as a nurse
        (("DOCTOR",), True, False, ("DOCTOR",)),
        ((), False, False, ()),
    ],
)
def test_who_the_staff_directory_names(
    roles: tuple[str, ...], disabled: bool, listed: bool, shown: tuple[str, ...]
) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC) if disabled else None
    assert in_directory(roles, at) is listed
    assert staff_roles(roles) == shown


def test_the_staff_directory_keeps_the_order_given_each_once() -> None:
    a, b, c = (StaffMember(uuid.uuid4(), name, ("NURSE",)) for name in ("A", "B", "C"))
    assert in_order([c.id, uuid.uuid4(), a.id, c.id, b.id, a.id], [a, b, c]) == [c, a, b]
    assert in_order([a.id], []) == []


def test_the_gateway_routes_the_staff_directory_to_identity() -> None:
    match = resolve("GET", "/api/staff")
    assert isinstance(match, Match)
    assert (match.route.service, match.upstream_path, match.route.public) == ("identity", "/staff", False)


async def _staff(idp: Idp, name: str, *roles: Role) -> uuid.UUID:
    return await idp.identity.register(email=email(), password=PASSWORD, full_name=name, roles=list(roles))


async def test_the_staff_directory_names_staff_in_the_order_given(idp: Idp, monkeypatch: pytest.MonkeyPatch) -> None:
    doctor = await _staff(idp, "Deniz Doğan", Role.DOCTOR)
    nurse = await _staff(idp, "Nur Yalın", Role.NURSE, Role.LAB_TECH)
    admin = await _staff(idp, "Ad Min", Role.ADMIN)
    both = await _staff(idp, "Pelin Hasta", Role.PATIENT, Role.RECEPTIONIST)
    gone = await _staff(idp, "Eski Doktor", Role.DOCTOR)
    idp.fake.state.users[gone] = replace(idp.fake.state.users[gone], disabled_at=idp.clock())
    patient_email = await idp.signed_up()
    patient = idp.account(patient_email).id
    events = len(idp.fake.published)
    queries: list[list[uuid.UUID]] = []
    real = FakeUsers.staff

    async def counted(self: FakeUsers, ids: list[uuid.UUID]) -> list[StaffMember]:
        queries.append(list(ids))
        return await real(self, ids)

    monkeypatch.setattr(FakeUsers, "staff", counted)
    asked = [nurse, uuid.uuid4(), doctor, patient, nurse, gone, both, admin, doctor]
    as_patient = await idp.as_holder((await idp.tokens(patient_email))["access_token"])
    r = await idp.client.get("/staff", params={"id": [str(i) for i in asked]}, headers=as_patient)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "items": [
            {"id": str(nurse), "full_name": "Nur Yalın", "roles": ["LAB_TECH", "NURSE"]},
            {"id": str(doctor), "full_name": "Deniz Doğan", "roles": ["DOCTOR"]},
            {"id": str(both), "full_name": "Pelin Hasta", "roles": ["RECEPTIONIST"]},
            {"id": str(admin), "full_name": "Ad Min", "roles": ["ADMIN"]},
        ]
    }
    assert len(queries) == 1 and sorted(queries[0]) == sorted(set(asked))  # one query, each id once
    assert len(idp.fake.published) == events  # a read: nothing published, nothing changed
    only_patients = await idp.client.get("/staff", params={"id": [str(patient), str(gone)]}, headers=as_patient)
    assert only_patients.status_code == 200 and only_patients.json() == {"items": []}


async def test_the_staff_directory_needs_a_token_and_one_to_two_hundred_uuids(idp: Idp) -> None:
    doctor = await _staff(idp, "Deniz Doğan", Role.DOCTOR)
    no_token = await idp.client.get("/staff", params={"id": str(doctor)})
    assert no_token.status_code == 401 and no_token.headers["content-type"] == "application/problem+json"
    address = await idp.signed_up()
    auth = await idp.as_holder((await idp.tokens(address))["access_token"])
    many = [str(doctor)] + [str(uuid.uuid4()) for _ in range(199)]
    assert (await idp.client.get("/staff", params={"id": many}, headers=auth)).json()["items"][0]["id"] == str(doctor)
    for params in ({}, {"id": [*many, str(uuid.uuid4())]}, {"id": [str(doctor), "not-a-uuid"]}, {"ids": str(doctor)}):
        r = await idp.client.get("/staff", params=params, headers=auth)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", (params, r.text)
        assert [e["loc"][0] for e in r.json()["errors"]] == ["id"], r.text
