"""Tables and queries of the laboratory service."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from his.kernel.db import Connection
from his.laboratory.domain import LabTest, Result, Status

ORDER_COLUMNS = """id, patient_id, ordered_by, priority, status, version, placed_at, collected_at, started_at,
                   resulted_at, cancelled_at, updated_at"""
#: The column that records when (and by whom) an order reached each state.
STAMPS: dict[Status, str] = {
    Status.COLLECTED: "collected",
    Status.IN_PROGRESS: "started",
    Status.RESULTED: "resulted",
    Status.CANCELLED: "cancelled",
}


async def catalogue(conn: Connection) -> dict[str, LabTest]:
    rows = await conn.fetch(
        """SELECT code, label, specimen, unit, reference_low, reference_high, critical_low, critical_high, price,
                  currency FROM lab_test WHERE active ORDER BY code"""
    )
    return {r["code"]: LabTest(**dict(r)) for r in rows}


async def insert_order(conn: Connection, row: dict[str, Any], tests: Sequence[str]) -> dict[str, Any]:
    saved = await conn.fetchrow(
        f"""INSERT INTO lab_order (id, patient_id, ordered_by, priority, status)
            VALUES ($1, $2, $3, $4, 'placed') RETURNING {ORDER_COLUMNS}""",
        row["id"],
        row["patient_id"],
        row["ordered_by"],
        row["priority"],
    )
    await conn.execute(
        """INSERT INTO lab_order_test (order_id, code, position)
           SELECT $1, code, pos FROM unnest($2::text[]) WITH ORDINALITY AS t (code, pos)""",
        row["id"],
        list(tests),
    )
    assert saved is not None
    return dict(saved) | {"tests": list(tests)}


async def get_order(conn: Connection, order_id: uuid.UUID, *, lock: bool = False) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {ORDER_COLUMNS} FROM lab_order WHERE id = $1{' FOR UPDATE' if lock else ''}", order_id
    )
    if row is None:
        return None
    tests = await conn.fetch("SELECT code FROM lab_order_test WHERE order_id = $1 ORDER BY position", order_id)
    return dict(row) | {"tests": [t["code"] for t in tests]}


async def set_status(
    conn: Connection, order_id: uuid.UUID, status: Status, actor: uuid.UUID, at: datetime
) -> dict[str, Any]:
    """Move an order to ``status``, stamping when and by whom; returns the order's columns."""
    stamp = STAMPS[status]
    row = await conn.fetchrow(
        f"""UPDATE lab_order SET status = $2, version = version + 1, updated_at = $4,
                {stamp}_at = $4, {stamp}_by = $3
            WHERE id = $1 RETURNING {ORDER_COLUMNS}""",
        order_id,
        status.value,
        actor,
        at,
    )
    assert row is not None
    return dict(row)


async def insert_results(
    conn: Connection, order_id: uuid.UUID, results: Sequence[Result], catalogue: dict[str, LabTest], at: datetime
) -> None:
    await conn.executemany(
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


async def results_of(conn: Connection, order_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[dict[str, Any]]]:
    rows = await conn.fetch(
        """SELECT r.order_id, r.code, r.value, r.unit, r.reference_low, r.reference_high, r.flag
           FROM lab_result r JOIN lab_order_test t USING (order_id, code)
           WHERE r.order_id = ANY($1::uuid[]) ORDER BY r.order_id, t.position""",
        list(order_ids),
    )
    out: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["order_id"], []).append(dict(r))
    return out


async def list_orders(
    conn: Connection,
    *,
    patient_id: uuid.UUID | None,
    status: Status | None,
    limit: int,
    ordered_by: uuid.UUID | None = None,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
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
    return [dict(r) | {"tests": list(r["tests"])} for r in rows]


def _dec(v: Any) -> str | None:
    return None if v is None else str(v)


def catalogue_json(t: LabTest) -> dict[str, Any]:
    return {
        "code": t.code,
        "label": t.label,
        "specimen": t.specimen,
        "unit": t.unit,
        "reference_low": _dec(t.reference_low),
        "reference_high": _dec(t.reference_high),
        "critical_low": _dec(t.critical_low),
        "critical_high": _dec(t.critical_high),
        "price": f"{t.price:.2f}",
        "currency": t.currency,
    }


def order_json(row: dict[str, Any], results: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    def at(k: str) -> str | None:
        return row[k].isoformat() if row.get(k) else None

    out = {
        "id": str(row["id"]),
        "patient_id": str(row["patient_id"]),
        "ordered_by": str(row["ordered_by"]),
        "priority": row["priority"],
        "status": row["status"],
        "version": row["version"],
        "tests": row["tests"],
        "placed_at": at("placed_at"),
        "collected_at": at("collected_at"),
        "started_at": at("started_at"),
        "resulted_at": at("resulted_at"),
        "cancelled_at": at("cancelled_at"),
    }
    if results is not None:
        out["results"] = [
            {
                "code": r["code"],
                "value": r["value"],
                "unit": r["unit"],
                "reference_low": _dec(r["reference_low"]),
                "reference_high": _dec(r["reference_high"]),
                "flag": r["flag"],
            }
            for r in results
        ]
    return out
