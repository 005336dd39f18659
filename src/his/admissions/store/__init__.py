"""Tables and queries of the admissions service: its ports (``his.admissions.ports``) on PostgreSQL.

Row locks order concurrent work: an admission locks one free bed (``FOR UPDATE SKIP LOCKED``), a
transfer or discharge its admission and then its beds. The partial unique indexes are the last word
on one active admission per bed and per patient, and ``UNIQUE (admission_id, night)`` on one charge
per night; the first two surface as the domain's ``BedTakenError`` and ``AlreadyAdmittedError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal

import asyncpg

from his.admissions.domain import (
    Admission,
    AdmissionStatus,
    AlreadyAdmittedError,
    Bed,
    BedCharge,
    BedState,
    BedStay,
    BedTakenError,
    Ward,
    WardChanges,
)
from his.kernel.db import Connection, Record, Unit, UnitOfWork, UnitsOn

ADMISSION_COLUMNS = """id, patient_id, practitioner_id, ward_id, bed_id, status, admitted_at, discharged_at,
                       admitted_by, discharged_by, version"""
BED_COLUMNS = "b.id, b.ward_id, b.room_id, r.label AS room, b.label, b.state, b.version, b.updated_at"
WARD_COLUMNS = "id, name, ward_type, daily_rate, currency, created_at, version, updated_at"
CHARGE_COLUMNS = "id, admission_id, night, ward_id, ward_type, amount, currency, posted_at"
#: The partial unique indexes that keep one active admission per bed and per patient.
ONE_PER_BED, ONE_PER_PATIENT = "admission_one_per_bed", "admission_one_per_patient"


def _refusal(exc: asyncpg.UniqueViolationError) -> Exception | None:
    """The domain's error for the unique index of active admissions an admission ran into."""
    if exc.constraint_name == ONE_PER_PATIENT:
        return AlreadyAdmittedError()
    if exc.constraint_name == ONE_PER_BED:
        return BedTakenError()
    return None


# --- wards and beds ------------------------------------------------------------------------------


def _ward(row: Record) -> Ward:
    return Ward(
        id=row["id"],
        name=row["name"],
        ward_type=row["ward_type"],
        daily_rate=row["daily_rate"],
        currency=row["currency"],
        created_at=row["created_at"],
        version=row["version"],
        updated_at=row["updated_at"],
    )


def _bed(row: Record) -> Bed:
    return Bed(
        id=row["id"],
        ward_id=row["ward_id"],
        room_id=row["room_id"],
        room=row["room"],
        label=row["label"],
        state=BedState(row["state"]),
        version=row["version"],
        updated_at=row["updated_at"],
    )


class PgWards:
    """The admissions service's ``Wards`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(
        self,
        *,
        ward_id: uuid.UUID,
        name: str,
        ward_type: str,
        daily_rate: Decimal,
        currency: str,
        created_by: uuid.UUID,
        beds: Sequence[tuple[str, str]],
        at: datetime,
    ) -> Ward:
        """A ward with its rooms and beds (``beds``: room label and bed label of each)."""
        saved = await self.conn.fetchrow(
            f"""INSERT INTO ward (id, name, ward_type, daily_rate, currency, created_by, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {WARD_COLUMNS}""",
            ward_id,
            name,
            ward_type,
            daily_rate,
            currency,
            created_by,
            at,
        )
        rooms = {label: uuid.uuid4() for label in dict.fromkeys(room for room, _ in beds)}
        await self.conn.executemany(
            "INSERT INTO room (id, ward_id, label) VALUES ($1, $2, $3)",
            [(rid, ward_id, label) for label, rid in rooms.items()],
        )
        await self.conn.executemany(
            "INSERT INTO bed (id, ward_id, room_id, label, updated_at) VALUES ($1, $2, $3, $4, $5)",
            [(uuid.uuid4(), ward_id, rooms[room], label, at) for room, label in beds],
        )
        assert saved is not None
        return _ward(saved)

    async def get(self, ward_id: uuid.UUID, *, lock: bool = False) -> Ward | None:
        row = await self.conn.fetchrow(
            f"SELECT {WARD_COLUMNS} FROM ward WHERE id = $1{' FOR UPDATE' if lock else ''}", ward_id
        )
        return _ward(row) if row is not None else None

    async def update(self, ward_id: uuid.UUID, changes: WardChanges, actor: uuid.UUID, at: datetime) -> Ward:
        """Apply the corrected ward fields (those not None); bumps its version."""
        row = await self.conn.fetchrow(
            f"""UPDATE ward SET name = COALESCE($2, name), ward_type = COALESCE($3, ward_type),
                       daily_rate = COALESCE($4, daily_rate), currency = COALESCE($5, currency),
                       version = version + 1, updated_at = $7, updated_by = $6
                WHERE id = $1 RETURNING {WARD_COLUMNS}""",
            ward_id,
            changes.name,
            changes.ward_type,
            changes.daily_rate,
            changes.currency,
            actor,
            at,
        )
        assert row is not None
        return _ward(row)

    async def all(self, limit: int = 500) -> list[Ward]:
        rows = await self.conn.fetch(f"SELECT {WARD_COLUMNS} FROM ward ORDER BY name, id LIMIT $1", limit)
        return [_ward(r) for r in rows]

    async def rooms(self, ward_id: uuid.UUID) -> list[str]:
        rows = await self.conn.fetch("SELECT label FROM room WHERE ward_id = $1 ORDER BY length(label), label", ward_id)
        return [r["label"] for r in rows]


class PgBeds:
    """The admissions service's ``Beds`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def counts(self, ward_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
        """Beds per state for each ward (every state present, zero when none)."""
        out: dict[uuid.UUID, dict[str, int]] = {w: {s.value: 0 for s in BedState} for w in ward_ids}
        rows = await self.conn.fetch(
            "SELECT ward_id, state, count(*) AS n FROM bed WHERE ward_id = ANY($1::uuid[]) GROUP BY ward_id, state",
            list(ward_ids),
        )
        for r in rows:
            out[r["ward_id"]][r["state"]] = r["n"]
        return out

    async def find(self, ward_id: uuid.UUID | None, state: BedState | None, limit: int) -> list[Bed]:
        rows = await self.conn.fetch(
            f"""SELECT {BED_COLUMNS} FROM bed b JOIN room r ON r.id = b.room_id
                WHERE ($1::uuid IS NULL OR b.ward_id = $1) AND ($2::text IS NULL OR b.state = $2)
                ORDER BY b.ward_id, length(b.label), b.label LIMIT $3""",
            ward_id,
            state.value if state else None,
            limit,
        )
        return [_bed(r) for r in rows]

    async def get(self, bed_id: uuid.UUID, *, lock: bool = False) -> Bed | None:
        row = await self.conn.fetchrow(
            f"SELECT {BED_COLUMNS} FROM bed b JOIN room r ON r.id = b.room_id WHERE b.id = $1"
            + (" FOR UPDATE OF b" if lock else ""),
            bed_id,
        )
        return _bed(row) if row is not None else None

    async def claim_free(self, ward_id: uuid.UUID) -> uuid.UUID | None:
        """Lock one available bed of the ward, skipping beds other transactions are taking."""
        bed_id: uuid.UUID | None = await self.conn.fetchval(
            """SELECT id FROM bed WHERE ward_id = $1 AND state = 'available'
               ORDER BY length(label), label LIMIT 1 FOR UPDATE SKIP LOCKED""",
            ward_id,
        )
        return bed_id

    async def set_state(self, bed_id: uuid.UUID, state: BedState, at: datetime) -> Bed:
        await self.conn.execute(
            "UPDATE bed SET state = $2, version = version + 1, updated_at = $3 WHERE id = $1", bed_id, str(state), at
        )
        bed = await self.get(bed_id)
        assert bed is not None
        return bed


# --- admissions ----------------------------------------------------------------------------------


def _admission(row: Record) -> Admission:
    return Admission(
        id=row["id"],
        patient_id=row["patient_id"],
        practitioner_id=row["practitioner_id"],
        ward_id=row["ward_id"],
        bed_id=row["bed_id"],
        status=AdmissionStatus(row["status"]),
        admitted_at=row["admitted_at"],
        discharged_at=row["discharged_at"],
        admitted_by=row["admitted_by"],
        discharged_by=row["discharged_by"],
        version=row["version"],
    )


class PgAdmissionRecords:
    """The admissions service's ``AdmissionRecords`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def active_of(self, patient_id: uuid.UUID) -> uuid.UUID | None:
        found: uuid.UUID | None = await self.conn.fetchval(
            "SELECT id FROM admission WHERE patient_id = $1 AND status = 'active'", patient_id
        )
        return found

    async def add(
        self,
        *,
        admission_id: uuid.UUID,
        patient_id: uuid.UUID,
        practitioner_id: uuid.UUID,
        ward_id: uuid.UUID,
        bed_id: uuid.UUID,
        admitted_at: datetime,
        admitted_by: uuid.UUID,
    ) -> Admission:
        """Insert an active admission and its first bed stay; the partial unique indexes refuse a second
        active admission of the patient (``AlreadyAdmittedError``) or of the bed (``BedTakenError``)."""
        try:
            saved = await self.conn.fetchrow(
                f"""INSERT INTO admission (id, patient_id, practitioner_id, ward_id, bed_id, admitted_at, admitted_by)
                    VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ADMISSION_COLUMNS}""",
                admission_id,
                patient_id,
                practitioner_id,
                ward_id,
                bed_id,
                admitted_at,
                admitted_by,
            )
        except asyncpg.UniqueViolationError as exc:
            if (refusal := _refusal(exc)) is None:
                raise
            raise refusal from exc
        assert saved is not None
        await self._start_stay(admission_id, ward_id, bed_id, admitted_at)
        return _admission(saved)

    async def _start_stay(self, aid: uuid.UUID, ward_id: uuid.UUID, bed_id: uuid.UUID, at: datetime) -> None:
        await self.conn.execute(
            "INSERT INTO bed_stay (admission_id, ward_id, bed_id, started_at) VALUES ($1, $2, $3, $4)",
            aid,
            ward_id,
            bed_id,
            at,
        )

    async def _end_stay(self, aid: uuid.UUID, at: datetime) -> None:
        await self.conn.execute(
            "UPDATE bed_stay SET ended_at = greatest($2, started_at) WHERE admission_id = $1 AND ended_at IS NULL",
            aid,
            at,
        )

    async def get(self, admission_id: uuid.UUID, *, lock: bool = False) -> Admission | None:
        row = await self.conn.fetchrow(
            f"SELECT {ADMISSION_COLUMNS} FROM admission WHERE id = $1{' FOR UPDATE' if lock else ''}", admission_id
        )
        return _admission(row) if row is not None else None

    async def move(self, admission_id: uuid.UUID, ward_id: uuid.UUID, bed_id: uuid.UUID, at: datetime) -> Admission:
        await self._end_stay(admission_id, at)
        await self._start_stay(admission_id, ward_id, bed_id, at)
        try:
            row = await self.conn.fetchrow(
                f"""UPDATE admission SET ward_id = $2, bed_id = $3, version = version + 1 WHERE id = $1
                    RETURNING {ADMISSION_COLUMNS}""",
                admission_id,
                ward_id,
                bed_id,
            )
        except asyncpg.UniqueViolationError as exc:
            if (refusal := _refusal(exc)) is None:
                raise
            raise refusal from exc
        assert row is not None
        return _admission(row)

    async def discharge(self, admission_id: uuid.UUID, at: datetime, by: uuid.UUID) -> Admission:
        row = await self.conn.fetchrow(
            f"""UPDATE admission SET status = 'discharged', discharged_at = greatest($2, admitted_at),
                    discharged_by = $3, version = version + 1
                WHERE id = $1 RETURNING {ADMISSION_COLUMNS}""",
            admission_id,
            at,
            by,
        )
        assert row is not None
        await self._end_stay(admission_id, at)
        return _admission(row)

    async def stays(self, admission_id: uuid.UUID) -> list[BedStay]:
        rows = await self.conn.fetch(
            """SELECT s.ward_id, s.bed_id, b.label AS bed, s.started_at, s.ended_at FROM bed_stay s
               JOIN bed b ON b.id = s.bed_id WHERE s.admission_id = $1 ORDER BY s.started_at, s.id""",
            admission_id,
        )
        return [BedStay(r["ward_id"], r["bed_id"], r["bed"], r["started_at"], r["ended_at"]) for r in rows]

    async def find(self, patient_id: uuid.UUID | None, active: bool | None, limit: int) -> list[Admission]:
        rows = await self.conn.fetch(
            f"""SELECT {ADMISSION_COLUMNS} FROM admission
                WHERE ($1::uuid IS NULL OR patient_id = $1)
                  AND ($2::boolean IS NULL OR (status = 'active') = $2)
                ORDER BY admitted_at DESC, id LIMIT $3""",
            patient_id,
            active,
            limit,
        )
        return [_admission(r) for r in rows]

    async def due(self, before: datetime) -> list[uuid.UUID]:
        """Active admissions that began before ``before`` (the end of the night being charged)."""
        rows = await self.conn.fetch(
            "SELECT id FROM admission WHERE status = 'active' AND admitted_at < $1 ORDER BY admitted_at, id", before
        )
        return [r["id"] for r in rows]


# --- bed charges ---------------------------------------------------------------------------------


def _charge(row: Record) -> BedCharge:
    return BedCharge(
        id=row["id"],
        admission_id=row["admission_id"],
        night=row["night"],
        ward_id=row["ward_id"],
        ward_type=row["ward_type"],
        amount=row["amount"],
        currency=row["currency"],
        posted_at=row["posted_at"],
    )


class PgBedCharges:
    """The admissions service's ``BedCharges`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def nights(self, admission_id: uuid.UUID) -> set[date]:
        rows = await self.conn.fetch("SELECT night FROM bed_charge WHERE admission_id = $1", admission_id)
        return {r["night"] for r in rows}

    async def add(
        self,
        *,
        charge_id: uuid.UUID,
        admission_id: uuid.UUID,
        night: date,
        ward_id: uuid.UUID,
        ward_type: str,
        amount: Decimal,
        currency: str,
        at: datetime,
    ) -> BedCharge | None:
        """Post a night's charge; None if that night of the admission was already charged."""
        row = await self.conn.fetchrow(
            f"""INSERT INTO bed_charge (id, admission_id, night, ward_id, ward_type, amount, currency, posted_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (admission_id, night) DO NOTHING
                RETURNING {CHARGE_COLUMNS}""",
            charge_id,
            admission_id,
            night,
            ward_id,
            ward_type,
            amount,
            currency,
            at,
        )
        return _charge(row) if row is not None else None

    async def of(self, admission_id: uuid.UUID) -> list[BedCharge]:
        rows = await self.conn.fetch(
            f"SELECT {CHARGE_COLUMNS} FROM bed_charge WHERE admission_id = $1 ORDER BY night",
            admission_id,
        )
        return [_charge(r) for r in rows]

    async def count(self, admission_id: uuid.UUID) -> int:
        n: int = await self.conn.fetchval("SELECT count(*) FROM bed_charge WHERE admission_id = $1", admission_id)
        return n


class AdmissionsUnit(Unit):
    """A unit of work of the admissions service on PostgreSQL."""

    def __init__(self, uow: UnitOfWork) -> None:
        super().__init__(uow)
        self.wards = PgWards(self.conn)
        self.beds = PgBeds(self.conn)
        self.admissions = PgAdmissionRecords(self.conn)
        self.charges = PgBedCharges(self.conn)


class AdmissionsStore(UnitsOn[AdmissionsUnit]):
    """The admissions service's units of work (``his.admissions.ports.AdmissionsUnits``) on its
    database."""

    def unit(self, uow: UnitOfWork) -> AdmissionsUnit:
        return AdmissionsUnit(uow)
