"""What the laboratory's use cases work through: its orders and its copy of the patient
directory, inside a unit of work (``his.kernel.ports``). The store implements them on
PostgreSQL (``his.laboratory.store``); ``his.testing.laboratory`` in memory, for unit tests.
Both pass the same contract tests (``tests/integration/test_laboratory_contract.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from his.clients.replica import Known
from his.kernel.ports import Units, Work
from his.laboratory.domain import LabTest, Order, Priority, Result, Status


class Orders(Protocol):
    """The test catalogue and the orders with their results."""

    async def catalogue(self) -> dict[str, LabTest]:
        """The active tests, by code."""
        ...

    async def add(
        self,
        *,
        order_id: uuid.UUID,
        patient_id: uuid.UUID,
        ordered_by: uuid.UUID,
        priority: Priority,
        tests: Sequence[str],
        at: datetime,
    ) -> Order:
        """A new order, placed ``at`` (version 1)."""
        ...

    async def get(self, order_id: uuid.UUID, *, lock: bool = False) -> Order | None:
        """The order with its tests, not its results; ``lock`` holds it until the unit ends."""
        ...

    async def set_status(self, order: Order, status: Status, actor: uuid.UUID, at: datetime) -> Order:
        """The order moved to ``status`` (its version one higher), stamped with when and by whom."""
        ...

    async def add_results(
        self, order_id: uuid.UUID, results: Sequence[Result], catalogue: dict[str, LabTest], at: datetime
    ) -> None:
        """Store an order's results, each priced from the catalogue."""
        ...

    async def with_results(self, orders: Sequence[Order]) -> list[Order]:
        """The orders with the results of those resulted, in the order of the tests."""
        ...

    async def find(
        self, *, patient_id: uuid.UUID | None, status: Status | None, limit: int, ordered_by: uuid.UUID | None = None
    ) -> list[Order]:
        """Orders, newest first (ties by id), with their results."""
        ...


class LabWork(Work, Protocol):
    """A unit of work of the laboratory."""

    @property
    def orders(self) -> Orders: ...

    @property
    def patients(self) -> Known: ...


#: Where the laboratory's units of work come from.
LabUnits = Units[LabWork]
