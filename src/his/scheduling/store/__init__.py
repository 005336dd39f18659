"""Tables and queries of the scheduling service: its ports (``his.scheduling.ports``) on
PostgreSQL. The exclusion constraints of ``appointment`` and the unique index of open waitlist
entries decide between concurrent writers; their refusals become the domain's errors."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
from asyncpg import Range

from his.clients.replica import KnownPatients
from his.kernel.db import Connection, Record, Unit, UnitOfWork, UnitsOn
from his.kernel.intervals import Interval
from his.scheduling.domain import (
    HOLDING,
    Appointment,
    CollisionError,
    NewAppointment,
    Offer,
    Status,
    WaitlistDuplicateError,
    WaitlistEntry,
    WaitlistStatus,
)

COLUMNS = "id, patient_id, practitioner_id, service, during, status, version, booked_by, created_at, updated_at"
_HOLDING = [s.value for s in HOLDING]


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


class PgAppointments:
    """Scheduling's ``Appointments`` on one connection of a unit of work.

    An appointment is written without a savepoint and with ``RETURNING`` (no read-back): an
    exclusion violation aborts the transaction, and the appointment collided with is looked up
    after the rollback, in a fresh statement (``colliding``), instead of under a savepoint on
    every write (docs/performance.md)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(self, new: NewAppointment, at: datetime) -> Appointment:
        """Insert a booked appointment; the exclusion constraints decide between concurrent
        requests (``CollisionError`` without details: see ``colliding``)."""
        try:
            saved = await self.conn.fetchrow(
                f"""INSERT INTO appointment (id, patient_id, practitioner_id, service, during, status, booked_by,
                                             created_at, updated_at)
                    VALUES ($1, $2, $3, $4, $5, 'booked', $6, $7, $7) RETURNING {COLUMNS}""",
                new.id,
                new.patient_id,
                new.practitioner_id,
                new.service,
                as_range(new.during),
                new.booked_by,
                at,
            )
        except asyncpg.ExclusionViolationError as exc:
            raise _collided(exc) from exc
        assert saved is not None
        return _appointment(saved)

    async def get(self, appointment_id: uuid.UUID, *, lock: bool = False) -> Appointment | None:
        row = await self.conn.fetchrow(
            f"SELECT {COLUMNS} FROM appointment WHERE id = $1{' FOR UPDATE' if lock else ''}", appointment_id
        )
        return _appointment(row) if row else None

    async def set_status(self, appointment: Appointment, status: Status, at: datetime) -> Appointment:
        try:
            row = await self.conn.fetchrow(
                f"""UPDATE appointment SET status = $2, version = version + 1, updated_at = $3 WHERE id = $1
                    RETURNING {COLUMNS}""",
                appointment.id,
                status.value,
                at,
            )
        except asyncpg.ExclusionViolationError as exc:  # back to a state that holds time: as a booking
            raise _collided(exc) from exc
        assert row is not None
        return _appointment(row)

    async def move(self, appointment: Appointment, during: Interval, at: datetime) -> Appointment:
        """Give an appointment new times (``CollisionError`` as for ``add``)."""
        try:
            moved = await self.conn.fetchrow(
                f"""UPDATE appointment SET during = $2, version = version + 1, updated_at = $3 WHERE id = $1
                    RETURNING {COLUMNS}""",
                appointment.id,
                as_range(during),
                at,
            )
        except asyncpg.ExclusionViolationError as exc:
            raise _collided(exc) from exc
        assert moved is not None
        return _appointment(moved)

    async def busy(self, practitioner_id: uuid.UUID, window: Interval) -> list[Interval]:
        rows = await self.conn.fetch(
            "SELECT during FROM appointment WHERE practitioner_id = $1 AND during && $2 AND status = ANY($3::text[])",
            practitioner_id,
            as_range(window),
            _HOLDING,
        )
        return [as_interval(r["during"]) for r in rows]

    async def of_patient(self, patient_id: uuid.UUID, limit: int) -> list[Appointment]:
        rows = await self.conn.fetch(
            f"SELECT {COLUMNS} FROM appointment WHERE patient_id = $1 ORDER BY lower(during) DESC LIMIT $2",
            patient_id,
            limit,
        )
        return [_appointment(r) for r in rows]

    async def of_practitioner(self, practitioner_id: uuid.UUID, window: Interval, limit: int) -> list[Appointment]:
        rows = await self.conn.fetch(
            f"""SELECT {COLUMNS} FROM appointment
                WHERE practitioner_id = $1 AND lower(during) >= $2 AND lower(during) < $3
                ORDER BY lower(during), id LIMIT $4""",
            practitioner_id,
            window.start,
            window.end,
            limit,
        )
        return [_appointment(r) for r in rows]

    async def colliding(self, who: str, wanted: NewAppointment | Appointment) -> Appointment | None:
        """Run after the refused write's transaction rolled back: the other appointment is
        committed (the constraint waits for a concurrent writer's outcome); if it was cancelled or
        moved meanwhile, there is none."""
        party = {"patient": "patient_id", "practitioner": "practitioner_id"}[who]
        other = await self.conn.fetchrow(
            f"""SELECT {COLUMNS} FROM appointment
                WHERE {party} = $1 AND during && $2 AND status = ANY($3::text[]) AND id <> $4
                ORDER BY lower(during) LIMIT 1""",
            wanted.patient_id if who == "patient" else wanted.practitioner_id,
            as_range(wanted.during),
            _HOLDING,
            wanted.id,
        )
        return _appointment(other) if other else None


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


class PgWaitlist:
    """Scheduling's ``Waitlist`` on one connection of a unit of work; the unique index
    ``waitlist_one_open_entry`` keeps one open entry per patient, practitioner and service."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(
        self,
        *,
        entry_id: uuid.UUID,
        patient_id: uuid.UUID,
        practitioner_id: uuid.UUID,
        service: str,
        created_by: uuid.UUID,
        at: datetime,
    ) -> WaitlistEntry:
        try:
            row = await self.conn.fetchrow(
                f"""INSERT INTO waitlist_entry (id, patient_id, practitioner_id, service, status, created_by,
                                                created_at)
                    VALUES ($1, $2, $3, $4, 'waiting', $5, $6) RETURNING {WAITLIST_COLUMNS}""",
                entry_id,
                patient_id,
                practitioner_id,
                service,
                created_by,
                at,
            )
        except asyncpg.UniqueViolationError as exc:
            raise WaitlistDuplicateError from exc
        assert row is not None
        return _entry(row)

    async def get(self, entry_id: uuid.UUID, *, lock: bool = False) -> WaitlistEntry | None:
        row = await self.conn.fetchrow(
            f"SELECT {WAITLIST_COLUMNS} FROM waitlist_entry WHERE id = $1{' FOR UPDATE' if lock else ''}", entry_id
        )
        return _entry(row) if row else None

    async def of_patient(self, patient_id: uuid.UUID) -> list[WaitlistEntry]:
        rows = await self.conn.fetch(
            f"SELECT {WAITLIST_COLUMNS} FROM waitlist_entry WHERE patient_id = $1 ORDER BY created_at DESC LIMIT 100",
            patient_id,
        )
        return [_entry(r) for r in rows]

    async def waiting_for(self, practitioner_id: uuid.UUID) -> list[WaitlistEntry]:
        rows = await self.conn.fetch(
            f"""SELECT {WAITLIST_COLUMNS} FROM waitlist_entry
                WHERE practitioner_id = $1 AND status = 'waiting'
                ORDER BY created_at, id LIMIT 50 FOR UPDATE SKIP LOCKED""",
            practitioner_id,
        )
        return [_entry(r) for r in rows]

    async def set_status(self, entry_id: uuid.UUID, status: WaitlistStatus, offer: Offer | None = None) -> None:
        await self.conn.execute(
            "UPDATE waitlist_entry SET status = $2, offered_during = $3, offer_expires_at = $4 WHERE id = $1",
            entry_id,
            status.value,
            as_range(offer.slot) if offer else None,
            offer.expires_at if offer else None,
        )


class SchedulingUnit(Unit):
    """A unit of work of scheduling on PostgreSQL."""

    def __init__(self, uow: UnitOfWork) -> None:
        super().__init__(uow)
        self.appointments = PgAppointments(self.conn)
        self.waitlist = PgWaitlist(self.conn)
        self.patients = KnownPatients(self.conn)


class SchedulingStore(UnitsOn[SchedulingUnit]):
    """Scheduling's units of work (``his.scheduling.ports.SchedulingUnits``) on its database."""

    def unit(self, uow: UnitOfWork) -> SchedulingUnit:
        return SchedulingUnit(uow)

    def clock(self) -> datetime:
        """The moment by the clock the units run by (the database's, ``Database.clock``)."""
        return self.db.clock()
