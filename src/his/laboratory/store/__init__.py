"""Tables and queries of the laboratory service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from his.clients.replica import KnownPatients
from his.kernel.db import Connection, Record, Unit, UnitOfWork, UnitsOn
from his.laboratory.domain import Flag, LabTest, Order, Priority, Result, Status

ORDER_COLUMNS = """id, patient_id, ordered_by, priority, status, version, placed_at, collected_at, started_at,
                   resulted_at, cancelled_at, updated_at"""
#: The column that records when (and by whom) an order reached each state.
STAMPS: dict[Status, str] = {
    Status.COLLECTED: "collected",
    Status.IN_PROGRESS: "started",
    Status.RESULTED: "resulted",
    Status.CANCELLED: "cancelled",
}


def _order(row: Record, tests: Sequence[str], results: Sequence[Result] = ()) -> Order:
    return Order(
        id=row["id"],
        patient_id=row["patient_id"],
        ordered_by=row["ordered_by"],
        priority=Priority(row["priority"]),
        status=Status(row["status"]),
        version=row["version"],
        tests=tuple(tests),
        placed_at=row["placed_at"],
        collected_at=row["collected_at"],
        started_at=row["started_at"],
        resulted_at=row["resulted_at"],
        cancelled_at=row["cancelled_at"],
        results=tuple(results),
    )


class PgOrders:
    """The laboratory's ``Orders`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def catalogue(self) -> dict[str, LabTest]:
        rows = await self.conn.fetch(
            """SELECT code, label, specimen, unit, reference_low, reference_high, critical_low, critical_high, price,
                      currency FROM lab_test WHERE active ORDER BY code"""
        )
        return {r["code"]: LabTest(**dict(r)) for r in rows}

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
        saved = await self.conn.fetchrow(
            f"""INSERT INTO lab_order (id, patient_id, ordered_by, priority, status, placed_at, updated_at)
                VALUES ($1, $2, $3, $4, 'placed', $5, $5) RETURNING {ORDER_COLUMNS}""",
            order_id,
            patient_id,
            ordered_by,
            priority.value,
            at,
        )
        await self.conn.execute(
            """INSERT INTO lab_order_test (order_id, code, position)
               SELECT $1, code, pos FROM unnest($2::text[]) WITH ORDINALITY AS t (code, pos)""",
            order_id,
            list(tests),
        )
        assert saved is not None
        return _order(saved, tests)

    async def get(self, order_id: uuid.UUID, *, lock: bool = False) -> Order | None:
        """The order with its tests (not its results: ``with_results``); ``lock`` holds its row until
        the transaction ends."""
        row = await self.conn.fetchrow(
            f"SELECT {ORDER_COLUMNS} FROM lab_order WHERE id = $1{' FOR UPDATE' if lock else ''}", order_id
        )
        if row is None:
            return None
        tests = await self.conn.fetch("SELECT code FROM lab_order_test WHERE order_id = $1 ORDER BY position", order_id)
        return _order(row, [t["code"] for t in tests])

    async def set_status(self, order: Order, status: Status, actor: uuid.UUID, at: datetime) -> Order:
        """Move an order to ``status``, stamping when and by whom."""
        stamp = STAMPS[status]
        row = await self.conn.fetchrow(
            f"""UPDATE lab_order SET status = $2, version = version + 1, updated_at = $4,
                    {stamp}_at = $4, {stamp}_by = $3
                WHERE id = $1 RETURNING {ORDER_COLUMNS}""",
            order.id,
            status.value,
            actor,
            at,
        )
        assert row is not None
        return _order(row, order.tests, order.results)

    async def add_results(
        self, order_id: uuid.UUID, results: Sequence[Result], catalogue: dict[str, LabTest], at: datetime
    ) -> None:
        await self.conn.executemany(
            """INSERT INTO lab_result (order_id, code, value, unit, reference_low, reference_high, flag, price,
                                       currency, resulted_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
            [
                (
                    order_id,
                    r.code,
                    r.value,
                    r.unit,
                    r.reference_low,
                    r.reference_high,
                    r.flag.value,
                    catalogue[r.code].price,
                    catalogue[r.code].currency,
                    at,
                )
                for r in results
            ],
        )

    async def results_of(self, order_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Result]]:
        rows = await self.conn.fetch(
            """SELECT r.order_id, r.code, r.value, r.unit, r.reference_low, r.reference_high, r.flag
               FROM lab_result r JOIN lab_order_test t USING (order_id, code)
               WHERE r.order_id = ANY($1::uuid[]) ORDER BY r.order_id, t.position""",
            list(order_ids),
        )
        out: dict[uuid.UUID, list[Result]] = {}
        for r in rows:
            out.setdefault(r["order_id"], []).append(
                Result(r["code"], r["value"], r["unit"], r["reference_low"], r["reference_high"], Flag(r["flag"]))
            )
        return out

    async def with_results(self, orders: Sequence[Order]) -> list[Order]:
        """The orders with the results of those resulted."""
        results = await self.results_of([o.id for o in orders if o.status is Status.RESULTED])
        return [replace(o, results=tuple(results.get(o.id, ()))) for o in orders]

    async def find(
        self,
        *,
        patient_id: uuid.UUID | None,
        status: Status | None,
        limit: int,
        ordered_by: uuid.UUID | None = None,
    ) -> list[Order]:
        """Orders, newest first, with their results."""
        rows = await self.conn.fetch(
            f"""SELECT {ORDER_COLUMNS}, ARRAY(SELECT code FROM lab_order_test t WHERE t.order_id = o.id
                                              ORDER BY t.position) AS tests
                FROM lab_order o
                WHERE ($1::uuid IS NULL OR patient_id = $1) AND ($2::text IS NULL OR status = $2)
                  AND ($4::uuid IS NULL OR ordered_by = $4)
                ORDER BY placed_at DESC, id LIMIT $3""",
            patient_id,
            status.value if status else None,
            limit,
            ordered_by,
        )
        return await self.with_results([_order(r, r["tests"]) for r in rows])


class LabUnit(Unit):
    """A unit of work of the laboratory on PostgreSQL."""

    def __init__(self, uow: UnitOfWork) -> None:
        super().__init__(uow)
        self.orders = PgOrders(self.conn)
        self.patients = KnownPatients(self.conn)


class LabStore(UnitsOn[LabUnit]):
    """The laboratory's units of work (``his.laboratory.ports.LabUnits``) on its database."""

    def unit(self, uow: UnitOfWork) -> LabUnit:
        return LabUnit(uow)
