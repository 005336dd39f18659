"""The unit of work on real PostgreSQL: its outbox rows travel with its COMMIT, all or nothing."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
import pytest

from his.kernel.db import Database, retry_aborted, savepoint
from his.kernel.events import Envelope
from tests.support.events import ThingHappened


class Boom(Exception):
    pass


async def outbox(db: Database) -> list[asyncpg.Record]:
    return await db.pool.fetch("SELECT event_id, subject, payload, traceparent FROM outbox ORDER BY id")


async def test_state_and_outbox_rows_commit_together_byte_for_byte(db: Database) -> None:
    await db.pool.execute("CREATE TABLE thing (id uuid PRIMARY KEY)")
    tid = uuid.uuid4()
    odd = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'); DROP TABLE thing; --"
    async with db.uow() as uow:
        await uow.conn.execute("INSERT INTO thing VALUES ($1)", tid)
        first = uow.add(ThingHappened(thing_id=tid, seq=1), aggregate_id=tid)
        second = Envelope.wrap(ThingHappened(thing_id=tid, seq=2), aggregate_id=tid, traceparent=odd)
        uow.events.append(second)
    rows = await outbox(db)
    assert [r["event_id"] for r in rows] == [first.id, second.id]
    assert [bytes(r["payload"]) for r in rows] == [first.to_json(), second.to_json()]
    assert [r["subject"] for r in rows] == [first.type, second.type]
    assert rows[1]["traceparent"] == odd  # stored as text, never run
    assert await db.pool.fetchval("SELECT count(*) FROM thing") == 1


async def test_an_error_rolls_back_the_state_and_its_events(db: Database) -> None:
    await db.pool.execute("CREATE TABLE thing (id uuid PRIMARY KEY)")
    tid = uuid.uuid4()
    with pytest.raises(Boom):
        async with db.uow() as uow:
            await uow.conn.execute("INSERT INTO thing VALUES ($1)", tid)
            uow.add(ThingHappened(thing_id=tid, seq=1), aggregate_id=tid)
            raise Boom
    assert await outbox(db) == []
    assert await db.pool.fetchval("SELECT count(*) FROM thing") == 0
    async with db.uow() as uow:  # the pooled connection is usable again
        await uow.conn.execute("INSERT INTO thing VALUES ($1)", tid)
    assert await db.pool.fetchval("SELECT count(*) FROM thing") == 1


async def test_a_failing_outbox_insert_commits_nothing(db: Database) -> None:
    await db.pool.execute("CREATE TABLE thing (id uuid PRIMARY KEY)")
    tid = uuid.uuid4()
    async with db.uow() as uow:
        env = uow.add(ThingHappened(thing_id=tid, seq=1), aggregate_id=tid)
    with pytest.raises(asyncpg.UniqueViolationError):
        async with db.uow() as uow:
            await uow.conn.execute("INSERT INTO thing VALUES ($1)", tid)
            uow.events.append(env)  # the same event id again: its INSERT fails, so the COMMIT never runs
    assert await db.pool.fetchval("SELECT count(*) FROM thing") == 0
    assert len(await outbox(db)) == 1


async def test_a_failed_savepoint_keeps_the_rest_of_the_unit_of_work(db: Database) -> None:
    await db.pool.execute("CREATE TABLE thing (id uuid PRIMARY KEY)")
    kept, dropped = uuid.uuid4(), uuid.uuid4()
    async with db.uow() as uow:
        await uow.conn.execute("INSERT INTO thing VALUES ($1)", kept)
        uow.add(ThingHappened(thing_id=kept, seq=1), aggregate_id=kept)
        with pytest.raises(asyncpg.UniqueViolationError):
            async with uow.savepoint():
                uow.add(ThingHappened(thing_id=dropped, seq=2), aggregate_id=dropped)
                await uow.conn.execute("INSERT INTO thing VALUES ($1)", dropped)
                await uow.conn.execute("INSERT INTO thing VALUES ($1)", kept)
        async with savepoint(uow.conn):  # nested ones release on success
            await uow.conn.execute("INSERT INTO thing VALUES ($1)", dropped)
    assert await db.pool.fetchval("SELECT count(*) FROM thing") == 2
    assert [r["event_id"] for r in await outbox(db)] == [uow.events[0].id]


async def test_a_transaction_aborted_by_a_deadlock_runs_again_and_both_take_effect(db: Database) -> None:
    """Two transactions lock two rows in opposite orders: PostgreSQL aborts one as a deadlock
    victim, ``retry_aborted`` runs it again, and both changes are made exactly once."""
    await db.pool.execute("CREATE TABLE counter (id int PRIMARY KEY, n int NOT NULL)")
    await db.pool.execute("INSERT INTO counter VALUES (1, 0), (2, 0)")
    first_locked = [asyncio.Event(), asyncio.Event()]
    attempts = [0, 0]

    async def transfer(me: int) -> None:
        attempts[me] += 1
        mine, theirs = (1, 2) if me == 0 else (2, 1)
        async with db.uow() as uow:
            await uow.conn.execute("UPDATE counter SET n = n + 1 WHERE id = $1", mine)
            if attempts[me] == 1:  # the first time, hold one row until the other holds the other
                first_locked[me].set()
                await first_locked[1 - me].wait()
            await uow.conn.execute("UPDATE counter SET n = n + 10 WHERE id = $1", theirs)

    await asyncio.gather(retry_aborted(lambda: transfer(0)), retry_aborted(lambda: transfer(1)))
    assert sorted(attempts) == [1, 2]  # one was the deadlock's victim and ran again
    rows = await db.pool.fetch("SELECT id, n FROM counter ORDER BY id")
    assert [(r["id"], r["n"]) for r in rows] == [(1, 11), (2, 11)]


async def test_a_transaction_aborted_every_time_gives_up_after_its_tries(db: Database) -> None:
    calls = 0

    async def always_aborted() -> None:
        nonlocal calls
        calls += 1
        async with db.uow() as uow:
            await uow.conn.execute("SELECT 1")
            raise asyncpg.SerializationError("could not serialize access due to concurrent update")

    with pytest.raises(asyncpg.SerializationError):
        await retry_aborted(always_aborted, tries=3)
    assert calls == 3


async def test_a_transaction_postgresql_aborted_does_not_pass_for_committed(db: Database) -> None:
    # Code that catches a statement's error without a savepoint leaves the transaction aborted;
    # PostgreSQL then answers COMMIT with ROLLBACK, and nothing of the transaction remains.
    await db.pool.execute("CREATE TABLE thing (id uuid PRIMARY KEY)")
    tid = uuid.uuid4()
    with pytest.raises(asyncpg.InFailedSQLTransactionError):
        async with db.uow() as uow:
            await uow.conn.execute("INSERT INTO thing VALUES ($1)", tid)
            with contextlib.suppress(asyncpg.UniqueViolationError):
                await uow.conn.execute("INSERT INTO thing VALUES ($1)", tid)
    assert await db.pool.fetchval("SELECT count(*) FROM thing") == 0


async def test_a_savepoint_whose_block_swallowed_an_error_is_rolled_back(db: Database) -> None:
    await db.pool.execute("CREATE TABLE thing (id uuid PRIMARY KEY)")
    kept, dropped = uuid.uuid4(), uuid.uuid4()
    async with db.uow() as uow:
        await uow.conn.execute("INSERT INTO thing VALUES ($1)", kept)
        with pytest.raises(asyncpg.InFailedSQLTransactionError):
            async with uow.savepoint():
                await uow.conn.execute("INSERT INTO thing VALUES ($1)", dropped)
                with contextlib.suppress(asyncpg.UniqueViolationError):
                    await uow.conn.execute("INSERT INTO thing VALUES ($1)", kept)
    assert [r["id"] for r in await db.pool.fetch("SELECT id FROM thing")] == [kept]
