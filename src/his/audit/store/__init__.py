"""Tables and queries of the audit service."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from his.audit.domain import GENESIS, Entry, link
from his.kernel.db import Connection

CHAIN_LOCK = "SELECT pg_advisory_xact_lock(hashtext('his.audit.chain'))"
ROW = """seq, event_id, at, source, actor_id, actor_roles, patient_id, action, resource, purpose, outcome,
         trace_id, flagged, prev_hash, hash"""


async def append(conn: Connection, record: dict[str, Any]) -> int:
    """Append one record at the head of the chain (serialised by a transaction lock).

    New records always carry ``flagged`` (false unless given), so it is part of their hash.
    """
    return await append_many(conn, [record])


async def append_many(conn: Connection, records: list[dict[str, Any]]) -> int:
    """Append records at the head of the chain, in order, under one lock; returns the last seq."""
    await conn.execute(CHAIN_LOCK)
    head = await conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    seq, prev = (int(head["seq"]), bytes(head["hash"])) if head else (0, GENESIS)
    values = []
    for record in records:
        seq += 1
        row = dict(record, seq=seq, flagged=bool(record.get("flagged", False)))
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
                prev,
                digest,
            )
        )
        prev = digest
    await conn.executemany(
        f"INSERT INTO audit_log ({ROW}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        values,
    )
    return seq


async def head(conn: Connection) -> tuple[int, bytes]:
    row = await conn.fetchrow("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
    return (int(row["seq"]), bytes(row["hash"])) if row else (0, GENESIS)


async def rows(conn: Connection, batch: int = 5000) -> AsyncIterator[dict[str, Any]]:
    """Every record in chain order, read in batches: every row of the table, whatever its ``seq``,
    so a row forged below the first record (``seq`` 0 or less) is not skipped."""
    after: int | None = None
    while True:
        chunk = await conn.fetch(
            f"SELECT {ROW} FROM audit_log WHERE $1::bigint IS NULL OR seq > $1 ORDER BY seq LIMIT $2", after, batch
        )
        for r in chunk:
            yield dict(r)
        if len(chunk) < batch:
            return
        after = int(chunk[-1]["seq"])


async def link_account(conn: Connection, patient_id: uuid.UUID, account_id: uuid.UUID) -> None:
    await conn.execute(
        "INSERT INTO patient_account VALUES ($1, $2) ON CONFLICT (patient_id) DO UPDATE SET account_id = $2",
        patient_id,
        account_id,
    )


async def owns(conn: Connection, account_id: uuid.UUID, patient_id: uuid.UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM patient_account WHERE patient_id = $1 AND account_id = $2", patient_id, account_id
        )
    )


async def for_patient(conn: Connection, patient_id: uuid.UUID, *, before: int | None, limit: int) -> list[Entry]:
    """One patient's trail, newest first, from before the record ``before`` (a ``seq``)."""
    found = await conn.fetch(
        """SELECT seq, at, source, actor_id, actor_roles, action, resource, purpose, outcome,
                  coalesce(flagged, false) AS flagged
           FROM audit_log WHERE patient_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3""",
        patient_id,
        before or 2**62,
        limit,
    )
    return [Entry(**(dict(r) | {"actor_roles": tuple(r["actor_roles"])})) for r in found]
