"""Tables and queries of the scheduling service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
from asyncpg import Range

from his.kernel.db import Connection
from his.kernel.intervals import Interval
from his.scheduling.domain import HOLDING, Status

COLUMNS = "id, patient_id, practitioner_id, service, during, status, version, booked_by, created_at, updated_at"
_HOLDING = [s.value for s in HOLDING]


class CollisionError(Exception):
    """The appointment would overlap another one of the same practitioner or patient."""

    def __init__(self, who: str, other: dict[str, Any] | None, other_patient: uuid.UUID | None = None) -> None:
        super().__init__(f"collides with another appointment of the {who}")
        #: ``other`` is the appointment collided with (id, start, end), of ``other_patient``.
        self.who, self.other, self.other_patient = who, other, other_patient


def as_range(i: Interval) -> Range[datetime]:
    return Range(i.start, i.end, lower_inc=True, upper_inc=False)


def as_interval(r: Range[datetime]) -> Interval:
    assert r.lower is not None and r.upper is not None  # the table forbids unbounded ranges
    return Interval(r.lower, r.upper)


def _collided(exc: asyncpg.ExclusionViolationError) -> CollisionError:
    """Which constraint refused the row; what it collided with is looked up after the rollback."""
    return CollisionError("patient" if "patient" in (exc.constraint_name or "") else "practitioner", None)


async def collision_with(conn: Connection, exc: CollisionError, row: dict[str, Any]) -> CollisionError:
    """``exc`` naming the appointment that ``row`` collided with, read in a fresh statement.

    The violation aborted the booking's transaction, so this runs after its rollback instead of
    under a savepoint on every insert. The other appointment is committed (the constraint waits
    for a concurrent writer's outcome); if it was cancelled or moved meanwhile, none is named.
    """
    who = exc.who
    other = await conn.fetchrow(
        f"""SELECT id, patient_id, during, status FROM appointment
            WHERE {who}_id = $1 AND during && $2 AND status = ANY($3::text[]) AND id <> $4
            ORDER BY lower(during) LIMIT 1""",
        row[f"{who}_id"],
        row["during"],
        _HOLDING,
        row["id"],
    )
    if other is None:
        return CollisionError(who, None)
    span = as_interval(other["during"])
    detail = {"id": str(other["id"]), "start": span.start.isoformat(), "end": span.end.isoformat()}
    return CollisionError(who, detail, other["patient_id"])


async def insert_appointment(conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
    """Insert a booked appointment and return it as stored; the exclusion constraints decide between
    concurrent requests (``CollisionError`` without details: see ``collision_with``)."""
    try:
        saved = await conn.fetchrow(
            f"""INSERT INTO appointment (id, patient_id, practitioner_id, service, during, status, booked_by)
                VALUES ($1, $2, $3, $4, $5, 'booked', $6) RETURNING {COLUMNS}""",
            row["id"],
            row["patient_id"],
            row["practitioner_id"],
            row["service"],
            row["during"],
            row["booked_by"],
        )
    except asyncpg.ExclusionViolationError as exc:
        raise _collided(exc) from exc
    assert saved is not None
    return dict(saved)


async def move_appointment(conn: Connection, row: dict[str, Any], during: Range[datetime]) -> dict[str, Any]:
    """Give an appointment new times and return it as stored (``CollisionError`` as for inserts)."""
    try:
        moved = await conn.fetchrow(
            f"""UPDATE appointment SET during = $2, version = version + 1, updated_at = now() WHERE id = $1
                RETURNING {COLUMNS}""",
            row["id"],
            during,
        )
    except asyncpg.ExclusionViolationError as exc:
        raise _collided(exc) from exc
    assert moved is not None
    return dict(moved)


async def get_appointment(conn: Connection, aid: uuid.UUID, *, lock: bool = False) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM appointment WHERE id = $1{' FOR UPDATE' if lock else ''}", aid)
    return dict(row) if row else None


async def set_status(conn: Connection, aid: uuid.UUID, status: Status) -> int:
    version: int = await conn.fetchval(
        "UPDATE appointment SET status = $2, version = version + 1, updated_at = now() WHERE id = $1 RETURNING version",
        aid,
        status.value,
    )
    return version


async def busy(conn: Connection, practitioner_id: uuid.UUID, window: Interval) -> list[Interval]:
    rows = await conn.fetch(
        "SELECT during FROM appointment WHERE practitioner_id = $1 AND during && $2 AND status = ANY($3::text[])",
        practitioner_id,
        as_range(window),
        _HOLDING,
    )
    return [as_interval(r["during"]) for r in rows]


async def appointments_of_patient(conn: Connection, patient_id: uuid.UUID, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM appointment WHERE patient_id = $1 ORDER BY lower(during) DESC LIMIT $2",
        patient_id,
        limit,
    )
    return [dict(r) for r in rows]


class WaitlistDuplicateError(Exception):
    """The patient already waits for this practitioner and service."""


WAITLIST_COLUMNS = """id, patient_id, practitioner_id, service, status, offered_during, offer_expires_at,
                      created_at"""


async def add_to_waitlist(conn: Connection, row: dict[str, Any]) -> None:
    try:
        await conn.execute(
            """INSERT INTO waitlist_entry (id, patient_id, practitioner_id, service, status, created_by)
               VALUES ($1, $2, $3, $4, 'waiting', $5)""",
            row["id"],
            row["patient_id"],
            row["practitioner_id"],
            row["service"],
            row["created_by"],
        )
    except asyncpg.UniqueViolationError as exc:
        raise WaitlistDuplicateError from exc


async def waitlist_entry(conn: Connection, entry_id: uuid.UUID, *, lock: bool = False) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"SELECT {WAITLIST_COLUMNS} FROM waitlist_entry WHERE id = $1{' FOR UPDATE' if lock else ''}", entry_id
    )
    return dict(row) if row else None


async def waitlist_of_patient(conn: Connection, patient_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {WAITLIST_COLUMNS} FROM waitlist_entry WHERE patient_id = $1 ORDER BY created_at DESC LIMIT 100",
        patient_id,
    )
    return [dict(r) for r in rows]


async def waiting_for(conn: Connection, practitioner_id: uuid.UUID) -> list[dict[str, Any]]:
    """Entries waiting for a practitioner, first come first served; locked so two offers never race."""
    rows = await conn.fetch(
        f"""SELECT {WAITLIST_COLUMNS} FROM waitlist_entry
            WHERE practitioner_id = $1 AND status = 'waiting'
            ORDER BY created_at, id LIMIT 50 FOR UPDATE SKIP LOCKED""",
        practitioner_id,
    )
    return [dict(r) for r in rows]


async def set_waitlist_status(
    conn: Connection,
    entry_id: uuid.UUID,
    status: str,
    offered: Interval | None = None,
    expires_at: datetime | None = None,
) -> None:
    await conn.execute(
        "UPDATE waitlist_entry SET status = $2, offered_during = $3, offer_expires_at = $4 WHERE id = $1",
        entry_id,
        status,
        as_range(offered) if offered else None,
        expires_at,
    )


def waitlist_json(row: dict[str, Any]) -> dict[str, Any]:
    offered = as_interval(row["offered_during"]) if row["offered_during"] else None
    return {
        "id": str(row["id"]),
        "patient_id": str(row["patient_id"]),
        "practitioner_id": str(row["practitioner_id"]),
        "service": row["service"],
        "status": row["status"],
        "offer": {
            "start": offered.start.isoformat(),
            "end": offered.end.isoformat(),
            "expires_at": row["offer_expires_at"].isoformat(),
        }
        if offered
        else None,
        "created_at": row["created_at"].isoformat(),
    }
