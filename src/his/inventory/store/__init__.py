"""Tables and queries of the inventory service: its ports (``his.inventory.ports``) on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal

import asyncpg
import orjson

from his.inventory.domain import (
    Backorder,
    DuplicateItemError,
    ExpiringLot,
    Item,
    Lot,
    LowStockAlert,
    Place,
    ReagentUse,
    Reason,
    ShelvedLot,
    StockLevel,
    Take,
    is_expired,
)
from his.kernel.db import Connection, Record, Unit, UnitOfWork, UnitsOn

#: Items with their thresholds per location, as JSON ({location: threshold}); {where} picks them.
ITEMS = """SELECT i.code, i.description, i.unit, i.chargeable,
                  coalesce(jsonb_object_agg(l.location, l.threshold::text)
                           FILTER (WHERE l.threshold IS NOT NULL), '{{}}'::jsonb)::text AS thresholds
           FROM item i LEFT JOIN item_location l ON l.item_code = i.code
           {where} GROUP BY i.code ORDER BY i.code"""


def _item(r: Record) -> Item:
    thresholds = {k: Decimal(v) for k, v in orjson.loads(r["thresholds"]).items()}
    return Item(r["code"], r["description"], r["unit"], r["chargeable"], thresholds)


class PgItems:
    """The inventory's ``Items`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(self, item: Item) -> None:
        try:
            await self.conn.execute(
                "INSERT INTO item (code, description, unit, chargeable) VALUES ($1, $2, $3, $4)",
                item.code,
                item.description,
                item.unit,
                item.chargeable,
            )
        except asyncpg.UniqueViolationError as exc:
            raise DuplicateItemError(item.code) from exc
        if item.thresholds:
            await self.conn.execute(
                """INSERT INTO item_location (item_code, location, threshold)
                   SELECT $1, unnest($2::text[]), unnest($3::numeric[])""",
                item.code,
                list(item.thresholds),
                list(item.thresholds.values()),
            )

    async def get(self, code: str) -> Item | None:
        row = await self.conn.fetchrow(ITEMS.format(where="WHERE i.code = $1"), code)
        return _item(row) if row else None

    async def all(self) -> list[Item]:
        return [_item(r) for r in await self.conn.fetch(ITEMS.format(where=""))]


def _place(row: Record) -> Place:
    return Place(row["item_code"], row["location"], row["threshold"], row["low"], row["version"])


def _lot(row: Record) -> Lot:
    return Lot(row["id"], row["lot"], row["expires_on"], row["quantity"], row["received_seq"])


class PgStock:
    """The inventory's ``Stock`` (``item_location`` and its lots) on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def lock(self, item_code: str, location: str, *, create: bool) -> Place | None:
        """Lock an (item, location) for a stock change (created first when ``create``); every change
        of that stock takes this lock first, so they are serialised and the low-stock state stays true."""
        if create:
            row = await self.conn.fetchrow(
                """INSERT INTO item_location (item_code, location) VALUES ($1, $2)
                   ON CONFLICT (item_code, location) DO UPDATE SET version = item_location.version
                   RETURNING item_code, location, threshold, low, version""",
                item_code,
                location,
            )
        else:
            row = await self.conn.fetchrow(
                """SELECT item_code, location, threshold, low, version FROM item_location
                   WHERE item_code = $1 AND location = $2 FOR UPDATE""",
                item_code,
                location,
            )
        return _place(row) if row else None

    async def save(self, item_code: str, location: str, *, low: bool, version: int) -> None:
        await self.conn.execute(
            "UPDATE item_location SET low = $3, version = greatest(version, $4) WHERE item_code = $1 AND location = $2",
            item_code,
            location,
            low,
            version,
        )

    async def receive(
        self,
        *,
        receipt_id: uuid.UUID,
        item_code: str,
        location: str,
        lot: str,
        expires_on: date | None,
        quantity: Decimal,
        received_by: uuid.UUID,
        at: datetime,
    ) -> Lot:
        """Add a receipt to its lot (created if new) and record the receipt."""
        row = await self.conn.fetchrow(
            """INSERT INTO stock_lot (id, item_code, location, lot, expires_on, quantity, received_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (item_code, location, lot, expires_on)
               DO UPDATE SET quantity = stock_lot.quantity + EXCLUDED.quantity
               RETURNING id, lot, expires_on, quantity, received_seq""",
            uuid.uuid4(),
            item_code,
            location,
            lot,
            expires_on,
            quantity,
            at,
        )
        assert row is not None
        await self.conn.execute(
            "INSERT INTO receipt (id, lot_id, quantity, received_by, received_at) VALUES ($1, $2, $3, $4, $5)",
            receipt_id,
            row["id"],
            quantity,
            received_by,
            at,
        )
        return _lot(row)

    async def usable(self, item_code: str, location: str, today: date) -> list[Lot]:
        """The lots that can be used today, locked: nobody else takes from them until this commits."""
        rows = await self.conn.fetch(
            """SELECT id, lot, expires_on, quantity, received_seq FROM stock_lot
               WHERE item_code = $1 AND location = $2 AND quantity > 0 AND (expires_on IS NULL OR expires_on >= $3)
               ORDER BY expires_on NULLS LAST, received_seq FOR UPDATE""",
            item_code,
            location,
            today,
        )
        return [_lot(r) for r in rows]

    async def on_hand(self, item_code: str, location: str, today: date) -> Decimal:
        """Usable stock of an (item, location): what is left in lots not expired today."""
        total: Decimal = await self.conn.fetchval(
            """SELECT coalesce(sum(quantity), 0) FROM stock_lot
               WHERE item_code = $1 AND location = $2 AND (expires_on IS NULL OR expires_on >= $3)""",
            item_code,
            location,
            today,
        )
        return total

    async def levels(self, item_code: str | None, location: str | None, limit: int, today: date) -> list[StockLevel]:
        """The matching (item, location)s with their lots (with stock) in FEFO order."""
        rows = await self.conn.fetch(
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
                expired = is_expired(r["expires_on"], today)
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

    async def expiring(self, until: date, location: str | None, limit: int) -> list[ExpiringLot]:
        rows = await self.conn.fetch(
            """SELECT s.item_code, i.unit, s.location, s.lot, s.expires_on, s.quantity
               FROM stock_lot s JOIN item i ON i.code = s.item_code
               WHERE s.quantity > 0 AND s.expires_on <= $1 AND ($2::text IS NULL OR s.location = $2)
               ORDER BY s.expires_on, s.item_code, s.location, s.lot LIMIT $3""",
            until,
            location,
            limit,
        )
        return [ExpiringLot(**dict(r)) for r in rows]


class PgConsumptions:
    """The inventory's ``Consumptions`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(
        self,
        *,
        consumption_id: uuid.UUID,
        item_code: str,
        location: str,
        quantity: Decimal,
        reason: Reason,
        patient_id: uuid.UUID | None,
        source_id: uuid.UUID | None,
        chargeable: bool,
        consumed_by: uuid.UUID | None,
        at: datetime,
        takes: Sequence[Take],
    ) -> None:
        """Record the consumption, then take the allocated quantities from its (locked) lots; the
        CHECK refuses (and rolls back) any lot going negative, the unique key a second use of an
        item by one source."""
        await self.conn.execute(
            """INSERT INTO consumption (id, item_code, location, quantity, reason, patient_id, source_id, chargeable,
                                        consumed_by, consumed_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
            consumption_id,
            item_code,
            location,
            quantity,
            reason.value,
            patient_id,
            source_id,
            chargeable,
            consumed_by,
            at,
        )
        ids = [t.lot.id for t in takes]
        qty = [t.quantity for t in takes]
        await self.conn.execute(
            """UPDATE stock_lot s SET quantity = s.quantity - t.qty
               FROM unnest($1::uuid[], $2::numeric[]) AS t(id, qty) WHERE s.id = t.id""",
            ids,
            qty,
        )
        await self.conn.execute(
            "INSERT INTO consumption_lot (consumption_id, lot_id, quantity) SELECT $1, unnest($2::uuid[]), "
            "unnest($3::numeric[])",
            consumption_id,
            ids,
            qty,
        )

    async def handled(self, source_id: uuid.UUID) -> set[str]:
        """Items already consumed or back-ordered for a source (a lab order)."""
        rows = await self.conn.fetch(
            """SELECT item_code FROM consumption WHERE source_id = $1
               UNION SELECT item_code FROM backorder WHERE source_id = $1""",
            source_id,
        )
        return {r["item_code"] for r in rows}


class PgBackorders:
    """The inventory's ``Backorders`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(
        self,
        *,
        backorder_id: uuid.UUID,
        item_code: str,
        location: str,
        requested: Decimal,
        available: Decimal,
        reason: Reason,
        patient_id: uuid.UUID | None,
        source_id: uuid.UUID | None,
        created_by: uuid.UUID | None,
        at: datetime,
    ) -> None:
        await self.conn.execute(
            """INSERT INTO backorder (id, item_code, location, requested, available, reason, patient_id, source_id,
                                      created_by, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
            backorder_id,
            item_code,
            location,
            requested,
            available,
            reason.value,
            patient_id,
            source_id,
            created_by,
            at,
        )

    async def find(self, item_code: str | None, location: str | None, limit: int) -> list[Backorder]:
        rows = await self.conn.fetch(
            """SELECT id, item_code, location, requested, available, reason, source_id, created_at FROM backorder
               WHERE ($1::text IS NULL OR item_code = $1) AND ($2::text IS NULL OR location = $2)
               ORDER BY created_at DESC, id LIMIT $3""",
            item_code,
            location,
            limit,
        )
        return [Backorder(**dict(r)) for r in rows]


class PgAlerts:
    """The inventory's ``Alerts`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(
        self,
        *,
        alert_id: uuid.UUID,
        item_code: str,
        location: str,
        on_hand: Decimal,
        threshold: Decimal,
        at: datetime,
    ) -> None:
        await self.conn.execute(
            """INSERT INTO low_stock_alert (id, item_code, location, on_hand, threshold, alerted_at)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            alert_id,
            item_code,
            location,
            on_hand,
            threshold,
            at,
        )

    async def find(self, item_code: str | None, location: str | None, limit: int) -> list[LowStockAlert]:
        rows = await self.conn.fetch(
            """SELECT id, item_code, location, on_hand, threshold, alerted_at FROM low_stock_alert
               WHERE ($1::text IS NULL OR item_code = $1) AND ($2::text IS NULL OR location = $2)
               ORDER BY alerted_at DESC, id LIMIT $3""",
            item_code,
            location,
            limit,
        )
        return [LowStockAlert(**dict(r)) for r in rows]


class PgReagents:
    """The inventory's ``Reagents`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def for_tests(self, test_codes: Sequence[str]) -> list[ReagentUse]:
        """What the tests use, summed per (item, location), in a fixed order (so locks are taken in one order)."""
        rows = await self.conn.fetch(
            """SELECT item_code, location, sum(quantity) AS quantity FROM reagent_use
               WHERE test_code = ANY($1::text[]) GROUP BY item_code, location ORDER BY item_code, location""",
            list(test_codes),
        )
        return [ReagentUse(r["item_code"], r["location"], r["quantity"]) for r in rows]


class InventoryUnit(Unit):
    """A unit of work of the inventory on PostgreSQL (also around an event handler's ``UnitOfWork``)."""

    def __init__(self, uow: UnitOfWork) -> None:
        super().__init__(uow)
        self.items = PgItems(self.conn)
        self.stock = PgStock(self.conn)
        self.consumptions = PgConsumptions(self.conn)
        self.backorders = PgBackorders(self.conn)
        self.alerts = PgAlerts(self.conn)
        self.reagents = PgReagents(self.conn)


class InventoryStore(UnitsOn[InventoryUnit]):
    """The inventory's units of work (``his.inventory.ports.InventoryUnits``) on its database."""

    def unit(self, uow: UnitOfWork) -> InventoryUnit:
        return InventoryUnit(uow)
