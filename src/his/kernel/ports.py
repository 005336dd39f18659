"""The ports a service's use cases work through, so that they run on PostgreSQL in the hospital
and on in-memory fakes (``his.testing``) in unit tests.

A use case opens a unit of work from its service's ``Units`` (``async with units.uow() as u``),
works through the repositories the unit carries (``u.orders``), queues the events it publishes
(``u.add``) and asks the unit what time it is (``u.clock()``). A service declares its unit as a
Protocol over ``Work`` with its repositories as attributes; its store implements it over a
connection of the kernel's ``UnitOfWork`` (``his.kernel.db.Unit``), and ``his.testing`` over
dicts. ``his.kernel.db.Database`` and ``UnitOfWork`` are the PostgreSQL side of both ports.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeVar

from his.kernel.clock import Clock
from his.kernel.events import Envelope, Event


class Work(Protocol):
    """One unit of work as a use case sees it: the events it publishes (written to the outbox
    with it), what runs once it commits, and the service's clock."""

    @property
    def clock(self) -> Clock: ...

    def add(self, ev: Event, *, aggregate_id: str | uuid.UUID, aggregate_version: int = 1) -> Envelope: ...

    def on_commit(self, fn: Callable[[], object]) -> None: ...


W_co = TypeVar("W_co", bound=Work, covariant=True)


class Units(Protocol[W_co]):
    """Opens a service's units of work. ``uow()`` is one transaction: its changes and events
    commit together or not at all. ``read()`` reads, and commits the events it queued (the
    records of what was read) before it ends; it writes nothing else."""

    def uow(self) -> AbstractAsyncContextManager[W_co]: ...

    def read(self) -> AbstractAsyncContextManager[W_co]: ...
