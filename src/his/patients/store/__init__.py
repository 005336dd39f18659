"""Tables and queries of the patients service."""

from __future__ import annotations

import uuid
from datetime import date, datetime

import asyncpg

from his.kernel.db import Connection, Record
from his.kernel.params import like_escape
from his.patients.domain import (
    CareRelationship,
    CareSource,
    Channel,
    ContactDetails,
    Coverage,
    EmergencyGrant,
    Invitation,
    LabResult,
    NewCareRelationship,
    NewPatient,
    Patient,
    RecordEntry,
    ResultedOrder,
    Sex,
    Stored,
    format_mrn,
)


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
            patient_id,
            mrn,
            p.given_name,
            p.family_name,
            p.birth_date,
            p.sex.value,
            p.email,
            p.phone,
            p.user_id,
            payer,
            member,
        )
    except asyncpg.UniqueViolationError as exc:
        raise AccountLinkedError(str(p.user_id)) from exc
    return patient_id, mrn


def _patient(row: Record) -> Patient:
    payer = row["coverage_payer"]
    return Patient(
        id=row["id"],
        mrn=row["mrn"],
        given_name=row["given_name"],
        family_name=row["family_name"],
        birth_date=row["birth_date"],
        sex=Sex(row["sex"]),
        email=row["email"],
        phone=row["phone"],
        user_id=row["user_id"],
        coverage=Coverage(payer, row["coverage_member_id"]) if payer else None,
        created_at=row["created_at"],
    )


async def get_patient(conn: Connection, patient_id: uuid.UUID) -> Patient | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM patient WHERE id = $1", patient_id)
    return _patient(row) if row is not None else None


async def linked_account(conn: Connection, patient_id: uuid.UUID) -> tuple[bool, uuid.UUID | None]:
    """(whether the patient exists, the user account linked to them if any)."""
    row = await conn.fetchrow("SELECT user_id FROM patient WHERE id = $1", patient_id)
    return (row is not None, row["user_id"] if row is not None else None)


async def contact_details(conn: Connection, patient_id: uuid.UUID) -> ContactDetails | None:
    """Only what is needed to reach the patient: id, given name, e-mail, phone."""
    row = await conn.fetchrow("SELECT id, given_name, email, phone FROM patient WHERE id = $1", patient_id)
    if row is None:
        return None
    return ContactDetails(id=row["id"], given_name=row["given_name"], email=row["email"], phone=row["phone"])


async def patient_of_user(conn: Connection, user_id: uuid.UUID) -> Patient | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM patient WHERE user_id = $1", user_id)
    return _patient(row) if row is not None else None


async def search(conn: Connection, q: str | None, birth_date: date | None, limit: int) -> list[Patient]:
    """By MRN (exact), by name tolerating accents, case and typos, and/or by birth date.
    Best matches first. ``q`` is taken literally: its ``%``, ``_`` and ``\\`` match themselves."""
    term = (q or "").strip()
    rows = await conn.fetch(
        f"""SELECT {COLUMNS} FROM patient
            WHERE ($1 = '' OR mrn = upper($1)
                   OR full_name(given_name, family_name) LIKE '%' || fold($2) || '%' ESCAPE '\\'
                   OR public.word_similarity(fold($1), full_name(given_name, family_name)) > 0.5)
              AND ($3::date IS NULL OR birth_date = $3)
            ORDER BY mrn = upper($1) DESC,
                     public.word_similarity(fold($1), full_name(given_name, family_name)) DESC,
                     family_name, given_name, id
            LIMIT $4""",
        term,
        like_escape(term),
        birth_date,
        limit,
    )
    return [_patient(r) for r in rows]


async def likely_duplicates(conn: Connection, p: NewPatient, limit: int = 5) -> list[Patient]:
    """Patients who are probably this one: same birth date and a similar name, or the same
    e-mail address, or the same phone number."""
    digits = "".join(ch for ch in p.phone or "" if ch.isdigit())
    rows = await conn.fetch(
        f"""SELECT {COLUMNS} FROM patient
            WHERE (birth_date = $1
                   AND public.similarity(fold($2), full_name(given_name, family_name)) >= 0.5)
               OR ($3::text IS NOT NULL AND lower(email) = lower($3))
               OR (length($4) >= 7 AND regexp_replace(phone, '[^0-9]', '', 'g') = $4)
            ORDER BY created_at LIMIT $5""",
        p.birth_date,
        f"{p.given_name} {p.family_name}",
        p.email,
        digits,
        limit,
    )
    return [_patient(r) for r in rows]


async def update_patient(conn: Connection, patient_id: uuid.UUID, changes: dict[str, Stored]) -> None:
    """Set these columns of master data (``his.patients.domain.master_data`` names them)."""
    allowed = {
        "given_name",
        "family_name",
        "birth_date",
        "sex",
        "email",
        "phone",
        "coverage_payer",
        "coverage_member_id",
    }
    fields = [k for k in changes if k in allowed]
    if not fields:
        return
    sets = ", ".join(f"{k} = ${n}" for n, k in enumerate(fields, start=2))
    await conn.execute(f"UPDATE patient SET {sets} WHERE id = $1", patient_id, *(changes[k] for k in fields))


# --- Clinicians, care relationships, emergency grants --------------------------------------


async def remember_clinician(conn: Connection, user_id: uuid.UUID, roles: list[str]) -> None:
    await conn.execute(
        "INSERT INTO clinician (user_id, roles) VALUES ($1, $2) ON CONFLICT (user_id) DO UPDATE SET roles = $2",
        user_id,
        roles,
    )


async def is_clinician(conn: Connection, user_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM clinician WHERE user_id = $1", user_id))


async def lock_patient(conn: Connection, patient_id: uuid.UUID) -> bool:
    """Serialise changes to one patient's care team; False if there is no such patient."""
    return bool(await conn.fetchval("SELECT 1 FROM patient WHERE id = $1 FOR UPDATE", patient_id))


CARE_COLUMNS = "id, patient_id, user_id, source, valid_from, valid_until"
GRANT_COLUMNS = "id, patient_id, user_id, user_roles, reason, granted_at, expires_at"
ACTIVE = "valid_from <= $2 AND (valid_until IS NULL OR valid_until > $2)"


async def active_care_relationship(
    conn: Connection, patient_id: uuid.UUID, user_id: uuid.UUID, now: datetime
) -> uuid.UUID | None:
    found = await conn.fetchval(
        f"SELECT id FROM care_relationship WHERE patient_id = $1 AND {ACTIVE} AND user_id = $3 LIMIT 1",
        patient_id,
        now,
        user_id,
    )
    return found if isinstance(found, uuid.UUID) else None


def _care(row: Record) -> CareRelationship:
    return CareRelationship(
        id=row["id"],
        patient_id=row["patient_id"],
        user_id=row["user_id"],
        source=CareSource(row["source"]),
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
    )


async def insert_care_relationship(
    conn: Connection, rel: NewCareRelationship, created_by: uuid.UUID | None
) -> CareRelationship:
    row = await conn.fetchrow(
        f"""INSERT INTO care_relationship (id, patient_id, user_id, source, valid_from, valid_until, created_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {CARE_COLUMNS}""",
        uuid.uuid4(),
        rel.patient_id,
        rel.user_id,
        rel.source.value,
        rel.valid_from,
        rel.valid_until,
        created_by,
    )
    assert row is not None
    return _care(row)


async def remember_practitioner(conn: Connection, practitioner_id: uuid.UUID, account_id: uuid.UUID) -> None:
    await conn.execute(
        """INSERT INTO known_practitioner (practitioner_id, account_id) VALUES ($1, $2)
           ON CONFLICT (practitioner_id) DO UPDATE SET account_id = EXCLUDED.account_id""",
        practitioner_id,
        account_id,
    )


async def merge_appointment_care(
    conn: Connection,
    *,
    appointment_id: uuid.UUID,
    patient_id: uuid.UUID,
    practitioner_id: uuid.UUID,
    version: int,
    seen_at: datetime,
    until: datetime,
    cancelled_at: datetime | None,
) -> None:
    """Merge one appointment event into its care row, in any order: the earliest start, the end
    of the latest version, the first cancellation."""
    await conn.execute(
        """INSERT INTO practitioner_care
               (source, source_id, patient_id, practitioner_id, version, valid_from, valid_until, ended_at)
           VALUES ('appointment', $1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (source, source_id) DO UPDATE SET
               valid_from = least(practitioner_care.valid_from, EXCLUDED.valid_from),
               valid_until = CASE WHEN EXCLUDED.version > practitioner_care.version THEN EXCLUDED.valid_until
                                  ELSE practitioner_care.valid_until END,
               version = greatest(practitioner_care.version, EXCLUDED.version),
               ended_at = least(practitioner_care.ended_at, EXCLUDED.ended_at)""",
        appointment_id,
        patient_id,
        practitioner_id,
        version,
        seen_at,
        until,
        cancelled_at,
    )


async def merge_admission_care(
    conn: Connection,
    *,
    admission_id: uuid.UUID,
    patient_id: uuid.UUID,
    practitioner_id: uuid.UUID | None,
    admitted_at: datetime,
    until: datetime | None,
) -> None:
    """Merge an admission (names the practitioner) or its discharge (sets the end), in any order."""
    await conn.execute(
        """INSERT INTO practitioner_care (source, source_id, patient_id, practitioner_id, valid_from, valid_until)
           VALUES ('admission', $1, $2, $3, $4, $5)
           ON CONFLICT (source, source_id) DO UPDATE SET
               practitioner_id = coalesce(EXCLUDED.practitioner_id, practitioner_care.practitioner_id),
               valid_until = coalesce(EXCLUDED.valid_until, practitioner_care.valid_until)""",
        admission_id,
        patient_id,
        practitioner_id,
        admitted_at,
        until,
    )


async def is_event_care(conn: Connection, patient_id: uuid.UUID, link_id: uuid.UUID) -> bool:
    """The id is the patient's appointment or admission that a care relationship follows from."""
    found = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM practitioner_care WHERE source_id = $1 AND patient_id = $2)", link_id, patient_id
    )
    return bool(found)


async def care_team(conn: Connection, patient_id: uuid.UUID, now: datetime) -> list[CareRelationship]:
    """The patient's active care relationships (assigned, or from an appointment or admission), oldest first."""
    rows = await conn.fetch(
        f"SELECT {CARE_COLUMNS} FROM care_link WHERE patient_id = $1 AND {ACTIVE} ORDER BY valid_from, id",
        patient_id,
        now,
    )
    return [_care(r) for r in rows]


async def end_care_relationship(
    conn: Connection, patient_id: uuid.UUID, relationship_id: uuid.UUID, now: datetime, ended_by: uuid.UUID
) -> bool:
    """End the relationship now (kept for the record); False if the patient has no such relationship."""
    found = await conn.fetchval(
        "SELECT 1 FROM care_relationship WHERE id = $1 AND patient_id = $2 FOR UPDATE", relationship_id, patient_id
    )
    if not found:
        return False
    await conn.execute(
        """UPDATE care_relationship SET valid_until = greatest(valid_from, $2), ended_by = $3
           WHERE id = $1 AND (valid_until IS NULL OR valid_until > $2)""",
        relationship_id,
        now,
        ended_by,
    )
    return True


async def care_basis(conn: Connection, patient_id: uuid.UUID, user_id: uuid.UUID, now: datetime) -> tuple[bool, bool]:
    """(an active care relationship, an active emergency grant) of the user with the patient."""
    row = await conn.fetchrow(
        f"""SELECT EXISTS (SELECT 1 FROM care_link WHERE patient_id = $1 AND {ACTIVE} AND user_id = $3),
                   EXISTS (SELECT 1 FROM emergency_grant
                           WHERE patient_id = $1 AND user_id = $3 AND granted_at <= $2 AND expires_at > $2)""",
        patient_id,
        now,
        user_id,
    )
    assert row is not None
    return bool(row[0]), bool(row[1])


async def reachable_among(
    conn: Connection, user_id: uuid.UUID, patient_ids: list[uuid.UUID], now: datetime
) -> dict[uuid.UUID, bool]:
    """Which of these patients the user may reach: True through a care relationship, False only
    through an emergency grant; patients reached neither way are absent."""
    rows = await conn.fetch(
        """SELECT patient_id, bool_or(in_care) FROM (
               SELECT patient_id, true AS in_care FROM care_link
               WHERE patient_id = ANY($1::uuid[]) AND user_id = $3
                 AND valid_from <= $2 AND (valid_until IS NULL OR valid_until > $2)
               UNION ALL
               SELECT patient_id, false FROM emergency_grant
               WHERE patient_id = ANY($1::uuid[]) AND user_id = $3 AND granted_at <= $2 AND expires_at > $2
           ) AS reach GROUP BY patient_id""",
        patient_ids,
        now,
        user_id,
    )
    return {r[0]: bool(r[1]) for r in rows}


async def insert_emergency_grant(
    conn: Connection,
    *,
    patient_id: uuid.UUID,
    user_id: uuid.UUID,
    roles: list[str],
    reason: str,
    granted_at: datetime,
    expires_at: datetime,
) -> EmergencyGrant:
    row = await conn.fetchrow(
        f"""INSERT INTO emergency_grant (id, patient_id, user_id, user_roles, reason, granted_at, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {GRANT_COLUMNS}""",
        uuid.uuid4(),
        patient_id,
        user_id,
        roles,
        reason,
        granted_at,
        expires_at,
    )
    assert row is not None
    return _grant(row)


def _grant(row: Record) -> EmergencyGrant:
    return EmergencyGrant(
        id=row["id"],
        patient_id=row["patient_id"],
        user_id=row["user_id"],
        roles=tuple(row["user_roles"]),
        reason=row["reason"],
        granted_at=row["granted_at"],
        expires_at=row["expires_at"],
    )


async def emergency_grants(conn: Connection, *, patient_id: uuid.UUID | None, limit: int) -> list[EmergencyGrant]:
    """Grants, newest first; of one patient or of all."""
    rows = await conn.fetch(
        f"""SELECT {GRANT_COLUMNS} FROM emergency_grant
            WHERE ($1::uuid IS NULL OR patient_id = $1) ORDER BY granted_at DESC, id LIMIT $2""",
        patient_id,
        limit,
    )
    return [_grant(r) for r in rows]


ENTRY_COLUMNS = "id, patient_id, kind, code, text_cipher, author_id, author_roles, created_at"


def _entry(row: Record) -> RecordEntry:
    return RecordEntry(
        id=row["id"],
        patient_id=row["patient_id"],
        kind=row["kind"],
        code=row["code"],
        text_cipher=row["text_cipher"],
        author_id=row["author_id"],
        author_roles=tuple(row["author_roles"]),
        created_at=row["created_at"],
    )


async def insert_record_entry(
    conn: Connection,
    *,
    entry_id: uuid.UUID,
    patient_id: uuid.UUID,
    kind: str,
    code: str | None,
    text_cipher: bytes,
    author_id: uuid.UUID,
    author_roles: list[str],
) -> RecordEntry:
    row = await conn.fetchrow(
        f"""INSERT INTO record_entry (id, patient_id, kind, code, text_cipher, author_id, author_roles)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ENTRY_COLUMNS}""",
        entry_id,
        patient_id,
        kind,
        code,
        text_cipher,
        author_id,
        author_roles,
    )
    assert row is not None
    return _entry(row)


async def record_entries(conn: Connection, patient_id: uuid.UUID, limit: int) -> list[RecordEntry]:
    rows = await conn.fetch(
        f"""SELECT {ENTRY_COLUMNS} FROM record_entry
            WHERE patient_id = $1 ORDER BY created_at DESC, id LIMIT $2""",
        patient_id,
        limit,
    )
    return [_entry(r) for r in rows]


async def insert_lab_results(conn: Connection, order: ResultedOrder) -> int:
    """Add an order's results to the chart; results already there (same order and test) are kept
    as they are. Returns how many were added."""
    results, n = order.results, len(order.results)
    added = await conn.fetch(
        """INSERT INTO lab_result (order_id, code, patient_id, ordered_by, priority, position, value, unit,
                                   reference_low, reference_high, flag, resulted_at)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::smallint[],
                                $7::text[], $8::text[], $9::numeric[], $10::numeric[], $11::text[],
                                $12::timestamptz[])
           ON CONFLICT ON CONSTRAINT lab_result_once DO NOTHING RETURNING 1""",
        [order.order_id] * n,
        [r.code for r in results],
        [order.patient_id] * n,
        [order.ordered_by] * n,
        [order.priority] * n,
        list(range(n)),
        [r.value for r in results],
        [r.unit for r in results],
        [r.reference_low for r in results],
        [r.reference_high for r in results],
        [r.flag for r in results],
        [order.resulted_at] * n,
    )
    return len(added)


async def lab_results(conn: Connection, patient_id: uuid.UUID, limit: int) -> list[ResultedOrder]:
    """The patient's ``limit`` most recently resulted orders, each with its results in order."""
    rows = await conn.fetch(
        """WITH orders AS (
               SELECT order_id, max(resulted_at) AS resulted_at FROM lab_result WHERE patient_id = $1
               GROUP BY order_id ORDER BY max(resulted_at) DESC, order_id LIMIT $2)
           SELECT r.order_id, r.code, r.ordered_by, r.priority, r.value, r.unit, r.reference_low,
                  r.reference_high, r.flag, r.resulted_at
           FROM lab_result r JOIN orders o USING (order_id)
           ORDER BY o.resulted_at DESC, r.order_id, r.position""",
        patient_id,
        limit,
    )
    by_order: dict[uuid.UUID, list[Record]] = {}
    for r in rows:
        by_order.setdefault(r["order_id"], []).append(r)
    return [_resulted(patient_id, results) for results in by_order.values()]


def _resulted(patient_id: uuid.UUID, rows: list[Record]) -> ResultedOrder:
    """One order from its result rows (as ``lab_results`` selects them, in order)."""
    first = rows[0]
    return ResultedOrder(
        order_id=first["order_id"],
        patient_id=patient_id,
        ordered_by=first["ordered_by"],
        priority=first["priority"],
        resulted_at=first["resulted_at"],
        results=tuple(
            LabResult(
                code=r["code"],
                value=r["value"],
                unit=r["unit"],
                reference_low=r["reference_low"],
                reference_high=r["reference_high"],
                flag=r["flag"],
            )
            for r in rows
        ),
    )


# --- Portal invitations ---------------------------------------------------------------------

_INVITATION = (
    "id",
    "patient_id",
    "code_digest",
    "channel",
    "issued_by",
    "issued_at",
    "expires_at",
    "redeemed_at",
    "redeemed_by",
    "revoked_at",
)
INVITATION_COLUMNS = ", ".join(_INVITATION)


async def lock_patient_row(conn: Connection, patient_id: uuid.UUID) -> Patient | None:
    """The patient, their row locked for this transaction (invitations and links of one patient serialise)."""
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM patient WHERE id = $1 FOR UPDATE", patient_id)
    return _patient(row) if row is not None else None


async def supersede_invitations(conn: Connection, patient_id: uuid.UUID, now: datetime) -> None:
    """The patient's outstanding invitation (if any) can no longer be redeemed."""
    await conn.execute(
        "UPDATE invitation SET revoked_at = $2 WHERE patient_id = $1 AND redeemed_at IS NULL AND revoked_at IS NULL",
        patient_id,
        now,
    )


def _invitation(row: Record) -> Invitation:
    return Invitation(
        id=row["id"],
        patient_id=row["patient_id"],
        code_digest=row["code_digest"],
        channel=Channel(row["channel"]),
        issued_by=row["issued_by"],
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
        redeemed_at=row["redeemed_at"],
        redeemed_by=row["redeemed_by"],
        revoked_at=row["revoked_at"],
    )


async def insert_invitation(conn: Connection, invitation: Invitation) -> None:
    """A new invitation (not yet redeemed or superseded)."""
    await conn.execute(
        """INSERT INTO invitation (id, patient_id, code_digest, channel, issued_by, issued_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        invitation.id,
        invitation.patient_id,
        invitation.code_digest,
        invitation.channel.value,
        invitation.issued_by,
        invitation.issued_at,
        invitation.expires_at,
    )


async def invitation_by_digest(conn: Connection, digest: bytes, *, lock: bool = False) -> Invitation | None:
    """The invitation whose code has this digest (locked for this transaction with ``lock``)."""
    row = await conn.fetchrow(
        f"SELECT {INVITATION_COLUMNS} FROM invitation WHERE code_digest = $1" + (" FOR UPDATE" if lock else ""), digest
    )
    return _invitation(row) if row is not None else None


async def get_invitation(conn: Connection, invitation_id: uuid.UUID) -> tuple[Invitation, bool] | None:
    """An invitation, and whether its patient's record is linked to an account yet."""
    row = await conn.fetchrow(
        f"""SELECT {", ".join("i." + c for c in _INVITATION)},
                   p.user_id IS NOT NULL AS record_linked
            FROM invitation i JOIN patient p ON p.id = i.patient_id WHERE i.id = $1""",
        invitation_id,
    )
    return (_invitation(row), bool(row["record_linked"])) if row is not None else None


async def redeem_invitation(
    conn: Connection, invitation_id: uuid.UUID, patient_id: uuid.UUID, user_id: uuid.UUID, now: datetime
) -> None:
    """Link the record to the account and mark the invitation used (``AccountLinkedError`` if the
    account got a record meanwhile)."""
    try:
        await conn.execute("UPDATE patient SET user_id = $2 WHERE id = $1 AND user_id IS NULL", patient_id, user_id)
    except asyncpg.UniqueViolationError as exc:
        raise AccountLinkedError(str(user_id)) from exc
    await conn.execute(
        "UPDATE invitation SET redeemed_at = $2, redeemed_by = $3 WHERE id = $1", invitation_id, now, user_id
    )
