"""Tables and queries of the admissions service."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

import asyncpg

from his.admissions.domain import (
    Admission,
    AdmissionStatus,
    Bed,
    BedCharge,
    BedState,
    BedStay,
    Stay,
    Ward,
    WardChanges,
)
from his.kernel.db import Connection, Record

ADMISSION_COLUMNS = """id, patient_id, practitioner_id, ward_id, bed_id, status, admitted_at, discharged_at,
                       admitted_by, discharged_by, version"""
BED_COLUMNS = "b.id, b.ward_id, b.room_id, r.label AS room, b.label, b.state, b.version, b.updated_at"
WARD_COLUMNS = "id, name, ward_type, daily_rate, currency, created_at, version, updated_at"
CHARGE_COLUMNS = "id, admission_id, night, ward_id, ward_type, amount, currency, posted_at"


class AlreadyAdmittedError(Exception):
    """The patient already has an active admission."""


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


async def insert_ward(
    conn: Connection,
    *,
    ward_id: uuid.UUID,
    name: str,
    ward_type: str,
    daily_rate: Decimal,
    currency: str,
    created_by: uuid.UUID,
    beds: list[tuple[str, str]],
) -> Ward:
    """A ward with its rooms and beds (``beds``: room label and bed label of each)."""
    saved = await conn.fetchrow(
        f"""INSERT INTO ward (id, name, ward_type, daily_rate, currency, created_by)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {WARD_COLUMNS}""",
        ward_id,
        name,
        ward_type,
        daily_rate,
        currency,
        created_by,
    )
    rooms = {label: uuid.uuid4() for label in dict.fromkeys(room for room, _ in beds)}
    await conn.executemany(
        "INSERT INTO room (id, ward_id, label) VALUES ($1, $2, $3)",
        [(rid, ward_id, label) for label, rid in rooms.items()],
    )
    await conn.executemany(
        "INSERT INTO bed (id, ward_id, room_id, label) VALUES ($1, $2, $3, $4)",
        [(uuid.uuid4(), ward_id, rooms[room], label) for room, label in beds],
    )
    assert saved is not None
    return _ward(saved)


async def get_ward(conn: Connection, ward_id: uuid.UUID) -> Ward | None:
    row = await conn.fetchrow(f"SELECT {WARD_COLUMNS} FROM ward WHERE id = $1", ward_id)
    return _ward(row) if row is not None else None


async def lock_ward(conn: Connection, ward_id: uuid.UUID) -> Ward | None:
    row = await conn.fetchrow(f"SELECT {WARD_COLUMNS} FROM ward WHERE id = $1 FOR UPDATE", ward_id)
    return _ward(row) if row is not None else None


async def update_ward(conn: Connection, ward_id: uuid.UUID, changes: WardChanges, actor: uuid.UUID) -> Ward:
    """Apply the corrected ward fields (those not None); bumps its version."""
    row = await conn.fetchrow(
        f"""UPDATE ward SET name = COALESCE($2, name), ward_type = COALESCE($3, ward_type),
                   daily_rate = COALESCE($4, daily_rate), currency = COALESCE($5, currency),
                   version = version + 1, updated_at = now(), updated_by = $6
            WHERE id = $1 RETURNING {WARD_COLUMNS}""",
        ward_id,
        changes.name,
        changes.ward_type,
        changes.daily_rate,
        changes.currency,
        actor,
    )
    assert row is not None
    return _ward(row)


async def wards(conn: Connection, limit: int = 500) -> list[Ward]:
    rows = await conn.fetch(f"SELECT {WARD_COLUMNS} FROM ward ORDER BY name, id LIMIT $1", limit)
    return [_ward(r) for r in rows]


async def bed_counts(conn: Connection, ward_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """Beds per state for each ward (every state present, zero when none)."""
    out: dict[uuid.UUID, dict[str, int]] = {w: {s.value: 0 for s in BedState} for w in ward_ids}
    rows = await conn.fetch(
        "SELECT ward_id, state, count(*) AS n FROM bed WHERE ward_id = ANY($1::uuid[]) GROUP BY ward_id, state",
        ward_ids,
    )
    for r in rows:
        out[r["ward_id"]][r["state"]] = r["n"]
    return out


async def rooms_of(conn: Connection, ward_id: uuid.UUID) -> list[str]:
    rows = await conn.fetch("SELECT label FROM room WHERE ward_id = $1 ORDER BY length(label), label", ward_id)
    return [r["label"] for r in rows]


async def beds(conn: Connection, ward_id: uuid.UUID | None, state: BedState | None, limit: int) -> list[Bed]:
    rows = await conn.fetch(
        f"""SELECT {BED_COLUMNS} FROM bed b JOIN room r ON r.id = b.room_id
            WHERE ($1::uuid IS NULL OR b.ward_id = $1) AND ($2::text IS NULL OR b.state = $2)
            ORDER BY b.ward_id, length(b.label), b.label LIMIT $3""",
        ward_id,
        state.value if state else None,
        limit,
    )
    return [_bed(r) for r in rows]


async def get_bed(conn: Connection, bed_id: uuid.UUID, *, lock: bool = False) -> Bed | None:
    row = await conn.fetchrow(
        f"SELECT {BED_COLUMNS} FROM bed b JOIN room r ON r.id = b.room_id WHERE b.id = $1"
        + (" FOR UPDATE OF b" if lock else ""),
        bed_id,
    )
    return _bed(row) if row is not None else None


async def claim_free_bed(conn: Connection, ward_id: uuid.UUID) -> uuid.UUID | None:
    """Lock one available bed of the ward, skipping beds other transactions are taking."""
    bed_id: uuid.UUID | None = await conn.fetchval(
        """SELECT id FROM bed WHERE ward_id = $1 AND state = 'available'
           ORDER BY length(label), label LIMIT 1 FOR UPDATE SKIP LOCKED""",
        ward_id,
    )
    return bed_id


async def set_bed_state(conn: Connection, bed_id: uuid.UUID, state: BedState) -> Bed:
    await conn.execute(
        "UPDATE bed SET state = $2, version = version + 1, updated_at = now() WHERE id = $1", bed_id, state.value
    )
    bed = await get_bed(conn, bed_id)
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


async def active_admission_of(conn: Connection, patient_id: uuid.UUID) -> uuid.UUID | None:
    found: uuid.UUID | None = await conn.fetchval(
        "SELECT id FROM admission WHERE patient_id = $1 AND status = 'active'", patient_id
    )
    return found


async def insert_admission(
    conn: Connection,
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
    active admission of the patient (``AlreadyAdmittedError``) or of the bed."""
    try:
        saved = await conn.fetchrow(
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
        if exc.constraint_name == "admission_one_per_patient":
            raise AlreadyAdmittedError from exc
        raise
    assert saved is not None
    await start_stay(conn, admission_id, ward_id, bed_id, admitted_at)
    return _admission(saved)


async def start_stay(conn: Connection, aid: uuid.UUID, ward_id: uuid.UUID, bed_id: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO bed_stay (admission_id, ward_id, bed_id, started_at) VALUES ($1, $2, $3, $4)",
        aid,
        ward_id,
        bed_id,
        at,
    )


async def end_stay(conn: Connection, aid: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "UPDATE bed_stay SET ended_at = greatest($2, started_at) WHERE admission_id = $1 AND ended_at IS NULL", aid, at
    )


async def stays(conn: Connection, aid: uuid.UUID) -> list[Stay[uuid.UUID]]:
    rows = await conn.fetch(
        "SELECT ward_id, started_at, ended_at FROM bed_stay WHERE admission_id = $1 ORDER BY started_at, id", aid
    )
    return [Stay(r["ward_id"], r["started_at"], r["ended_at"]) for r in rows]


async def stay_history(conn: Connection, aid: uuid.UUID) -> list[BedStay]:
    rows = await conn.fetch(
        """SELECT s.ward_id, s.bed_id, b.label AS bed, s.started_at, s.ended_at FROM bed_stay s
           JOIN bed b ON b.id = s.bed_id WHERE s.admission_id = $1 ORDER BY s.started_at, s.id""",
        aid,
    )
    return [BedStay(r["ward_id"], r["bed_id"], r["bed"], r["started_at"], r["ended_at"]) for r in rows]


async def get_admission(conn: Connection, aid: uuid.UUID, *, lock: bool = False) -> Admission | None:
    row = await conn.fetchrow(
        f"SELECT {ADMISSION_COLUMNS} FROM admission WHERE id = $1{' FOR UPDATE' if lock else ''}", aid
    )
    return _admission(row) if row is not None else None


async def move_admission(conn: Connection, aid: uuid.UUID, ward_id: uuid.UUID, bed_id: uuid.UUID) -> Admission:
    row = await conn.fetchrow(
        f"""UPDATE admission SET ward_id = $2, bed_id = $3, version = version + 1 WHERE id = $1
            RETURNING {ADMISSION_COLUMNS}""",
        aid,
        ward_id,
        bed_id,
    )
    assert row is not None
    return _admission(row)


async def mark_discharged(conn: Connection, aid: uuid.UUID, at: datetime, by: uuid.UUID) -> Admission:
    row = await conn.fetchrow(
        f"""UPDATE admission SET status = 'discharged', discharged_at = greatest($2, admitted_at),
                discharged_by = $3, version = version + 1
            WHERE id = $1 RETURNING {ADMISSION_COLUMNS}""",
        aid,
        at,
        by,
    )
    assert row is not None
    return _admission(row)


async def admissions(
    conn: Connection, patient_id: uuid.UUID | None, active: bool | None, limit: int
) -> list[Admission]:
    rows = await conn.fetch(
        f"""SELECT {ADMISSION_COLUMNS} FROM admission
            WHERE ($1::uuid IS NULL OR patient_id = $1)
              AND ($2::boolean IS NULL OR (status = 'active') = $2)
            ORDER BY admitted_at DESC, id LIMIT $3""",
        patient_id,
        active,
        limit,
    )
    return [_admission(r) for r in rows]


async def due_admissions(conn: Connection, before: datetime) -> list[uuid.UUID]:
    """Active admissions that began before ``before`` (the end of the night being charged)."""
    rows = await conn.fetch(
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


async def charged_nights(conn: Connection, aid: uuid.UUID) -> set[date]:
    rows = await conn.fetch("SELECT night FROM bed_charge WHERE admission_id = $1", aid)
    return {r["night"] for r in rows}


async def insert_charge(
    conn: Connection,
    *,
    charge_id: uuid.UUID,
    admission_id: uuid.UUID,
    night: date,
    ward_id: uuid.UUID,
    ward_type: str,
    amount: Decimal,
    currency: str,
) -> BedCharge | None:
    """Post a night's charge; None if that night of the admission was already charged."""
    row = await conn.fetchrow(
        f"""INSERT INTO bed_charge (id, admission_id, night, ward_id, ward_type, amount, currency)
            VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (admission_id, night) DO NOTHING
            RETURNING {CHARGE_COLUMNS}""",
        charge_id,
        admission_id,
        night,
        ward_id,
        ward_type,
        amount,
        currency,
    )
    return _charge(row) if row is not None else None


async def charges_of(conn: Connection, aid: uuid.UUID) -> list[BedCharge]:
    rows = await conn.fetch(
        f"SELECT {CHARGE_COLUMNS} FROM bed_charge WHERE admission_id = $1 ORDER BY night",
        aid,
    )
    return [_charge(r) for r in rows]


async def count_charges(conn: Connection, aid: uuid.UUID) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM bed_charge WHERE admission_id = $1", aid)
    return n
