"""Tables and queries of the patients service."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import asyncpg

from his.kernel.db import Connection
from his.patients.domain import NewPatient, format_mrn


class AccountLinkedError(Exception):
    """The user account is already linked to another patient."""


COLUMNS = """id, mrn, given_name, family_name, birth_date, sex, email, phone, user_id, coverage_payer,
             coverage_member_id, created_at"""


async def insert_patient(conn: Connection, p: NewPatient) -> tuple[uuid.UUID, str]:
    patient_id = uuid.uuid4()
    number = await conn.fetchval("SELECT nextval('mrn_seq')")
    mrn = format_mrn(int(number))
    payer, member = p.coverage if p.coverage else (None, None)
    try:
        await conn.execute(
            """INSERT INTO patient (id, mrn, given_name, family_name, birth_date, sex, email, phone, user_id,
                                    coverage_payer, coverage_member_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
            patient_id, mrn, p.given_name, p.family_name, p.birth_date, p.sex.value, p.email, p.phone,
            p.user_id, payer, member,
        )  # fmt: skip
    except asyncpg.UniqueViolationError as exc:
        raise AccountLinkedError(str(p.user_id)) from exc
    return patient_id, mrn


async def get_patient(conn: Connection, patient_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM patient WHERE id = $1", patient_id)
    return dict(row) if row is not None else None


async def contact_details(conn: Connection, patient_id: uuid.UUID) -> dict[str, Any] | None:
    """Only what is needed to reach the patient: id, given name, e-mail, phone."""
    row = await conn.fetchrow("SELECT id, given_name, email, phone FROM patient WHERE id = $1", patient_id)
    return dict(row) if row is not None else None


async def patient_of_user(conn: Connection, user_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM patient WHERE user_id = $1", user_id)
    return dict(row) if row is not None else None


async def search(conn: Connection, q: str, limit: int) -> list[dict[str, Any]]:
    """By MRN (exact), or by family-name prefix, case-insensitively."""
    term = q.strip()
    rows = await conn.fetch(
        f"""SELECT {COLUMNS} FROM patient
            WHERE mrn = upper($1) OR lower(family_name) LIKE lower($2) || '%'
            ORDER BY family_name, given_name, id LIMIT $3""",
        term, term.replace("\\", "").replace("%", "").replace("_", ""), limit,
    )  # fmt: skip
    return [dict(r) for r in rows]


def as_json(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["id"] = str(row["id"])
    out["user_id"] = str(row["user_id"]) if row["user_id"] else None
    out["birth_date"] = row["birth_date"].isoformat() if isinstance(row["birth_date"], date) else row["birth_date"]
    out["created_at"] = row["created_at"].isoformat()
    payer, member = out.pop("coverage_payer"), out.pop("coverage_member_id")
    out["coverage"] = {"payer": payer, "member_id": member} if payer else None
    return out
