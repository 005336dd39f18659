"""The console's sessions (``his.console.sessions.SessionBook``) over the in-memory store, on
hard dates: the server keeps a cookie's digest and never the cookie, the tokens encrypted and
bound to their row; a session ends 30 minutes after its last request or 12 hours after sign-in,
whatever the wall clock does that night (the day the clocks go back included); sign-out ends it
and gives its tokens back to be revoked. The store's contract with PostgreSQL is
``tests/integration/test_console_contract.py``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

import pytest

from his.console.domain import IDLE, LIFETIME, Locale, Tokens, digest
from his.console.sessions import SessionBook
from his.kernel.clock import FakeClock
from his.kernel.crypto import FieldCipher
from his.testing.console import FakeConsole
from tests.support.calendar import HARD_DATES, HardDate

TOKENS = Tokens(access="access.token.value", refresh="refresh-token-value")
USER = uuid.uuid4()


@dataclass
class Book:
    book: SessionBook
    fake: FakeConsole
    clock: FakeClock

    async def open(self) -> str:
        cookie, _ = await self.book.open(USER, ("RECEPTIONIST",), TOKENS, Locale.TR)
        return cookie


@pytest.fixture(params=[HARD_DATES[0], HARD_DATES[4]], ids=str)
def book(request: pytest.FixtureRequest) -> Book:
    """Signed in half an hour after local midnight of new year's day, or of the day the clocks
    go back (an hour of the night happens twice)."""
    hard: HardDate = request.param
    clock = hard.clock(0, 30)
    fake = FakeConsole(clock)
    return Book(SessionBook(fake, FieldCipher([os.urandom(32)]), clock), fake, clock)


async def test_the_server_keeps_the_cookies_digest_and_the_tokens_sealed(book: Book) -> None:
    cookie = await book.open()
    assert len(cookie) >= 43  # 256 bits
    [(session_id, (session, sealed))] = book.fake.state.sessions.items()
    assert session_id == digest(cookie) != cookie.encode()
    assert TOKENS.access.encode() not in sealed and TOKENS.refresh.encode() not in sealed
    assert session.user_id == USER and session.roles == ("RECEPTIONIST",) and session.locale == Locale.TR
    live = await book.book.find(cookie)
    assert live is not None and live.tokens == TOKENS and live.session.id == session_id
    assert await book.book.find(cookie + "x") is None
    assert await book.book.find(None) is None and await book.book.find("") is None


async def test_two_sign_ins_are_two_sessions_with_their_own_csrf_tokens(book: Book) -> None:
    first, second = await book.open(), await book.open()
    a, b = await book.book.find(first), await book.book.find(second)
    assert a is not None and b is not None and first != second
    assert a.session.csrf != b.session.csrf
    assert a.session.accepts(a.session.csrf) and not a.session.accepts(b.session.csrf)
    assert not a.session.accepts(None) and not a.session.accepts("")


async def test_a_session_ends_thirty_minutes_after_its_last_request(book: Book) -> None:
    cookie = await book.open()
    book.clock.advance(IDLE - timedelta(seconds=1))
    assert await book.book.find(cookie) is not None  # a request: the half hour starts again
    book.clock.advance(IDLE - timedelta(seconds=1))
    assert await book.book.find(cookie) is not None
    book.clock.advance(IDLE)
    assert await book.book.find(cookie) is None
    assert book.fake.state.sessions == {}  # an ended session found is removed


async def test_a_session_ends_twelve_hours_after_sign_in_however_busy(book: Book) -> None:
    cookie = await book.open()
    elapsed = timedelta(0)
    while elapsed + timedelta(minutes=20) < LIFETIME:
        book.clock.advance(timedelta(minutes=20))
        elapsed += timedelta(minutes=20)
        assert await book.book.find(cookie) is not None, elapsed
    book.clock.advance(LIFETIME - elapsed)
    assert await book.book.find(cookie) is None


async def test_signing_out_ends_the_session_and_gives_its_tokens_to_revoke(book: Book) -> None:
    cookie = await book.open()
    assert await book.book.end(cookie) == TOKENS
    assert await book.book.find(cookie) is None
    assert await book.book.end(cookie) is None and await book.book.end(None) is None


async def test_renewed_tokens_replace_the_old_ones(book: Book) -> None:
    cookie = await book.open()
    live = await book.book.find(cookie)
    assert live is not None
    fresh = Tokens(access="new.access", refresh="new-refresh")
    await book.book.renew(live.session, fresh)
    again = await book.book.find(cookie)
    assert again is not None and again.tokens == fresh


async def test_sealed_tokens_do_not_open_under_another_session(book: Book) -> None:
    mine, theirs = await book.open(), await book.open()
    sessions = book.fake.state.sessions
    their_session, their_tokens = sessions[digest(theirs)]
    my_session, _ = sessions[digest(mine)]
    sessions[digest(mine)] = (my_session, their_tokens)  # a ciphertext moved onto another row
    assert await book.book.find(mine) is None
    assert digest(mine) not in sessions  # the session is ended, not answered with a 500
    assert sessions[digest(theirs)] == (their_session, their_tokens)
    assert (await book.book.find(theirs)) is not None


async def test_the_sweep_removes_only_ended_sessions(book: Book) -> None:
    old = await book.open()
    book.clock.advance(IDLE + timedelta(minutes=1))
    fresh = await book.open()
    assert await book.book.sweep() == 1
    assert await book.book.find(old) is None and await book.book.find(fresh) is not None


async def test_a_session_is_never_seen_before_it_began(book: Book) -> None:
    cookie = await book.open()
    [(session_id, (session, _))] = book.fake.state.sessions.items()
    async with book.fake.uow() as u:
        await u.sessions.seen(session_id, session.created_at - timedelta(hours=1))
    kept, _ = book.fake.state.sessions[session_id]
    assert kept.seen_at == session.created_at
    assert replace(kept, seen_at=session.seen_at) == session and cookie


async def test_the_last_request_is_written_at_most_once_a_minute(book: Book) -> None:
    cookie = await book.open()
    (session, _), *_ = book.fake.state.sessions.values()
    book.clock.advance(timedelta(seconds=59))
    assert await book.book.find(cookie) is not None
    assert next(iter(book.fake.state.sessions.values()))[0].seen_at == session.seen_at  # not written
    book.clock.advance(timedelta(seconds=1))
    assert await book.book.find(cookie) is not None
    assert next(iter(book.fake.state.sessions.values()))[0].seen_at == session.seen_at + timedelta(minutes=1)
