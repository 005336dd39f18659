"""The durability guard reads what writes actually commit with, where they commit.

A session's ``SHOW synchronous_commit`` reads ``on`` while a unit of work that runs
``SET LOCAL synchronous_commit = off`` (or a pool whose sessions start with it) answers clients
before their commit is on disk: a PostgreSQL crash then loses writes they were told were done.
The guard therefore opens a real unit of work (``Database.uow``) and reads the setting inside
it, and reads it again on the connection the grouped writer of access records commits on.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from his.infra import postgres as pg_infra
from his.kernel import safety
from his.kernel.db import Database


async def test_the_unit_of_work_and_the_grouped_writer_commit_durably(db: Database) -> None:
    settings = await db.commit_settings()
    assert set(settings) == {"a unit of work", "the grouped writer of access records"}
    assert await safety.commit_problems(db) == [], settings
    safety.enforce(await safety.commit_problems(db), allow_unsafe=False)  # start-up goes on


@pytest.fixture
async def async_role_db(pg: pg_infra.PostgresLocation, admin_dsn: str, schema: str) -> AsyncIterator[Database]:
    """A database whose login role commits asynchronously (``ALTER ROLE … SET``)."""
    role, password = f"tst_async_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
    await admin.execute(f"ALTER ROLE {role} SET synchronous_commit = off")
    db = Database(pg.url(user=role, password=password), schema=schema, min_size=1, max_size=2)
    await db.open()
    try:
        yield db
    finally:
        await db.close()
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def test_writes_that_commit_asynchronously_are_refused_unless_allowed(async_role_db: Database) -> None:
    problems = await safety.commit_problems(async_role_db)
    assert problems == [
        "PostgreSQL synchronous_commit=off in a unit of work (must be on)",
        "PostgreSQL synchronous_commit=off in the grouped writer of access records (must be on)",
    ]
    with pytest.raises(safety.UnsafeDurabilityError, match="HIS_ALLOW_UNSAFE_DURABILITY"):
        safety.enforce(problems, allow_unsafe=False)
    assert safety.enforce(problems, allow_unsafe=True) == problems
