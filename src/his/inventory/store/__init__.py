"""Tables and queries of the inventory service."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from his.inventory.domain import (
    Backorder,
    ExpiringLot,
    Item,
    Lot,
    LowStockAlert,
    ShelvedLot,
    StockLevel,
    Take,
    is_expired,
)
from his.kernel.db import Connection, Record


class DuplicateItemError(Exception):
    """An item with this code already exists."""


# Items


async def insert_item(conn: Connection, row: dict[str, Any], thresholds: dict[str, Decimal]) -> None:
    try:
        await conn.execute(
            "INSERT INTO item (code, description, unit, chargeable) VALUES ($1, $2, $3, $4)",
            row["code"],
            row["description"],
            row["unit"],
            row["chargeable"],
        )
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateItemError(row["code"]) from exc
    if thresholds:
        await conn.execute(
            """INSERT INTO item_location (item_code, location, threshold)
               SELECT $1, unnest($2::text[]), unnest($3::numeric[])""",
            row["code"],
            list(thresholds),
            list(thresholds.values()),
        )


async def get_item(conn: Connection, code: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT code, description, unit, chargeable, created_at FROM item WHERE code = $1", code)
    return dict(row) if row else None


async def list_items(conn: Connection) -> list[Item]:
    rows = await conn.fetch(
        """SELECT i.code, i.description, i.unit, i.chargeable, i.created_at,
                  coalesce(jsonb_object_agg(l.location, l.threshold::text)
                           FILTER (WHERE l.threshold IS NOT NULL), '{}'::jsonb)::text AS thresholds
           FROM item i LEFT JOIN item_location l ON l.item_code = i.code
           GROUP BY i.code ORDER BY i.code"""
    )
    return [
        Item(
            r["code"],
            r["description"],
            r["unit"],
            r["chargeable"],
            {k: Decimal(v) for k, v in orjson.loads(r["thresholds"]).items()},
        )
        for r in rows
    ]


# The (item, location) state: threshold, low-stock flag, event version


async def lock_place(conn: Connection, item_code: str, location: str, *, create: bool) -> dict[str, Any] | None:
    """Lock an (item, location) for a stock change (created first when ``create``); every change of
    that stock takes this lock first, so they are serialised and the low-stock state stays true."""
    if create:
        row = await conn.fetchrow(
            """INSERT INTO item_location (item_code, location) VALUES ($1, $2)
               ON CONFLICT (item_code, location) DO UPDATE SET version = item_location.version
               RETURNING item_code, location, threshold, low, version""",
            item_code,
            location,
        )
    else:
        row = await conn.fetchrow(
            """SELECT item_code, location, threshold, low, version FROM item_location
               WHERE item_code = $1 AND location = $2 FOR UPDATE""",
            item_code,
            location,
        )
    return dict(row) if row else None


async def save_place(conn: Connection, item_code: str, location: str, low: bool, version: int) -> None:
    await conn.execute(
        "UPDATE item_location SET low = $3, version = greatest(version, $4) WHERE item_code = $1 AND location = $2",
        item_code,
        location,
        low,
        version,
    )


# Lots


def _lot(row: asyncpg.Record) -> Lot:
    return Lot(row["id"], row["lot"], row["expires_on"], row["quantity"], row["received_seq"])


async def lots_for_use(conn: Connection, item_code: str, location: str, today: date) -> list[Lot]:
    """The lots that can be used today, locked: nobody else takes from them until this commits."""
    rows = await conn.fetch(
        """SELECT id, lot, expires_on, quantity, received_seq FROM stock_lot
           WHERE item_code = $1 AND location = $2 AND quantity > 0 AND (expires_on IS NULL OR expires_on >= $3)
           ORDER BY expires_on NULLS LAST, received_seq FOR UPDATE""",
        item_code,
        location,
        today,
    )
    return [_lot(r) for r in rows]


async def take(conn: Connection, consumption_id: uuid.UUID, takes: list[Take]) -> None:
    """Take the allocated quantities; the CHECK refuses (and rolls back) any lot going negative."""
    ids = [t.lot.id for t in takes]
    qty = [t.quantity for t in takes]
    await conn.execute(
        """UPDATE stock_lot s SET quantity = s.quantity - t.qty
           FROM unnest($1::uuid[], $2::numeric[]) AS t(id, qty) WHERE s.id = t.id""",
        ids,
        qty,
    )
    await conn.execute(
        "INSERT INTO consumption_lot (consumption_id, lot_id, quantity) SELECT $1, unnest($2::uuid[]), "
        "unnest($3::numeric[])",
        consumption_id,
        ids,
        qty,
    )


async def on_hand(conn: Connection, item_code: str, location: str, today: date) -> Decimal:
    """Usable stock of an (item, location): what is left in lots not expired today."""
    total: Decimal = await conn.fetchval(
        """SELECT coalesce(sum(quantity), 0) FROM stock_lot
           WHERE item_code = $1 AND location = $2 AND (expires_on IS NULL OR expires_on >= $3)""",
        item_code,
        location,
        today,
    )
    return total


async def receive(conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
    """Add a receipt to its lot (created if new) and record the receipt."""
    lot = await conn.fetchrow(
        """INSERT INTO stock_lot (id, item_code, location, lot, expires_on, quantity)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (item_code, location, lot, expires_on)
           DO UPDATE SET quantity = stock_lot.quantity + EXCLUDED.quantity
           RETURNING id, quantity""",
        uuid.uuid4(),
        row["item_code"],
        row["location"],
        row["lot"],
        row["expires_on"],
        row["quantity"],
    )
    assert lot is not None
    await conn.execute(
        "INSERT INTO receipt (id, lot_id, quantity, received_by) VALUES ($1, $2, $3, $4)",
        row["id"],
        lot["id"],
        row["quantity"],
        row["received_by"],
    )
    return {"lot_id": lot["id"], "lot_quantity": lot["quantity"]}


async def stock(
    conn: Connection, item_code: str | None, location: str | None, limit: int, today: date
) -> list[StockLevel]:
    """The matching (item, location)s with their lots (with stock) in FEFO order."""
    rows = await conn.fetch(
        """SELECT l.item_code, l.location, l.threshold, l.low, i.unit,
                  s.lot, s.expires_on, s.quantity, s.received_at
           FROM item_location l JOIN item i ON i.code = l.item_code
           LEFT JOIN stock_lot s ON s.item_code = l.item_code AND s.location = l.location AND s.quantity > 0
           WHERE ($1::text IS NULL OR l.item_code = $1) AND ($2::text IS NULL OR l.location = $2)
           ORDER BY l.item_code, l.location, s.expires_on NULLS LAST, s.received_seq
           LIMIT $3""",
        item_code,
        location,
        limit,
    )
    places: dict[tuple[str, str], tuple[Record, list[ShelvedLot]]] = {}
    for r in rows:
        _, lots = places.setdefault((r["item_code"], r["location"]), (r, []))
        if r["lot"] is not None:
            expired = is_expired(Lot(None, r["lot"], r["expires_on"], r["quantity"]), today)
            lots.append(ShelvedLot(r["lot"], r["expires_on"], r["quantity"], expired, r["received_at"]))
    return [
        StockLevel(
            first["item_code"],
            first["location"],
            first["unit"],
            on_hand=sum((x.quantity for x in lots if not x.expired), Decimal(0)),
            expired=sum((x.quantity for x in lots if x.expired), Decimal(0)),
            threshold=first["threshold"],
            low=first["low"],
            lots=tuple(lots),
        )
        for first, lots in places.values()
    ]


async def expiring(conn: Connection, until: date, location: str | None, limit: int) -> list[ExpiringLot]:
    rows = await conn.fetch(
        """SELECT s.item_code, i.unit, s.location, s.lot, s.expires_on, s.quantity
           FROM stock_lot s JOIN item i ON i.code = s.item_code
           WHERE s.quantity > 0 AND s.expires_on <= $1 AND ($2::text IS NULL OR s.location = $2)
           ORDER BY s.expires_on, s.item_code, s.location, s.lot LIMIT $3""",
        until,
        location,
        limit,
    )
    return [ExpiringLot(**dict(r)) for r in rows]


async def insert_consumption(conn: Connection, row: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO consumption (id, item_code, location, quantity, reason, patient_id, source_id, chargeable,
                                    consumed_by, consumed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        row["id"],
        row["item_code"],
        row["location"],
        row["quantity"],
        row["reason"],
        row["patient_id"],
        row["source_id"],
        row["chargeable"],
        row["consumed_by"],
        row["consumed_at"],
    )


async def insert_backorder(conn: Connection, row: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO backorder (id, item_code, location, requested, available, reason, patient_id, source_id,
                                  created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        row["id"],
        row["item_code"],
        row["location"],
        row["requested"],
        row["available"],
        row["reason"],
        row["patient_id"],
        row["source_id"],
        row["created_by"],
    )


async def handled_for_source(conn: Connection, source_id: uuid.UUID) -> set[str]:
    """Items already consumed or back-ordered for a source (a lab order)."""
    rows = await conn.fetch(
        """SELECT item_code FROM consumption WHERE source_id = $1
           UNION SELECT item_code FROM backorder WHERE source_id = $1""",
        source_id,
    )
    return {r["item_code"] for r in rows}


async def reagents_for(conn: Connection, test_codes: list[str]) -> list[dict[str, Any]]:
    """What the tests use, summed per (item, location), in a fixed order (so locks are taken in one order)."""
    rows = await conn.fetch(
        """SELECT item_code, location, sum(quantity) AS quantity FROM reagent_use
           WHERE test_code = ANY($1::text[]) GROUP BY item_code, location ORDER BY item_code, location""",
        test_codes,
    )
    return [dict(r) for r in rows]


async def insert_alert(conn: Connection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO low_stock_alert (id, item_code, location, on_hand, threshold) VALUES ($1, $2, $3, $4, $5)",
        row["id"],
        row["item_code"],
        row["location"],
        row["on_hand"],
        row["threshold"],
    )


async def alerts(conn: Connection, item_code: str | None, location: str | None, limit: int) -> list[LowStockAlert]:
    rows = await conn.fetch(
        """SELECT id, item_code, location, on_hand, threshold, alerted_at FROM low_stock_alert
           WHERE ($1::text IS NULL OR item_code = $1) AND ($2::text IS NULL OR location = $2)
           ORDER BY alerted_at DESC, id LIMIT $3""",
        item_code,
        location,
        limit,
    )
    return [LowStockAlert(**dict(r)) for r in rows]


async def backorders(conn: Connection, item_code: str | None, location: str | None, limit: int) -> list[Backorder]:
    rows = await conn.fetch(
        """SELECT id, item_code, location, requested, available, reason, source_id, created_at FROM backorder
           WHERE ($1::text IS NULL OR item_code = $1) AND ($2::text IS NULL OR location = $2)
           ORDER BY created_at DESC, id LIMIT $3""",
        item_code,
        location,
        limit,
    )
    return [Backorder(**dict(r)) for r in rows]
