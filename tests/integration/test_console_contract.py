"""One contract for the console's sessions, run against PostgreSQL (``his.console.store``) and
the in-memory fake (``his.testing.console``) alike: what the sessions' unit tests assume of the
fake holds of the database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from his.console.domain import Locale, Session, digest, new_cookie, new_csrf
from his.console.ports import ConsoleUnits
from his.console.store import ConsoleStore
from his.kernel import migrations
from his.kernel.clock import FakeClock
from his.kernel.db import Database
from his.testing.console import FakeConsole

#: Half a minute before the new year: the moment every unit of work here says it is.
NOW = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC)


def a_session(
    at: datetime = NOW, *, id: bytes | None = None, csrf: str | None = None, seen_at: datetime | None = None
) -> Session:
    return Session(
        id=digest(new_cookie()) if id is None else id,
        user_id=uuid.uuid4(),
        roles=("DOCTOR", "NURSE"),
        csrf=new_csrf() if csrf is None else csrf,
        locale=Locale.EN,
        created_at=at,
        seen_at=at if seen_at is None else seen_at,
    )


@pytest.fixture(params=["memory", "postgres"])
async def units(request: pytest.FixtureRequest, admin_dsn: str) -> AsyncIterator[ConsoleUnits]:
    clock = FakeClock(NOW)
    if request.param == "memory":
        yield FakeConsole(clock)
        return
    dsn = await migrations.provision(admin_dsn, "console", "pw-console-contract")
    await migrations.upgrade(admin_dsn, "console")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("TRUNCATE console.session")
    finally:
        await conn.close()
    db = Database(dsn, schema="console", max_size=2, clock=clock)
    await db.open()
    try:
        yield ConsoleStore(db)
    finally:
        await db.close()


async def test_a_session_is_kept_and_read_back_as_it_was(units: ConsoleUnits) -> None:
    session = a_session()
    async with units.uow() as u:
        await u.sessions.add(session, b"sealed tokens")
    async with units.read() as u:
        assert await u.sessions.get(session.id) == (session, b"sealed tokens")
        assert await u.sessions.get(digest(new_cookie())) is None


async def test_one_row_per_id_and_the_tables_checks(units: ConsoleUnits) -> None:
    session = a_session()
    async with units.uow() as u:
        await u.sessions.add(session, b"t")
    with pytest.raises(asyncpg.UniqueViolationError):
        async with units.uow() as u:
            await u.sessions.add(session, b"t")
    for bad in (
        a_session(id=b"short"),
        a_session(csrf="short"),
        a_session(seen_at=NOW - timedelta(seconds=1)),
    ):
        with pytest.raises(asyncpg.CheckViolationError):
            async with units.uow() as u:
                await u.sessions.add(bad, b"t")


async def test_the_last_request_never_moves_back_and_tokens_are_replaced(units: ConsoleUnits) -> None:
    session = a_session()
    async with units.uow() as u:
        await u.sessions.add(session, b"old")
        await u.sessions.seen(session.id, NOW + timedelta(minutes=5))
        await u.sessions.seen(session.id, NOW + timedelta(minutes=1))
        await u.sessions.renew(session.id, b"new")
        await u.sessions.relocale(session.id, Locale.TR)
        await u.sessions.seen(digest(new_cookie()), NOW)  # no such session: nothing changes
    async with units.read() as u:
        found = await u.sessions.get(session.id)
    assert found is not None
    assert found[0].seen_at == NOW + timedelta(minutes=5) and found[1] == b"new"
    assert found[0].locale is Locale.TR and found[0].roles == session.roles


async def test_removing_ends_one_session_and_the_sweep_every_ended_one(units: ConsoleUnits) -> None:
    idle = a_session(at=NOW - timedelta(hours=1))
    old = a_session(at=NOW - timedelta(hours=13), seen_at=NOW - timedelta(minutes=1))
    live = a_session()
    gone = a_session()
    async with units.uow() as u:
        for s in (idle, old, live, gone):
            await u.sessions.add(s, b"t")
        assert await u.sessions.remove(gone.id) is True
        assert await u.sessions.remove(gone.id) is False
    async with units.uow() as u:
        ended = await u.sessions.remove_ended(NOW - timedelta(minutes=30), NOW - timedelta(hours=12))
    assert ended == 2
    async with units.read() as u:
        assert [await u.sessions.get(s.id) is not None for s in (idle, old, live)] == [False, False, True]


async def test_a_unit_that_fails_keeps_nothing(units: ConsoleUnits) -> None:
    session = a_session()
    with pytest.raises(RuntimeError):
        async with units.uow() as u:
            await u.sessions.add(session, b"t")
            raise RuntimeError("the request failed after")
    async with units.read() as u:
        assert await u.sessions.get(session.id) is None
