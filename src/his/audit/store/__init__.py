"""Tables and queries of the audit service: the chain (``PgChain``) and the account links
(``PgAccountLinks``) over one connection, the unit of work carrying them (``AuditUnit``) and the
units over the database (``AuditStore``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import cast

from his.audit.domain import GENESIS, ChainRow, Entry, NewRecord, link
from his.kernel.db import Connection, Unit, UnitOfWork, UnitsOn

CHAIN_LOCK = "SELECT pg_advisory_xact_lock(hashtext('his.audit.chain'))"
ROW = """seq, event_id, at, source, actor_id, actor_roles, patient_id, action, resource, purpose, outcome,
         trace_id, flagged, producer_seq, account_id, prev_hash, hash"""
PLACES = ", ".join(f"${i}" for i in range(1, ROW.count(",") + 2))


class PgChain:
    """The audit service's ``Chain`` on one connection, and the verifier's reads of it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def append(self, record: NewRecord) -> int:
        """Append one record at the head of the chain (serialised by a transaction lock).

        New records always carry ``flagged`` (false unless given), so it is part of their hash.
        """
        return await self.append_many([record])

    async def append_many(self, records: Sequence[NewRecord]) -> int:
        """Append records at the head of the chain, in order, under one lock; returns the last seq."""
        await self.conn.execute(CHAIN_LOCK)
        head = await self.conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        seq, prev = (int(head["seq"]), bytes(head["hash"])) if head else (0, GENESIS)
        values = []
        for record in records:
            seq += 1
            row = record.content(seq)
            digest = link(prev, row)
            values.append(
                (
                    seq,
                    row["event_id"],
                    row["at"],
                    row["source"],
                    row["actor_id"],
                    row["actor_roles"],
                    row["patient_id"],
                    row["action"],
                    row["resource"],
                    row["purpose"],
                    row["outcome"],
                    row["trace_id"],
                    row["flagged"],
                    row.get("producer_seq"),
                    row.get("account_id"),
                    prev,
                    digest,
                )
            )
            prev = digest
        await self.conn.executemany(
            f"INSERT INTO audit_log ({ROW}) VALUES ({PLACES})",
            values,
        )
        return seq

    async def trail(self, patient_id: uuid.UUID, *, before: int | None, limit: int) -> list[Entry]:
        """One patient's trail, newest first, from before the record ``before`` (a ``seq``)."""
        return await self._trail("patient_id", patient_id, before, limit)

    async def account_trail(self, account_id: uuid.UUID, *, before: int | None, limit: int) -> list[Entry]:
        """The records that name one account, newest first, from before the record ``before``."""
        return await self._trail("account_id", account_id, before, limit)

    async def _trail(self, column: str, value: uuid.UUID, before: int | None, limit: int) -> list[Entry]:
        found = await self.conn.fetch(
            f"""SELECT seq, at, source, actor_id, actor_roles, action, resource, purpose, outcome,
                      coalesce(flagged, false) AS flagged, account_id
               FROM audit_log WHERE {column} = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3""",
            value,
            before or 2**62,
            limit,
        )
        return [Entry(**(dict(r) | {"actor_roles": tuple(r["actor_roles"])})) for r in found]

    async def head(self) -> tuple[int, bytes]:
        """The ``seq`` and hash of the chain's last record (0 and ``GENESIS`` when empty)."""
        row = await self.conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        return (int(row["seq"]), bytes(row["hash"])) if row else (0, GENESIS)

    async def rows(self, batch: int = 5000) -> AsyncIterator[ChainRow]:
        """Every record in chain order, read in batches: every row of the table, whatever its ``seq``,
        so a row forged below the first record (``seq`` 0 or less) is not skipped."""
        after: int | None = None
        while True:
            chunk = await self.conn.fetch(
                f"SELECT {ROW} FROM audit_log WHERE $1::bigint IS NULL OR seq > $1 ORDER BY seq LIMIT $2", after, batch
            )
            for r in chunk:
                yield cast(ChainRow, dict(r))
            if len(chunk) < batch:
                return
            after = int(chunk[-1]["seq"])


class PgAccountLinks:
    """The audit service's ``AccountLinks`` on one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def link(self, patient_id: uuid.UUID, account_id: uuid.UUID) -> None:
        await self.conn.execute(
            "INSERT INTO patient_account VALUES ($1, $2) ON CONFLICT (patient_id) DO UPDATE SET account_id = $2",
            patient_id,
            account_id,
        )

    async def owns(self, account_id: uuid.UUID, patient_id: uuid.UUID) -> bool:
        return bool(
            await self.conn.fetchval(
                "SELECT 1 FROM patient_account WHERE patient_id = $1 AND account_id = $2", patient_id, account_id
            )
        )


class AuditUnit(Unit):
    """A unit of work of the audit service on PostgreSQL."""

    def __init__(self, uow: UnitOfWork) -> None:
        super().__init__(uow)
        self.chain = PgChain(self.conn)
        self.accounts = PgAccountLinks(self.conn)


class AuditStore(UnitsOn[AuditUnit]):
    """The audit service's units of work (``his.audit.ports.AuditUnits``) on its database."""

    def unit(self, uow: UnitOfWork) -> AuditUnit:
        return AuditUnit(uow)
