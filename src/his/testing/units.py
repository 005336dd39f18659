"""Units of work in memory: a unit's changes stay when it ends without an error and are undone
when it raises, like a transaction; the events it queued are then "published" (``published``)
and its commit hooks run. Units run one at a time (an ``asyncio.Lock``), as if every row a
unit reads were locked: enough for the use cases' unit tests, which do not race; the races
are the database's to settle and are tested on it.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, NoReturn, TypeVar

import asyncpg

from his.kernel.clock import Clock, utc_now
from his.kernel.events import Envelope, Event


class FakeWork:
    """The ``his.kernel.ports.Work`` of a fake unit: its events and commit hooks, in memory.

    A statement the database would refuse (``refuse``) aborts the unit as it aborts PostgreSQL's
    transaction: every later statement fails (``going_on``), and so does the unit's commit if it
    ends without the error. A read (``FakeUnits.read``) runs no transaction: a refusal there
    aborts nothing."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.events: list[Envelope] = []
        self.committed: list[Callable[[], object]] = []
        #: Whether the unit is a transaction (``uow``), which a refused statement aborts, or reads.
        self.transaction = True
        #: The error that aborted the unit, after which nothing more may run in it.
        self.aborted: Exception | None = None

    def refuse(self, error: Exception) -> NoReturn:
        """Raise ``error`` for a statement the database refuses; it aborts the unit's transaction."""
        if self.transaction:
            self.aborted = error
        raise error

    def going_on(self) -> None:
        """Fail as a statement in an aborted transaction does."""
        if self.aborted is not None:
            raise asyncpg.InFailedSQLTransactionError(
                "current transaction is aborted, commands ignored until end of transaction block"
            )

    def add(self, ev: Event, *, aggregate_id: str | uuid.UUID, aggregate_version: int = 1) -> Envelope:
        env = Envelope.wrap(ev, aggregate_id=aggregate_id, aggregate_version=aggregate_version)
        self.events.append(env)
        return env

    def on_commit(self, fn: Callable[[], object]) -> None:
        self.committed.append(fn)


S = TypeVar("S")
U = TypeVar("U", bound=FakeWork)


class FakeUnits(Generic[S, U]):
    """``his.kernel.ports.Units`` over a state ``S`` (dicts of frozen entities): ``make`` gives
    a unit over the current state and clock."""

    def __init__(self, state: S, make: Callable[[S, Clock], U], clock: Clock = utc_now) -> None:
        self.state, self.make, self.clock = state, make, clock
        #: The events of the committed units, in commit order (the outbox, as the relay sees it).
        self.published: list[Envelope] = []
        self._one_at_a_time = asyncio.Lock()

    def events(self, kind: type[Event]) -> list[Event]:
        """The published events of one type, as their models."""
        return [kind.model_validate(e.data) for e in self.published if e.type == kind.type]

    @asynccontextmanager
    async def uow(self) -> AsyncIterator[U]:
        async with self._one_at_a_time:
            saved = copy.deepcopy(self.state)
            unit = self.make(self.state, self.clock)
            try:
                yield unit
                if unit.aborted is not None:  # COMMIT of an aborted transaction answers ROLLBACK
                    raise asyncpg.InFailedSQLTransactionError(
                        "the transaction was aborted by an earlier error and rolled back (COMMIT answered ROLLBACK)"
                    )
            except BaseException:
                self.state = saved
                raise
            self._committed(unit)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[U]:
        unit = self.make(self.state, self.clock)
        unit.transaction = False
        yield unit
        self._committed(unit)

    def _committed(self, unit: U) -> None:
        self.published.extend(unit.events)
        for fn in unit.committed:
            fn()
