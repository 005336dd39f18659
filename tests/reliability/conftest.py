"""Fixtures of the reliability suite, on top of the real servers of tests/conftest.py."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from his.kernel.db import Database
from tests.reliability.harness import EFFECT_DDL, Ledger, Procs


@pytest.fixture
async def effects(db: Database) -> Database:
    """``db`` with the ``effect`` table the consumers write to."""
    await db.pool.execute(EFFECT_DDL)
    return db


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Child processes of the test: each still running is stopped (by its pid) at teardown."""
    logdir = tmp_path / "procs"
    logdir.mkdir()
    manager = Procs(logdir)
    try:
        yield manager
    finally:
        manager.stop_all()


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A seeded random source; the seed is printed, and ``HIS_TEST_SEED`` replays a run."""
    seed = int(os.environ.get("HIS_TEST_SEED") or random.SystemRandom().randrange(1 << 30))
    print(f"[seed] {request.node.name}: HIS_TEST_SEED={seed}")
    return random.Random(seed)
