"""Tables and queries of the practitioners service: its ports (``his.practitioners.ports``) on
PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
from asyncpg import Range

from his.kernel.db import Connection, Record, Unit, UnitOfWork, UnitsOn, savepoint
from his.kernel.intervals import Interval
from his.practitioners.domain import (
    AccountLinkedError,
    Calendar,
    LeaveRequest,
    LeaveStatus,
    Practitioner,
    Shift,
    ShiftOverlapError,
)

PRACTITIONER_COLUMNS = "id, full_name, specialty, user_id, created_at"
LEAVE_COLUMNS = "id, during, status, created_at, decided_at"


def _range(i: Interval) -> Range[datetime]:
    return Range(i.start, i.end, lower_inc=True, upper_inc=False)


def _interval(r: Range[datetime]) -> Interval:
    assert r.lower is not None and r.upper is not None  # the table forbids unbounded ranges
    return Interval(r.lower, r.upper)


def _practitioner(row: Record) -> Practitioner:
    return Practitioner(**dict(row))


def _leave(row: Record) -> LeaveRequest:
    return LeaveRequest(
        row["id"], LeaveStatus(row["status"]), _interval(row["during"]), row["created_at"], row["decided_at"]
    )


class PgProfiles:
    """The practitioners' ``Profiles`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(self, *, full_name: str, specialty: str, user_id: uuid.UUID | None, at: datetime) -> Practitioner:
        try:
            row = await self.conn.fetchrow(
                f"""INSERT INTO practitioner (id, full_name, specialty, user_id, created_at)
                    VALUES ($1, $2, $3, $4, $5) RETURNING {PRACTITIONER_COLUMNS}""",
                uuid.uuid4(),
                full_name,
                specialty,
                user_id,
                at,
            )
        except asyncpg.UniqueViolationError as exc:
            raise AccountLinkedError(str(user_id)) from exc
        assert row is not None
        return _practitioner(row)

    async def get(self, practitioner_id: uuid.UUID) -> Practitioner | None:
        row = await self.conn.fetchrow(
            f"SELECT {PRACTITIONER_COLUMNS} FROM practitioner WHERE id = $1", practitioner_id
        )
        return _practitioner(row) if row else None

    async def find(self, *, specialty: str | None, limit: int) -> list[Practitioner]:
        rows = await self.conn.fetch(
            f"""SELECT {PRACTITIONER_COLUMNS} FROM practitioner
                WHERE $1::text IS NULL OR specialty = $1 ORDER BY full_name, id LIMIT $2""",
            specialty,
            limit,
        )
        return [_practitioner(r) for r in rows]


class PgShifts:
    """The practitioners' ``Shifts`` on one connection of a unit of work; the exclusion
    constraint ``shift_no_overlap`` keeps one person's shifts apart, also under races."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(self, practitioner_id: uuid.UUID, during: Interval, actor: uuid.UUID) -> Shift:
        sid = uuid.uuid4()
        try:
            async with savepoint(self.conn):  # the conflict lookup below must still run
                await self.conn.execute(
                    "INSERT INTO shift (id, practitioner_id, during, created_by) VALUES ($1, $2, $3, $4)",
                    sid,
                    practitioner_id,
                    _range(during),
                    actor,
                )
        except asyncpg.ExclusionViolationError as exc:
            other = await self.conn.fetchrow(
                "SELECT id, during FROM shift WHERE practitioner_id = $1 AND during && $2 ORDER BY during LIMIT 1",
                practitioner_id,
                _range(during),
            )
            raise ShiftOverlapError(Shift(other["id"], _interval(other["during"])) if other else None) from exc
        return Shift(sid, during)

    async def overlapping(self, practitioner_id: uuid.UUID, window: Interval) -> list[Shift]:
        rows = await self.conn.fetch(
            "SELECT id, during FROM shift WHERE practitioner_id = $1 AND during && $2 ORDER BY during",
            practitioner_id,
            _range(window),
        )
        return [Shift(r["id"], _interval(r["during"])) for r in rows]


class PgLeaveRequests:
    """The practitioners' ``LeaveRequests`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(self, practitioner_id: uuid.UUID, during: Interval, actor: uuid.UUID, at: datetime) -> LeaveRequest:
        row = await self.conn.fetchrow(
            f"""INSERT INTO leave_request (id, practitioner_id, during, status, requested_by, created_at)
                VALUES ($1, $2, $3, 'requested', $4, $5) RETURNING {LEAVE_COLUMNS}""",
            uuid.uuid4(),
            practitioner_id,
            _range(during),
            actor,
            at,
        )
        assert row is not None
        return _leave(row)

    async def get(self, practitioner_id: uuid.UUID, leave_id: uuid.UUID, *, lock: bool = False) -> LeaveRequest | None:
        """The practitioner's leave request; ``lock`` holds its row until the transaction ends."""
        row = await self.conn.fetchrow(
            f"""SELECT {LEAVE_COLUMNS} FROM leave_request
                WHERE id = $1 AND practitioner_id = $2{" FOR UPDATE" if lock else ""}""",
            leave_id,
            practitioner_id,
        )
        return None if row is None else _leave(row)

    async def decide(self, leave: LeaveRequest, status: LeaveStatus, actor: uuid.UUID, at: datetime) -> LeaveRequest:
        row = await self.conn.fetchrow(
            f"""UPDATE leave_request SET status = $2, decided_by = $3, decided_at = $4 WHERE id = $1
                RETURNING {LEAVE_COLUMNS}""",
            leave.id,
            status.value,
            actor,
            at,
        )
        assert row is not None
        return _leave(row)

    async def of(self, practitioner_id: uuid.UUID, *, limit: int = 200) -> list[LeaveRequest]:
        rows = await self.conn.fetch(
            f"""SELECT {LEAVE_COLUMNS} FROM leave_request
                WHERE practitioner_id = $1 ORDER BY lower(during) DESC LIMIT $2""",
            practitioner_id,
            limit,
        )
        return [_leave(r) for r in rows]


class PgBookedTime:
    """The practitioners' ``BookedTime`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def hold(self, appointment_id: uuid.UUID, practitioner_id: uuid.UUID, during: Interval) -> None:
        await self.conn.execute(
            """INSERT INTO booked_time (appointment_id, practitioner_id, during) VALUES ($1, $2, $3)
               ON CONFLICT (appointment_id) DO UPDATE SET during = EXCLUDED.during, learned_at = now()""",
            appointment_id,
            practitioner_id,
            _range(during),
        )

    async def release(self, appointment_id: uuid.UUID) -> None:
        await self.conn.execute("DELETE FROM booked_time WHERE appointment_id = $1", appointment_id)


class PgCalendars:
    """The practitioners' ``Calendars`` on one connection (of a unit of work, or a pooled one:
    one statement needs no transaction)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def of(self, practitioner_id: uuid.UUID, window: Interval, *, booked: bool) -> Calendar | None:
        """Read in one statement, so from one snapshot."""
        row = await self.conn.fetchrow(
            """SELECT
                 ARRAY(SELECT during FROM shift WHERE practitioner_id = p.id AND during && $2) AS shifts,
                 ARRAY(SELECT during FROM leave_request
                       WHERE practitioner_id = p.id AND status = 'approved' AND during && $2) AS leave,
                 CASE WHEN $3 THEN ARRAY(SELECT during FROM booked_time WHERE practitioner_id = p.id AND during && $2)
                 END AS booked
               FROM practitioner p WHERE p.id = $1""",
            practitioner_id,
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


class PractitionersUnit(Unit):
    """A unit of work of the practitioners service on PostgreSQL."""

    def __init__(self, uow: UnitOfWork) -> None:
        super().__init__(uow)
        self.profiles = PgProfiles(self.conn)
        self.shifts = PgShifts(self.conn)
        self.leave = PgLeaveRequests(self.conn)
        self.booked = PgBookedTime(self.conn)
        self.calendars = PgCalendars(self.conn)


class PractitionersStore(UnitsOn[PractitionersUnit]):
    """The practitioners' units of work (``his.practitioners.ports.PractitionersUnits``) on its
    database."""

    def unit(self, uow: UnitOfWork) -> PractitionersUnit:
        return PractitionersUnit(uow)
