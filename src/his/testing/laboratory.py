"""The laboratory's ports in memory (``his.laboratory.ports``)."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal

from his.kernel.clock import Clock, utc_now
from his.laboratory.domain import LabTest, Order, Priority, Result, Status
from his.testing.replica import FakeKnown
from his.testing.units import FakeUnits, FakeWork


def seeded_catalogue() -> dict[str, LabTest]:
    """The catalogue the laboratory's migration seeds (its ``SEED`` rows, prices in TRY)."""
    seed = importlib.import_module("his.laboratory.store.migrations.0002_catalogue_and_orders").SEED

    def dec(v: str | None) -> Decimal | None:
        return None if v is None else Decimal(v)

    return {
        code: LabTest(code, label, specimen, unit, dec(rl), dec(rh), dec(cl), dec(ch), Decimal(price), "TRY")
        for code, label, specimen, unit, rl, rh, cl, ch, price in seed
    }


@dataclass
class LabState:
    catalogue: dict[str, LabTest] = field(default_factory=seeded_catalogue)
    orders: dict[uuid.UUID, Order] = field(default_factory=dict)  # without their results
    results: dict[uuid.UUID, list[tuple[Result, Decimal, str, datetime]]] = field(default_factory=dict)
    known: dict[uuid.UUID, uuid.UUID | None] = field(default_factory=dict)


STAMPED = {
    Status.COLLECTED: "collected_at",
    Status.IN_PROGRESS: "started_at",
    Status.RESULTED: "resulted_at",
    Status.CANCELLED: "cancelled_at",
}


class FakeOrders:
    def __init__(self, state: LabState) -> None:
        self.state = state

    async def catalogue(self) -> dict[str, LabTest]:
        return dict(self.state.catalogue)

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
        if order_id in self.state.orders:
            raise ValueError(f"order {order_id} exists")  # the primary key
        order = Order(order_id, patient_id, ordered_by, priority, Status.PLACED, 1, tuple(tests), at)
        self.state.orders[order_id] = order
        return order

    async def get(self, order_id: uuid.UUID, *, lock: bool = False) -> Order | None:
        return self.state.orders.get(order_id)

    async def set_status(self, order: Order, status: Status, actor: uuid.UUID, at: datetime) -> Order:
        stored = self.state.orders[order.id]
        changed = replace(stored, status=status, version=stored.version + 1, results=order.results)
        stamp = STAMPED[status]
        changed = replace(
            changed,
            collected_at=at if stamp == "collected_at" else changed.collected_at,
            started_at=at if stamp == "started_at" else changed.started_at,
            resulted_at=at if stamp == "resulted_at" else changed.resulted_at,
            cancelled_at=at if stamp == "cancelled_at" else changed.cancelled_at,
        )
        self.state.orders[order.id] = replace(changed, results=())
        return changed

    async def add_results(
        self, order_id: uuid.UUID, results: Sequence[Result], catalogue: dict[str, LabTest], at: datetime
    ) -> None:
        kept = self.state.results.setdefault(order_id, [])
        if {r.code for r, *_ in kept} & {r.code for r in results}:
            raise ValueError("one result per order and test")  # the unique key
        kept += [(r, catalogue[r.code].price, catalogue[r.code].currency, at) for r in results]

    async def with_results(self, orders: Sequence[Order]) -> list[Order]:
        out = []
        for o in orders:
            if o.status is not Status.RESULTED:
                out.append(replace(o, results=()))
                continue
            kept = {r.code: r for r, *_ in self.state.results.get(o.id, [])}
            out.append(replace(o, results=tuple(kept[c] for c in o.tests if c in kept)))
        return out

    async def find(
        self, *, patient_id: uuid.UUID | None, status: Status | None, limit: int, ordered_by: uuid.UUID | None = None
    ) -> list[Order]:
        found = [
            o
            for o in self.state.orders.values()
            if (patient_id is None or o.patient_id == patient_id)
            and (status is None or o.status is status)
            and (ordered_by is None or o.ordered_by == ordered_by)
        ]
        found.sort(key=lambda o: o.id)
        found.sort(key=lambda o: o.placed_at, reverse=True)
        return await self.with_results(found[:limit])


class FakeLabWork(FakeWork):
    def __init__(self, state: LabState, clock: Clock) -> None:
        super().__init__(clock)
        self.orders = FakeOrders(state)
        self.patients = FakeKnown(state.known)


class FakeLab(FakeUnits[LabState, FakeLabWork]):
    """The laboratory's units of work in memory, with the migration's catalogue."""

    def __init__(self, clock: Clock = utc_now, state: LabState | None = None) -> None:
        super().__init__(state or LabState(), FakeLabWork, clock)
