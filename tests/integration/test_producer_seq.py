"""The kernel numbers access records without a gap as it commits them (ADR 0028). Real PostgreSQL.

A unit of work and the group commit of audited reads both take the numbers from the schema's
counter in the statement that writes the outbox rows: a rolled-back transaction takes none, a
batch of reads one per read, and without the counter's row nothing is written at all.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from his.events.audit import PatientsRecordAccessed, PatientsRecordsAccessed, batch_accesses, record_access
from his.kernel.db import Database, producer_seq_sql
from his.kernel.events import Envelope
from his.kernel.ports import Work
from his.kernel.security import Principal

WHO = Principal(subject=str(uuid.uuid4()), roles=frozenset({"NURSE"}), token_id="t", expires_at=0.0)


@pytest.fixture
async def numbered(admin_dsn: str, schema: str) -> Database:
    conn = await asyncpg.connect(admin_dsn, server_settings={"search_path": schema})
    try:
        for stmt in producer_seq_sql():
            await conn.execute(stmt)
    finally:
        await conn.close()
    db = Database(admin_dsn, schema=schema, min_size=1, max_size=8, combine_reads=batch_accesses)
    await db.open()
    return db


def _access(uow: Work) -> None:
    record_access(
        uow,
        PatientsRecordAccessed,
        WHO,
        patient_id=uuid.uuid4(),
        action="read",
        resource="patient",
        purpose="care",
    )


async def _numbers(db: Database) -> list[int]:
    """Every access's number, as the outbox holds them, in outbox order (a batch's entries in order)."""
    found: list[int] = []
    for (payload,) in await db.pool.fetch("SELECT payload FROM outbox ORDER BY id"):
        env = Envelope.from_json(bytes(payload))
        first = env.data["producer_seq"]
        assert isinstance(first, int), env.data
        if env.type == PatientsRecordsAccessed.type:
            accesses = env.data["accesses"]
            assert isinstance(accesses, list)
            found += range(first, first + len(accesses))
        else:
            found.append(first)
    return found


async def test_writes_and_grouped_reads_take_consecutive_numbers_and_a_rollback_takes_none(numbered: Database) -> None:
    db = numbered
    try:
        async with db.uow() as uow:
            _access(uow)
            _access(uow)  # two in one transaction
        with pytest.raises(RuntimeError):
            async with db.uow() as uow:
                _access(uow)
                raise RuntimeError("rolled back")

        async def read() -> None:
            async with db.read() as uow:
                _access(uow)

        await asyncio.gather(*(read() for _ in range(30)))
        async with db.uow() as uow:
            _access(uow)
        assert await _numbers(db) == list(range(1, 34))
        assert await db.pool.fetchval("SELECT last FROM producer_seq") == 33
        batches = await db.pool.fetchval("SELECT count(*) FROM outbox WHERE subject = $1", PatientsRecordsAccessed.type)
        assert batches >= 1
    finally:
        await db.close()


async def test_without_the_counters_row_nothing_is_written(numbered: Database) -> None:
    db = numbered
    try:
        await db.pool.execute("DELETE FROM producer_seq")
        with pytest.raises(asyncpg.NotNullViolationError):
            async with db.uow() as uow:
                _access(uow)
        with pytest.raises(RuntimeError, match="no producer_seq row"):
            async with db.read() as uow:
                _access(uow)
        assert await db.pool.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await db.close()
