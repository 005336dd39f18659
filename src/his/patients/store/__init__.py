"""Tables and queries of the patients service."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from his.kernel.db import Connection
from his.patients.domain import NewPatient, format_mrn


async def insert_patient(conn: Connection, p: NewPatient) -> tuple[uuid.UUID, str]:
    patient_id = uuid.uuid4()
    number = await conn.fetchval("SELECT nextval('mrn_seq')")
    mrn = format_mrn(int(number))
    await conn.execute(
        """INSERT INTO patient (id, mrn, given_name, family_name, birth_date, sex, email, phone)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        patient_id,
        mrn,
        p.given_name,
        p.family_name,
        p.birth_date,
        p.sex.value,
        p.email,
        p.phone,
    )
    return patient_id, mrn


async def get_patient(conn: Connection, patient_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        """SELECT id, mrn, given_name, family_name, birth_date, sex, email, phone, created_at
           FROM patient WHERE id = $1""",
        patient_id,
    )
    return dict(row) if row is not None else None


def as_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items()}
    out["id"] = str(row["id"])
    out["birth_date"] = row["birth_date"].isoformat() if isinstance(row["birth_date"], date) else row["birth_date"]
    out["created_at"] = row["created_at"].isoformat()
    return out
