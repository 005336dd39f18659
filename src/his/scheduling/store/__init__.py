"""Tables and queries of the scheduling service."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
from asyncpg import Range

from his.kernel.db import Connection, Record
from his.kernel.intervals import Interval
from his.scheduling.domain import (
    HOLDING,
    Appointment,
    NewAppointment,
    Offer,
    Status,
    WaitlistEntry,
    WaitlistStatus,
)

COLUMNS = "id, patient_id, practitioner_id, service, during, status, version, booked_by, created_at, updated_at"
_HOLDING = [s.value for s in HOLDING]


class CollisionError(Exception):
    """The appointment would overlap another one of the same practitioner or patient."""

    def __init__(self, who: str, other: Appointment | None) -> None:
        super().__init__(f"collides with another appointment of the {who}")
        #: ``other`` is the appointment collided with, when known.
        self.who, self.other = who, other


def as_range(i: Interval) -> Range[datetime]:
    return Range(i.start, i.end, lower_inc=True, upper_inc=False)


def as_interval(r: Range[datetime]) -> Interval:
    assert r.lower is not None and r.upper is not None  # the table forbids unbounded ranges
    return Interval(r.lower, r.upper)


def _appointment(row: Record) -> Appointment:
    return Appointment(
        id=row["id"],
        patient_id=row["patient_id"],
        practitioner_id=row["practitioner_id"],
        service=row["service"],
        during=as_interval(row["during"]),
        status=Status(row["status"]),
        version=row["version"],
        booked_by=row["booked_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _collided(exc: asyncpg.ExclusionViolationError) -> CollisionError:
    """Which constraint refused the row; what it collided with is looked up after the rollback."""
    return CollisionError("patient" if "patient" in (exc.constraint_name or "") else "practitioner", None)


async def collision_with(conn: Connection, exc: CollisionError, wanted: NewAppointment | Appointment) -> CollisionError:
    """``exc`` naming the appointment that ``wanted`` (a new appointment, or one being moved to
    new times) collided with, read in a fresh statement.

    The violation aborted the booking's transaction, so this runs after its rollback instead of
    under a savepoint on every insert. The other appointment is committed (the constraint waits
    for a concurrent writer's outcome); if it was cancelled or moved meanwhile, none is named.
    """
    who = exc.who
    other = await conn.fetchrow(
        f"""SELECT {COLUMNS} FROM appointment
            WHERE {who}_id = $1 AND during && $2 AND status = ANY($3::text[]) AND id <> $4
            ORDER BY lower(during) LIMIT 1""",
        wanted.patient_id if who == "patient" else wanted.practitioner_id,
        as_range(wanted.during),
        _HOLDING,
        wanted.id,
    )
    return CollisionError(who, _appointment(other) if other else None)


async def insert_appointment(conn: Connection, new: NewAppointment) -> Appointment:
    """Insert a booked appointment and return it as stored; the exclusion constraints decide between
    concurrent requests (``CollisionError`` without details: see ``collision_with``)."""
    try:
        saved = await conn.fetchrow(
            f"""INSERT INTO appointment (id, patient_id, practitioner_id, service, during, status, booked_by)
                VALUES ($1, $2, $3, $4, $5, 'booked', $6) RETURNING {COLUMNS}""",
            new.id,
            new.patient_id,
            new.practitioner_id,
            new.service,
            as_range(new.during),
            new.booked_by,
        )
    except asyncpg.ExclusionViolationError as exc:
        raise _collided(exc) from exc
    assert saved is not None
    return _appointment(saved)


async def move_appointment(conn: Connection, appointment_id: uuid.UUID, during: Interval) -> Appointment:
    """Give an appointment new times and return it as stored (``CollisionError`` as for inserts)."""
    try:
        moved = await conn.fetchrow(
            f"""UPDATE appointment SET during = $2, version = version + 1, updated_at = now() WHERE id = $1
                RETURNING {COLUMNS}""",
            appointment_id,
            as_range(during),
        )
    except asyncpg.ExclusionViolationError as exc:
        raise _collided(exc) from exc
    assert moved is not None
    return _appointment(moved)


async def get_appointment(conn: Connection, aid: uuid.UUID, *, lock: bool = False) -> Appointment | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM appointment WHERE id = $1{' FOR UPDATE' if lock else ''}", aid)
    return _appointment(row) if row else None


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


async def appointments_of_patient(conn: Connection, patient_id: uuid.UUID, limit: int) -> list[Appointment]:
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM appointment WHERE patient_id = $1 ORDER BY lower(during) DESC LIMIT $2",
        patient_id,
        limit,
    )
    return [_appointment(r) for r in rows]


class WaitlistDuplicateError(Exception):
    """The patient already waits for this practitioner and service."""


WAITLIST_COLUMNS = """id, patient_id, practitioner_id, service, status, offered_during, offer_expires_at,
                      created_at"""


def _entry(row: Record) -> WaitlistEntry:
    offered = row["offered_during"]
    return WaitlistEntry(
        id=row["id"],
        patient_id=row["patient_id"],
        practitioner_id=row["practitioner_id"],
        service=row["service"],
        status=WaitlistStatus(row["status"]),
        offer=Offer(as_interval(offered), row["offer_expires_at"]) if offered else None,
        created_at=row["created_at"],
    )


async def add_to_waitlist(
    conn: Connection,
    *,
    entry_id: uuid.UUID,
    patient_id: uuid.UUID,
    practitioner_id: uuid.UUID,
    service: str,
    created_by: uuid.UUID,
) -> None:
    try:
        await conn.execute(
            """INSERT INTO waitlist_entry (id, patient_id, practitioner_id, service, status, created_by)
               VALUES ($1, $2, $3, $4, 'waiting', $5)""",
            entry_id,
            patient_id,
            practitioner_id,
            service,
            created_by,
        )
    except asyncpg.UniqueViolationError as exc:
        raise WaitlistDuplicateError from exc


async def waitlist_entry(conn: Connection, entry_id: uuid.UUID, *, lock: bool = False) -> WaitlistEntry | None:
    row = await conn.fetchrow(
        f"SELECT {WAITLIST_COLUMNS} FROM waitlist_entry WHERE id = $1{' FOR UPDATE' if lock else ''}", entry_id
    )
    return _entry(row) if row else None


async def waitlist_of_patient(conn: Connection, patient_id: uuid.UUID) -> list[WaitlistEntry]:
    rows = await conn.fetch(
        f"SELECT {WAITLIST_COLUMNS} FROM waitlist_entry WHERE patient_id = $1 ORDER BY created_at DESC LIMIT 100",
        patient_id,
    )
    return [_entry(r) for r in rows]


async def waiting_for(conn: Connection, practitioner_id: uuid.UUID) -> list[WaitlistEntry]:
    """Entries waiting for a practitioner, first come first served; locked so two offers never race."""
    rows = await conn.fetch(
        f"""SELECT {WAITLIST_COLUMNS} FROM waitlist_entry
            WHERE practitioner_id = $1 AND status = 'waiting'
            ORDER BY created_at, id LIMIT 50 FOR UPDATE SKIP LOCKED""",
        practitioner_id,
    )
    return [_entry(r) for r in rows]


async def set_waitlist_status(
    conn: Connection,
    entry_id: uuid.UUID,
    status: WaitlistStatus,
    offered: Interval | None = None,
    expires_at: datetime | None = None,
) -> None:
    await conn.execute(
        "UPDATE waitlist_entry SET status = $2, offered_during = $3, offer_expires_at = $4 WHERE id = $1",
        entry_id,
        status.value,
        as_range(offered) if offered else None,
        expires_at,
    )
