"""Audited reads (``Database.read``): records of concurrent reads commit together, before any
reader goes on, and a read whose record cannot be committed fails. Real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import asyncpg
import pytest

from his.kernel.db import Database
from tests.support.events import ThingHappened


async def audited_read(db: Database) -> uuid.UUID:
    """A read that leaves a record; returns the record's event id once ``read`` let it go on."""
    async with db.read() as uow:
        await uow.conn.fetchval("SELECT count(*) FROM outbox")
        tid = uuid.uuid4()
        env = uow.add(ThingHappened(thing_id=tid, seq=0), aggregate_id=tid)
    return env.id


async def committed(db: Database, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    rows = await db.pool.fetch("SELECT event_id FROM outbox WHERE event_id = ANY($1::uuid[])", ids)
    return {r["event_id"] for r in rows}


async def test_a_read_goes_on_only_after_its_record_is_committed(db: Database) -> None:
    event_id = await audited_read(db)
    assert await committed(db, [event_id]) == {event_id}


async def test_records_of_concurrent_reads_share_transactions(db: Database) -> None:
    ids = await asyncio.gather(*(audited_read(db) for _ in range(200)))
    assert await committed(db, ids) == set(ids)
    # xmin is the transaction that inserted a row: far fewer commits than reads
    transactions = await db.pool.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM outbox WHERE event_id = ANY($1::uuid[])", ids
    )
    assert 1 <= transactions < 50


async def test_a_read_whose_record_cannot_be_committed_fails(db: Database) -> None:
    taken = await audited_read(db)
    with pytest.raises(asyncpg.UniqueViolationError):
        async with db.read() as uow:
            await uow.conn.fetchval("SELECT 1")
            tid = uuid.uuid4()
            env = uow.add(ThingHappened(thing_id=tid, seq=0), aggregate_id=tid)
            uow.events[-1] = dataclasses.replace(env, id=taken)  # a record that cannot be inserted
    # the next reads are not affected by the failed batch
    assert await committed(db, [await audited_read(db)])


async def test_a_read_cannot_write(db: Database) -> None:
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        async with db.read() as uow:
            await uow.conn.execute("DELETE FROM outbox")


async def test_a_cancelled_reader_does_not_stop_the_others(db: Database) -> None:
    tasks = [asyncio.create_task(audited_read(db)) for _ in range(20)]
    await asyncio.sleep(0)  # every reader has started and waits on the database
    tasks[3].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[3], asyncio.CancelledError)  # the cancellation landed mid-read
    ids = [d for d in done if isinstance(d, uuid.UUID)]
    assert len(ids) == 19
    assert await committed(db, ids) == set(ids)
