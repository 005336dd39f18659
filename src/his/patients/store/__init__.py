"""Tables and queries of the patients service: its ports (``his.patients.ports``) on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg

from his.kernel.clock import Clock
from his.kernel.db import Connection, Database, Record, Unit, UnitOfWork
from his.kernel.params import like_escape
from his.patients.domain import (
    AccountLinkedError,
    CareRelationship,
    CareSource,
    Channel,
    ContactDetails,
    Coverage,
    EmergencyGrant,
    EmergencyRead,
    Invitation,
    LabResult,
    NewCareRelationship,
    NewPatient,
    Patient,
    RecordEntry,
    ResultedOrder,
    ReviewState,
    Sex,
    Stored,
    format_mrn,
)

__all__ = ["AccountLinkedError", "PatientsStore", "PatientsUnit"]

COLUMNS = """id, mrn, given_name, family_name, birth_date, sex, email, phone, user_id, coverage_payer,
             coverage_member_id, created_at"""
#: The columns of master data an update may set (``his.patients.domain.master_data`` names them).
MASTER_DATA = frozenset(
    {"given_name", "family_name", "birth_date", "sex", "email", "phone", "coverage_payer", "coverage_member_id"}
)


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


class PgPatients:
    """The patients' ``Patients`` on one connection of a unit of work: MRNs from ``mrn_seq``,
    one record per user account (the unique key), search by trigram similarity (pg_trgm)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(self, p: NewPatient, at: datetime) -> Patient:
        patient_id = uuid.uuid4()
        number = await self.conn.fetchval("SELECT nextval('mrn_seq')")
        mrn = format_mrn(int(number))
        payer, member = p.coverage if p.coverage else (None, None)
        try:
            row = await self.conn.fetchrow(
                f"""INSERT INTO patient (id, mrn, given_name, family_name, birth_date, sex, email, phone, user_id,
                                         coverage_payer, coverage_member_id, created_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {COLUMNS}""",
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
                at,
            )
        except asyncpg.UniqueViolationError as exc:
            raise AccountLinkedError(str(p.user_id)) from exc
        assert row is not None
        return _patient(row)

    async def get(self, patient_id: uuid.UUID, *, lock: bool = False) -> Patient | None:
        """The patient; ``lock`` holds their row for this transaction (invitations and care-team
        changes of one patient serialise)."""
        row = await self.conn.fetchrow(
            f"SELECT {COLUMNS} FROM patient WHERE id = $1" + (" FOR UPDATE" if lock else ""), patient_id
        )
        return _patient(row) if row is not None else None

    async def many(self, patient_ids: list[uuid.UUID]) -> list[Patient]:
        rows = await self.conn.fetch(f"SELECT {COLUMNS} FROM patient WHERE id = ANY($1::uuid[])", patient_ids)
        return [_patient(r) for r in rows]

    async def of_user(self, user_id: uuid.UUID) -> Patient | None:
        row = await self.conn.fetchrow(f"SELECT {COLUMNS} FROM patient WHERE user_id = $1", user_id)
        return _patient(row) if row is not None else None

    async def contact(self, patient_id: uuid.UUID) -> ContactDetails | None:
        """Only what is needed to reach the patient: id, given name, e-mail, phone."""
        row = await self.conn.fetchrow("SELECT id, given_name, email, phone FROM patient WHERE id = $1", patient_id)
        if row is None:
            return None
        return ContactDetails(id=row["id"], given_name=row["given_name"], email=row["email"], phone=row["phone"])

    async def search(self, q: str | None, birth_date: date | None, limit: int) -> list[Patient]:
        """By MRN (exact), by name tolerating accents, case and typos, and/or by birth date.
        Best matches first. ``q`` is taken literally: its ``%``, ``_`` and ``\\`` match themselves."""
        term = (q or "").strip()
        rows = await self.conn.fetch(
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

    async def likely_duplicates(self, p: NewPatient, limit: int = 5) -> list[Patient]:
        """Patients who are probably this one: same birth date and a similar name, or the same
        e-mail address, or the same phone number."""
        digits = "".join(ch for ch in p.phone or "" if ch.isdigit())
        rows = await self.conn.fetch(
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

    async def update(self, patient_id: uuid.UUID, changes: dict[str, Stored]) -> None:
        """Set these columns of master data (``his.patients.domain.master_data`` names them)."""
        fields = [k for k in changes if k in MASTER_DATA]
        if not fields:
            return
        sets = ", ".join(f"{k} = ${n}" for n, k in enumerate(fields, start=2))
        await self.conn.execute(f"UPDATE patient SET {sets} WHERE id = $1", patient_id, *(changes[k] for k in fields))


class PgClinicians:
    """The patients' ``Clinicians`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def remember(self, user_id: uuid.UUID, roles: list[str], at: datetime) -> None:
        await self.conn.execute(
            """INSERT INTO clinician (user_id, roles, known_since) VALUES ($1, $2, $3)
               ON CONFLICT (user_id) DO UPDATE SET roles = $2""",
            user_id,
            roles,
            at,
        )

    async def known(self, user_id: uuid.UUID) -> bool:
        return bool(await self.conn.fetchval("SELECT 1 FROM clinician WHERE user_id = $1", user_id))

    async def remember_practitioner(self, practitioner_id: uuid.UUID, account_id: uuid.UUID) -> None:
        await self.conn.execute(
            """INSERT INTO known_practitioner (practitioner_id, account_id) VALUES ($1, $2)
               ON CONFLICT (practitioner_id) DO UPDATE SET account_id = EXCLUDED.account_id""",
            practitioner_id,
            account_id,
        )


CARE_COLUMNS = "id, patient_id, user_id, source, valid_from, valid_until"
GRANT_COLUMNS = (
    "id, patient_id, user_id, user_roles, reason, granted_at, expires_at, over_limit, review_state, reviewed_by,"
    " reviewed_at, review_note"
)
ACTIVE = "valid_from <= $2 AND (valid_until IS NULL OR valid_until > $2)"


def _care(row: Record) -> CareRelationship:
    return CareRelationship(
        id=row["id"],
        patient_id=row["patient_id"],
        user_id=row["user_id"],
        source=CareSource(row["source"]),
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
    )


class PgCareTeams:
    """The patients' ``CareTeams`` on one connection of a unit of work: assignments
    (``care_relationship``), care from appointments and admissions (``practitioner_care``) and
    both as the access rule reads them (the ``care_link`` view)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def assigned(self, patient_id: uuid.UUID, user_id: uuid.UUID, at: datetime) -> uuid.UUID | None:
        found = await self.conn.fetchval(
            f"SELECT id FROM care_relationship WHERE patient_id = $1 AND {ACTIVE} AND user_id = $3 LIMIT 1",
            patient_id,
            at,
            user_id,
        )
        return found if isinstance(found, uuid.UUID) else None

    async def assign(self, rel: NewCareRelationship, created_by: uuid.UUID | None, at: datetime) -> CareRelationship:
        row = await self.conn.fetchrow(
            f"""INSERT INTO care_relationship
                    (id, patient_id, user_id, source, valid_from, valid_until, created_by, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {CARE_COLUMNS}""",
            uuid.uuid4(),
            rel.patient_id,
            rel.user_id,
            rel.source.value,
            rel.valid_from,
            rel.valid_until,
            created_by,
            at,
        )
        assert row is not None
        return _care(row)

    async def end(self, patient_id: uuid.UUID, relationship_id: uuid.UUID, at: datetime, ended_by: uuid.UUID) -> bool:
        """End the relationship ``at`` (kept for the record); False if the patient has no such relationship."""
        found = await self.conn.fetchval(
            "SELECT 1 FROM care_relationship WHERE id = $1 AND patient_id = $2 FOR UPDATE", relationship_id, patient_id
        )
        if not found:
            return False
        await self.conn.execute(
            """UPDATE care_relationship SET valid_until = greatest(valid_from, $2), ended_by = $3
               WHERE id = $1 AND (valid_until IS NULL OR valid_until > $2)""",
            relationship_id,
            at,
            ended_by,
        )
        return True

    async def follows_event(self, patient_id: uuid.UUID, link_id: uuid.UUID) -> bool:
        found = await self.conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM practitioner_care WHERE source_id = $1 AND patient_id = $2)",
            link_id,
            patient_id,
        )
        return bool(found)

    async def team(self, patient_id: uuid.UUID, at: datetime) -> list[CareRelationship]:
        """The patient's active care relationships (assigned, or from an appointment or admission), oldest first."""
        rows = await self.conn.fetch(
            f"SELECT {CARE_COLUMNS} FROM care_link WHERE patient_id = $1 AND {ACTIVE} ORDER BY valid_from, id",
            patient_id,
            at,
        )
        return [_care(r) for r in rows]

    async def basis(self, patient_id: uuid.UUID, user_id: uuid.UUID, at: datetime) -> tuple[bool, bool]:
        """(an active care relationship, an active emergency grant) of the user with the patient."""
        row = await self.conn.fetchrow(
            f"""SELECT EXISTS (SELECT 1 FROM care_link WHERE patient_id = $1 AND {ACTIVE} AND user_id = $3),
                       EXISTS (SELECT 1 FROM emergency_grant
                               WHERE patient_id = $1 AND user_id = $3 AND granted_at <= $2 AND expires_at > $2)""",
            patient_id,
            at,
            user_id,
        )
        assert row is not None
        return bool(row[0]), bool(row[1])

    async def reachable(self, user_id: uuid.UUID, patient_ids: list[uuid.UUID], at: datetime) -> dict[uuid.UUID, bool]:
        """Which of these patients the user may reach: True through a care relationship, False only
        through an emergency grant; patients reached neither way are absent."""
        rows = await self.conn.fetch(
            """SELECT patient_id, bool_or(in_care) FROM (
                   SELECT patient_id, true AS in_care FROM care_link
                   WHERE patient_id = ANY($1::uuid[]) AND user_id = $3
                     AND valid_from <= $2 AND (valid_until IS NULL OR valid_until > $2)
                   UNION ALL
                   SELECT patient_id, false FROM emergency_grant
                   WHERE patient_id = ANY($1::uuid[]) AND user_id = $3 AND granted_at <= $2 AND expires_at > $2
               ) AS reach GROUP BY patient_id""",
            patient_ids,
            at,
            user_id,
        )
        return {r[0]: bool(r[1]) for r in rows}

    async def merge_appointment(
        self,
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
        await self.conn.execute(
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

    async def merge_admission(
        self,
        *,
        admission_id: uuid.UUID,
        patient_id: uuid.UUID,
        practitioner_id: uuid.UUID | None,
        admitted_at: datetime,
        until: datetime | None,
    ) -> None:
        """Merge an admission (names the practitioner) or its discharge (sets the end), in any order."""
        await self.conn.execute(
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


def _grant(row: Record) -> EmergencyGrant:
    return EmergencyGrant(
        id=row["id"],
        patient_id=row["patient_id"],
        user_id=row["user_id"],
        roles=tuple(row["user_roles"]),
        reason=row["reason"],
        granted_at=row["granted_at"],
        expires_at=row["expires_at"],
        over_limit=row["over_limit"],
        review_state=ReviewState(row["review_state"]),
        reviewed_by=row["reviewed_by"],
        reviewed_at=row["reviewed_at"],
        review_note=row["review_note"],
    )


class PgEmergencyGrants:
    """The patients' ``EmergencyGrants`` on one connection of a unit of work."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(
        self,
        *,
        patient_id: uuid.UUID,
        user_id: uuid.UUID,
        roles: list[str],
        reason: str,
        granted_at: datetime,
        expires_at: datetime,
        over_limit: bool = False,
    ) -> EmergencyGrant:
        row = await self.conn.fetchrow(
            f"""INSERT INTO emergency_grant
                    (id, patient_id, user_id, user_roles, reason, granted_at, expires_at, over_limit)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {GRANT_COLUMNS}""",
            uuid.uuid4(),
            patient_id,
            user_id,
            roles,
            reason,
            granted_at,
            expires_at,
            over_limit,
        )
        assert row is not None
        return _grant(row)

    async def find(
        self, *, patient_id: uuid.UUID | None, limit: int, state: ReviewState | None = None
    ) -> list[EmergencyGrant]:
        """Grants, newest first; of one patient or of all, in one review state or any."""
        rows = await self.conn.fetch(
            f"""SELECT {GRANT_COLUMNS} FROM emergency_grant
                WHERE ($1::uuid IS NULL OR patient_id = $1) AND ($3::text IS NULL OR review_state = $3)
                ORDER BY granted_at DESC, id LIMIT $2""",
            patient_id,
            limit,
            state.value if state is not None else None,
        )
        return [_grant(r) for r in rows]

    async def get(self, grant_id: uuid.UUID, *, lock: bool = False) -> EmergencyGrant | None:
        row = await self.conn.fetchrow(
            f"SELECT {GRANT_COLUMNS} FROM emergency_grant WHERE id = $1{' FOR UPDATE' if lock else ''}", grant_id
        )
        return _grant(row) if row is not None else None

    async def of_user(self, user_id: uuid.UUID, since: datetime) -> list[EmergencyGrant]:
        rows = await self.conn.fetch(
            f"""SELECT {GRANT_COLUMNS} FROM emergency_grant WHERE user_id = $1 AND granted_at >= $2
                ORDER BY granted_at DESC, id""",
            user_id,
            since,
        )
        return [_grant(r) for r in rows]

    async def review(
        self, grant_id: uuid.UUID, *, state: ReviewState, by: uuid.UUID, at: datetime, note: str | None
    ) -> EmergencyGrant:
        row = await self.conn.fetchrow(
            f"""UPDATE emergency_grant SET review_state = $2, reviewed_by = $3, reviewed_at = $4, review_note = $5
                WHERE id = $1 RETURNING {GRANT_COLUMNS}""",
            grant_id,
            state.value,
            by,
            at,
            note,
        )
        if row is None:
            raise LookupError(f"no emergency grant {grant_id}")
        return _grant(row)

    async def note_read(
        self, *, patient_id: uuid.UUID, user_id: uuid.UUID, resource: str, action: str, at: datetime
    ) -> bool:
        status = await self.conn.execute(
            """INSERT INTO emergency_read (grant_id, resource, action, at)
               SELECT id, $3, $4, $5 FROM emergency_grant
               WHERE patient_id = $1 AND user_id = $2 AND granted_at <= $5 AND expires_at > $5
               ORDER BY granted_at DESC, id LIMIT 1""",
            patient_id,
            user_id,
            resource,
            action,
            at,
        )
        return status.endswith(" 1")

    async def reads(self, grant_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[EmergencyRead]]:
        rows = await self.conn.fetch(
            """SELECT grant_id, resource, action, at FROM emergency_read
               WHERE grant_id = ANY($1::uuid[]) ORDER BY grant_id, at, id""",
            grant_ids,
        )
        found: dict[uuid.UUID, list[EmergencyRead]] = {}
        for r in rows:
            found.setdefault(r["grant_id"], []).append(EmergencyRead(r["resource"], r["action"], r["at"]))
        return found


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


class PgRecords:
    """The patients' ``Records`` on one connection of a unit of work (the text as ciphertext)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(
        self,
        *,
        entry_id: uuid.UUID,
        patient_id: uuid.UUID,
        kind: str,
        code: str | None,
        text_cipher: bytes,
        author_id: uuid.UUID,
        author_roles: list[str],
        at: datetime,
    ) -> RecordEntry:
        row = await self.conn.fetchrow(
            f"""INSERT INTO record_entry (id, patient_id, kind, code, text_cipher, author_id, author_roles, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {ENTRY_COLUMNS}""",
            entry_id,
            patient_id,
            kind,
            code,
            text_cipher,
            author_id,
            author_roles,
            at,
        )
        assert row is not None
        return _entry(row)

    async def of(self, patient_id: uuid.UUID, limit: int) -> list[RecordEntry]:
        rows = await self.conn.fetch(
            f"""SELECT {ENTRY_COLUMNS} FROM record_entry
                WHERE patient_id = $1 ORDER BY created_at DESC, id LIMIT $2""",
            patient_id,
            limit,
        )
        return [_entry(r) for r in rows]


def _resulted(patient_id: uuid.UUID, rows: list[Record]) -> ResultedOrder:
    """One order from its result rows (as ``PgLabResults.of`` selects them, in order)."""
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


class PgLabResults:
    """The patients' ``LabResults`` on one connection of a unit of work; one row per (order,
    test), the ``lab_result_once`` key."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def add(self, order: ResultedOrder, at: datetime) -> int:
        """Add an order's results to the chart; results already there (same order and test) are kept
        as they are. Returns how many were added."""
        results, n = order.results, len(order.results)
        added = await self.conn.fetch(
            """INSERT INTO lab_result (order_id, code, patient_id, ordered_by, priority, position, value, unit,
                                       reference_low, reference_high, flag, resulted_at, received_at)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::smallint[],
                                    $7::text[], $8::text[], $9::numeric[], $10::numeric[], $11::text[],
                                    $12::timestamptz[], $13::timestamptz[])
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
            [at] * n,
        )
        return len(added)

    async def of(self, patient_id: uuid.UUID, limit: int) -> list[ResultedOrder]:
        """The patient's ``limit`` most recently resulted orders, each with its results in order."""
        rows = await self.conn.fetch(
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


class PgInvitations:
    """The patients' ``Invitations`` on one connection of a unit of work; the partial unique
    index ``invitation_outstanding`` keeps one outstanding invitation per patient."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def supersede(self, patient_id: uuid.UUID, at: datetime) -> None:
        """The patient's outstanding invitation (if any) can no longer be redeemed."""
        await self.conn.execute(
            """UPDATE invitation SET revoked_at = $2
               WHERE patient_id = $1 AND redeemed_at IS NULL AND revoked_at IS NULL""",
            patient_id,
            at,
        )

    async def add(self, invitation: Invitation) -> None:
        """A new invitation (not yet redeemed or superseded)."""
        await self.conn.execute(
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

    async def by_digest(self, digest: bytes, *, lock: bool = False) -> Invitation | None:
        """The invitation whose code has this digest (locked for this transaction with ``lock``)."""
        row = await self.conn.fetchrow(
            f"SELECT {INVITATION_COLUMNS} FROM invitation WHERE code_digest = $1" + (" FOR UPDATE" if lock else ""),
            digest,
        )
        return _invitation(row) if row is not None else None

    async def get(self, invitation_id: uuid.UUID) -> tuple[Invitation, bool] | None:
        """An invitation, and whether its patient's record is linked to an account yet."""
        row = await self.conn.fetchrow(
            f"""SELECT {", ".join("i." + c for c in _INVITATION)},
                       p.user_id IS NOT NULL AS record_linked
                FROM invitation i JOIN patient p ON p.id = i.patient_id WHERE i.id = $1""",
            invitation_id,
        )
        return (_invitation(row), bool(row["record_linked"])) if row is not None else None

    async def redeem(self, invitation_id: uuid.UUID, patient_id: uuid.UUID, user_id: uuid.UUID, at: datetime) -> None:
        """Link the record to the account and mark the invitation used (``AccountLinkedError`` if the
        account got a record meanwhile)."""
        try:
            await self.conn.execute(
                "UPDATE patient SET user_id = $2 WHERE id = $1 AND user_id IS NULL", patient_id, user_id
            )
        except asyncpg.UniqueViolationError as exc:
            raise AccountLinkedError(str(user_id)) from exc
        await self.conn.execute(
            "UPDATE invitation SET redeemed_at = $2, redeemed_by = $3 WHERE id = $1", invitation_id, at, user_id
        )


class PatientsUnit(Unit):
    """A unit of work of the patients service on PostgreSQL; ``clock``, when given, is the
    moment the unit says it is instead of the database's clock."""

    def __init__(self, uow: UnitOfWork, clock: Clock | None = None) -> None:
        super().__init__(uow)
        self._clock = clock
        self.patients = PgPatients(self.conn)
        self.clinicians = PgClinicians(self.conn)
        self.care = PgCareTeams(self.conn)
        self.grants = PgEmergencyGrants(self.conn)
        self.records = PgRecords(self.conn)
        self.lab = PgLabResults(self.conn)
        self.invitations = PgInvitations(self.conn)

    @property
    def clock(self) -> Clock:
        return self._clock or self.work.clock


@dataclass(frozen=True)
class PatientsStore:
    """The patients' units of work (``his.patients.ports.PatientsUnits``) on its database, by
    the database's clock or ``clock``."""

    db: Database
    clock: Clock | None = None

    @asynccontextmanager
    async def uow(self) -> AsyncIterator[PatientsUnit]:
        async with self.db.uow() as uow:
            yield PatientsUnit(uow, self.clock)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[PatientsUnit]:
        async with self.db.read() as uow:
            yield PatientsUnit(uow, self.clock)
