"""Tables and queries of the practitioners service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
from asyncpg import Range

from his.kernel.db import Connection, Record, savepoint
from his.kernel.intervals import Interval
from his.practitioners.domain import LeaveRequest, LeaveStatus, Practitioner, Shift


class AccountLinkedError(Exception):
    """The user account is already linked to another practitioner."""


class ShiftOverlapError(Exception):
    """The shift overlaps another shift of the same practitioner."""

    def __init__(self, other: dict[str, Any] | None) -> None:
        super().__init__("overlapping shift")
        self.other = other


def _range(i: Interval) -> Range[datetime]:
    return Range(i.start, i.end, lower_inc=True, upper_inc=False)


def _interval(r: Range[datetime]) -> Interval:
    assert r.lower is not None and r.upper is not None  # the table forbids unbounded ranges
    return Interval(r.lower, r.upper)


async def insert_practitioner(conn: Connection, full_name: str, specialty: str, user_id: uuid.UUID | None) -> uuid.UUID:
    pid = uuid.uuid4()
    try:
        await conn.execute(
            "INSERT INTO practitioner (id, full_name, specialty, user_id) VALUES ($1, $2, $3, $4)",
            pid,
            full_name,
            specialty,
            user_id,
        )
    except asyncpg.UniqueViolationError as exc:
        raise AccountLinkedError(str(user_id)) from exc
    return pid


async def get_practitioner(conn: Connection, pid: uuid.UUID) -> Practitioner | None:
    row = await conn.fetchrow(
        "SELECT id, full_name, specialty, user_id, created_at FROM practitioner WHERE id = $1", pid
    )
    return Practitioner(**dict(row)) if row else None


async def list_practitioners(conn: Connection, specialty: str | None, limit: int) -> list[Practitioner]:
    rows = await conn.fetch(
        """SELECT id, full_name, specialty, user_id, created_at FROM practitioner
           WHERE $1::text IS NULL OR specialty = $1 ORDER BY full_name, id LIMIT $2""",
        specialty,
        limit,
    )
    return [Practitioner(**dict(r)) for r in rows]


async def insert_shift(conn: Connection, pid: uuid.UUID, during: Interval, actor: uuid.UUID) -> uuid.UUID:
    sid = uuid.uuid4()
    try:
        async with savepoint(conn):  # the conflict lookup below must still run
            await conn.execute(
                "INSERT INTO shift (id, practitioner_id, during, created_by) VALUES ($1, $2, $3, $4)",
                sid,
                pid,
                _range(during),
                actor,
            )
    except asyncpg.ExclusionViolationError as exc:
        other = await conn.fetchrow(
            "SELECT id, during FROM shift WHERE practitioner_id = $1 AND during && $2 ORDER BY during LIMIT 1",
            pid,
            _range(during),
        )
        raise ShiftOverlapError(_conflict(other["id"], _interval(other["during"])) if other else None) from exc
    return sid


async def shifts(conn: Connection, pid: uuid.UUID, window: Interval) -> list[Shift]:
    rows = await conn.fetch(
        "SELECT id, during FROM shift WHERE practitioner_id = $1 AND during && $2 ORDER BY during",
        pid,
        _range(window),
    )
    return [Shift(r["id"], _interval(r["during"])) for r in rows]


async def insert_leave(conn: Connection, pid: uuid.UUID, during: Interval, actor: uuid.UUID) -> uuid.UUID:
    lid = uuid.uuid4()
    await conn.execute(
        """INSERT INTO leave_request (id, practitioner_id, during, status, requested_by)
           VALUES ($1, $2, $3, 'requested', $4)""",
        lid,
        pid,
        _range(during),
        actor,
    )
    return lid


async def leave_for_update(conn: Connection, pid: uuid.UUID, lid: uuid.UUID) -> LeaveRequest | None:
    """The practitioner's leave request, its row locked until the transaction ends."""
    row = await conn.fetchrow(
        """SELECT id, during, status, created_at, decided_at FROM leave_request
           WHERE id = $1 AND practitioner_id = $2 FOR UPDATE""",
        lid,
        pid,
    )
    if row is None:
        return None
    return LeaveRequest(
        row["id"], LeaveStatus(row["status"]), _interval(row["during"]), row["created_at"], row["decided_at"]
    )


async def set_leave_status(conn: Connection, lid: uuid.UUID, status: LeaveStatus, actor: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE leave_request SET status = $2, decided_by = $3, decided_at = now() WHERE id = $1",
        lid,
        status.value,
        actor,
    )


async def leave_requests(conn: Connection, pid: uuid.UUID, limit: int = 200) -> list[LeaveRequest]:
    rows = await conn.fetch(
        """SELECT id, during, status, created_at, decided_at FROM leave_request
           WHERE practitioner_id = $1 ORDER BY lower(during) DESC LIMIT $2""",
        pid,
        limit,
    )
    return [_leave(r) for r in rows]


def _leave(row: Record) -> LeaveRequest:
    return LeaveRequest(
        row["id"], LeaveStatus(row["status"]), _interval(row["during"]), row["created_at"], row["decided_at"]
    )


def _conflict(shift_id: uuid.UUID, during: Interval) -> dict[str, str]:
    """The shift a new one collides with, as the 409 names it."""
    return {"id": str(shift_id), "start": during.start.isoformat(), "end": during.end.isoformat()}


class Calendar(NamedTuple):
    shifts: list[Interval]
    leave: list[Interval]
    booked: list[Interval]


async def calendar(conn: Connection, pid: uuid.UUID, window: Interval, *, booked: bool) -> Calendar | None:
    """A practitioner's shifts, approved leave and (if ``booked``) booked time overlapping ``window``,
    read in one statement (so from one snapshot); None if there is no such practitioner."""
    row = await conn.fetchrow(
        """SELECT
             ARRAY(SELECT during FROM shift WHERE practitioner_id = p.id AND during && $2) AS shifts,
             ARRAY(SELECT during FROM leave_request
                   WHERE practitioner_id = p.id AND status = 'approved' AND during && $2) AS leave,
             CASE WHEN $3 THEN ARRAY(SELECT during FROM booked_time WHERE practitioner_id = p.id AND during && $2)
             END AS booked
           FROM practitioner p WHERE p.id = $1""",
        pid,
        _range(window),
        booked,
    )
    if row is None:
        return None
    return Calendar(
        [_interval(r) for r in row["shifts"]],
        [_interval(r) for r in row["leave"]],
        [_interval(r) for r in row["booked"] or ()],
    )


async def approved_leave(conn: Connection, pid: uuid.UUID, window: Interval) -> list[Interval]:
    rows = await conn.fetch(
        "SELECT during FROM leave_request WHERE practitioner_id = $1 AND status = 'approved' AND during && $2",
        pid,
        _range(window),
    )
    return [_interval(r["during"]) for r in rows]


async def shift_intervals(conn: Connection, pid: uuid.UUID, window: Interval) -> list[Interval]:
    rows = await conn.fetch("SELECT during FROM shift WHERE practitioner_id = $1 AND during && $2", pid, _range(window))
    return [_interval(r["during"]) for r in rows]


async def hold_booked(conn: Connection, appointment_id: uuid.UUID, pid: uuid.UUID, during: Interval) -> None:
    """Remember (or move) the time an appointment takes from a practitioner."""
    await conn.execute(
        """INSERT INTO booked_time (appointment_id, practitioner_id, during) VALUES ($1, $2, $3)
           ON CONFLICT (appointment_id) DO UPDATE SET during = EXCLUDED.during, learned_at = now()""",
        appointment_id,
        pid,
        _range(during),
    )


async def release_booked(conn: Connection, appointment_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM booked_time WHERE appointment_id = $1", appointment_id)


async def booked_intervals(conn: Connection, pid: uuid.UUID, window: Interval) -> list[Interval]:
    rows = await conn.fetch(
        "SELECT during FROM booked_time WHERE practitioner_id = $1 AND during && $2", pid, _range(window)
    )
    return [_interval(r["during"]) for r in rows]
