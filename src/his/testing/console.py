"""The console's ports in memory: its sessions, refusing what the ``session`` table refuses (a
second row under one id, a digest that is not 32 bytes, a short CSRF token, a last request
before sign-in) with the errors asyncpg raises for it; and the public API, answering what a test
sets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from urllib.parse import quote

import asyncpg

from his.console.domain import Answer, ApiUnavailableError, Locale, Method, Params, Session
from his.kernel.clock import Clock, utc_now
from his.kernel.json import Json, JsonObject
from his.kernel.problems import TITLES
from his.testing.units import FakeUnits, FakeWork


@dataclass
class ConsoleState:
    #: Sessions by id, with their encrypted tokens.
    sessions: dict[bytes, tuple[Session, bytes]] = field(default_factory=dict)


class FakeSessions:
    def __init__(self, state: ConsoleState) -> None:
        self.state = state

    async def add(self, session: Session, tokens: bytes) -> None:
        if session.id in self.state.sessions:
            raise asyncpg.UniqueViolationError('duplicate key value violates unique constraint "session_pkey"')
        if len(session.id) != 32 or len(session.csrf) < 32 or session.seen_at < session.created_at:
            raise asyncpg.CheckViolationError('new row for relation "session" violates check constraint')
        self.state.sessions[session.id] = (session, tokens)

    async def get(self, session_id: bytes) -> tuple[Session, bytes] | None:
        return self.state.sessions.get(session_id)

    async def seen(self, session_id: bytes, at: datetime) -> None:
        found = self.state.sessions.get(session_id)
        if found is not None:
            s, tokens = found
            self.state.sessions[session_id] = (replace(s, seen_at=max(s.seen_at, at)), tokens)

    async def renew(self, session_id: bytes, tokens: bytes) -> None:
        found = self.state.sessions.get(session_id)
        if found is not None:
            self.state.sessions[session_id] = (found[0], tokens)

    async def relocale(self, session_id: bytes, locale: Locale) -> None:
        found = self.state.sessions.get(session_id)
        if found is not None:
            self.state.sessions[session_id] = (replace(found[0], locale=locale), found[1])

    async def remove(self, session_id: bytes) -> bool:
        return self.state.sessions.pop(session_id, None) is not None

    async def remove_ended(self, idle_since: datetime, created_before: datetime) -> int:
        ended = [
            k for k, (s, _) in self.state.sessions.items() if s.seen_at < idle_since or s.created_at < created_before
        ]
        for k in ended:
            del self.state.sessions[k]
        return len(ended)


class FakeConsoleWork(FakeWork):
    def __init__(self, state: ConsoleState, clock: Clock) -> None:
        super().__init__(clock)
        self.sessions = FakeSessions(state)


class FakeConsole(FakeUnits[ConsoleState, FakeConsoleWork]):
    """The console's units of work in memory."""

    def __init__(self, clock: Clock = utc_now, state: ConsoleState | None = None) -> None:
        super().__init__(state or ConsoleState(), FakeConsoleWork, clock)


@dataclass(frozen=True)
class Call:
    """A call the console made of the API, as ``FakeApi`` saw it."""

    method: str
    path: str
    client_ip: str
    token: str | None
    body: JsonObject | None
    params: Params
    headers: dict[str, str] | None = None


#: What ``FakeApi`` answers a call with: an answer, or a function of the call that gives one
#: (or raises ``ApiUnavailableError``, as the real API does when the gateway cannot be reached).
Reply = Answer | Callable[[Call], Answer]


@dataclass
class FakeApi:
    """The public API in memory (``his.console.ports.PublicApi``): each (method, path) answers
    what a test set for it, 404 otherwise; every call is kept, in order."""

    keys: Json = None
    replies: dict[tuple[str, str], Reply] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    def answer(self, method: Method, path: str, reply: Reply) -> None:
        self.replies[(method, path)] = reply

    async def call(
        self,
        method: Method,
        path: str,
        *,
        client_ip: str,
        token: str | None = None,
        body: JsonObject | None = None,
        params: Params = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        call = Call(method, path, client_ip, token, body, params, headers)
        self.calls.append(call)
        await asyncio.sleep(0)  # a call waits for its answer, as over the network: others run meanwhile
        reply = self.replies.get((method, path), Answer(404, {"title": "Not Found", "status": 404}))
        return reply if isinstance(reply, Answer) else reply(call)

    async def jwks(self) -> Json:
        if self.keys is None:
            raise ApiUnavailableError("no signing keys were set")
        return self.keys


def problem(status: int, detail: str = "", **extra: Json) -> Answer:
    """An error answer as the API gives it (problem+json: ``his.kernel.problems``)."""
    body: JsonObject = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status}
    if detail:
        body["detail"] = detail
    return Answer(status, body | extra)


class Identity:
    """What identity's account routes answer (``his.identity.api.http``), as ``FakeApi`` replies."""

    INVALID_CREDENTIALS = problem(401, "invalid email or password")
    INVALID_CODE = problem(401, "invalid code")
    MFA_REQUIRED = problem(401, "a code from the authenticator app is needed", code="mfa_required")
    ENROLMENT_REQUIRED = problem(
        403, "this role signs in with a second factor: enrol an authenticator app", code="mfa_enrolment_required"
    )
    PASSWORD_CHANGE_REQUIRED = problem(
        403, "the password must be changed before signing in", code="password_change_required"
    )
    WEAK = problem(422, "password must not contain the e-mail address")
    ALREADY_ENROLLED = problem(409, "this account has a second factor; an administrator can reset it")
    NOT_ENROLLING = problem(409, "no enrolment was begun")
    WRONG_CODE = problem(403, "invalid code")
    DEAD_LINK = problem(400, "the link is not valid: it was used, replaced by a newer one, or expired")
    EMAIL_UNVERIFIED = problem(
        403, "the address must be confirmed first, with the link e-mailed to it", code="email_unverified"
    )
    NOT_AN_ADDRESS = problem(422, "email is not a valid address")
    RECOVERY_CODES = tuple(f"k7qm-3xd2-p9w{c}" for c in "abcdefghjk")

    @staticmethod
    def enrolment(email: str, secret: str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP") -> Answer:  # noqa: S107 - a test's
        """An enrolment begun: the secret and its ``otpauth://`` URI, as pyotp writes it."""
        uri = f"otpauth://totp/his:{quote(email)}?secret={secret}&issuer=his"
        return Answer(200, {"secret": secret, "uri": uri})
