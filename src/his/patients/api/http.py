"""Internal HTTP API of the patients service (reached through the gateway).

Every route re-verifies the caller's token. A patient reaches only the record linked to their
own account, and any other id answers 404, exactly as an id that does not exist, so ids cannot
be probed. Staff reach patients by role, except clinicians (DOCTOR, NURSE), who need a care
relationship or an emergency grant (``his.patients.api.access``).
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from his.access import CLINICIANS, NONE
from his.clients.billing import BillingTermsLookup, UnknownValueError, known_payer
from his.events.audit import PatientsRecordAccessed, record_access
from his.kernel.auth import jwks_verifier, require
from his.kernel.crypto import FieldCipher
from his.kernel.db import UnitOfWork
from his.kernel.params import CalendarDate, Limit, SearchText
from his.kernel.problems import HTTPException, ProblemError
from his.kernel.security import Principal, TokenVerifier
from his.kernel.service import ServiceContext
from his.patients import handlers, policy, store
from his.patients.api.access import CARE_REQUIRED_RESPONSE, Clock, Guard, utc_now
from his.patients.api.care import care_router
from his.patients.api.invitations import invitations_router
from his.patients.api.lab import lab_router
from his.patients.api.records import records_router
from his.patients.domain import InvalidPatientError, InvitationCodes, NewPatient, Sex
from his.patients.policy import REGISTRARS, ROLE_BASED, Operation, changing

#: What a clinician's search shows of a patient they have no care relationship with: enough to
#: recognise the patient (and request emergency access), no contact or coverage details.
LOOKUP_FIELDS = ("id", "mrn", "given_name", "family_name", "birth_date", "sex")


class Coverage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payer: str = Field(min_length=1, max_length=64)
    member_id: str = Field(min_length=1, max_length=64)


class RegisterPatient(BaseModel):
    model_config = ConfigDict(extra="forbid")
    given_name: str = Field(min_length=1, max_length=100)
    family_name: str = Field(min_length=1, max_length=100)
    birth_date: date
    sex: Sex
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=32)
    #: No longer links the record to an account: a value is refused (422). The patient links
    #: their own account by redeeming an invitation (``POST /api/patients/{id}/invitations``).
    user_id: uuid.UUID | None = None
    coverage: Coverage | None = None
    #: Register even though likely duplicates exist (after a 409 listing them).
    confirm_duplicate: bool = False


class UpdatePatient(BaseModel):
    """Fields to change; those left out stay as they are (``null`` clears email, phone, coverage)."""

    model_config = ConfigDict(extra="forbid")
    given_name: str | None = Field(default=None, min_length=1, max_length=100)
    family_name: str | None = Field(default=None, min_length=1, max_length=100)
    birth_date: date | None = None
    sex: Sex | None = None
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=32)
    coverage: Coverage | None = None


class Registered(BaseModel):
    id: uuid.UUID
    mrn: str


def router(
    ctx: ServiceContext,
    verifier: TokenVerifier | None = None,
    *,
    clock: Clock = utc_now,
    emergency_minutes: float = 60.0,
    cipher: FieldCipher | None = None,
    payers: BillingTermsLookup | None = None,
    invitation_codes: InvitationCodes | None = None,
    invitation_minutes: float = 3 * 24 * 60,
    timezone: str = "UTC",
) -> APIRouter:
    r = APIRouter(prefix="/patients", tags=["patients"])
    zone = ZoneInfo(timezone)  # the hospital's: what "today" is for a birth date
    guard = Guard(verifier or jwks_verifier(), clock, emergency_minutes)
    caller = guard.caller

    async def checked(coverage: Coverage | None) -> Coverage | None:
        """The coverage with its payer as billing spells it; a payer billing has no plan for is a
        422 naming the plans (billing owns them: it would bill such a patient as nobody's)."""
        if coverage is None:
            return None
        if payers is None:
            raise HTTPException(503, "payer plans cannot be checked: billing is not reachable from patients")
        try:
            payer = known_payer(await payers.terms(), coverage.payer)
        except UnknownValueError as exc:
            raise exc.problem() from None
        return Coverage(payer=payer, member_id=coverage.member_id)

    async def duplicates(uow: UnitOfWork, who: Principal, cmd: NewPatient) -> list[dict[str, Any]]:
        """Likely duplicates of the patient being registered; each one shown is an audited read."""
        try:
            valid = cmd.validated(handlers.hospital_today(uow, zone))
        except InvalidPatientError:
            return []  # the registration itself will say what is wrong
        found = await store.likely_duplicates(uow.conn, valid)
        for row in found:
            record_access(
                uow,
                PatientsRecordAccessed,
                who,
                patient_id=row["id"],
                action="search",
                resource="patient",
                purpose="registration",
            )
        return [{k: store.as_json(row)[k] for k in LOOKUP_FIELDS} for row in found]

    @r.post("", status_code=201, response_model=Registered, responses={409: {"description": "likely duplicates"}})
    async def register(body: RegisterPatient, request: Request) -> Registered:
        """Register a patient (RECEPTIONIST, ADMIN); publishes ``his.patients.patient.registered.v1``.
        A ``coverage.payer`` billing has no plan for is a 422 naming the valid payers (``GET /api/payers``).

        ``user_id`` is refused: a record is linked to an account only by the patient, redeeming an
        invitation from that account (``POST /api/patients/{id}/invitations``)."""
        who = await caller(request)
        require(who, *REGISTRARS)
        if body.user_id is not None:
            raise HTTPException(
                422,
                "user_id cannot be set: the patient links their own account by redeeming an "
                "invitation (POST /api/patients/{id}/invitations)",
            )
        given = await checked(body.coverage)
        coverage = (given.payer, given.member_id) if given else None
        cmd = NewPatient(
            body.given_name, body.family_name, body.birth_date, body.sex, body.email, body.phone, None, coverage
        )
        try:
            async with ctx.db.uow() as uow:  # commits the audit records of duplicates shown, too
                found = [] if body.confirm_duplicate else await duplicates(uow, who, cmd)
                if not found:
                    patient_id, mrn = await handlers.register_patient(uow, cmd, actor=uuid.UUID(who.subject), zone=zone)
                    record_access(
                        uow,
                        PatientsRecordAccessed,
                        who,
                        patient_id=patient_id,
                        action="create",
                        resource="patient",
                        purpose="registration",
                    )
        except InvalidPatientError as exc:
            raise HTTPException(422, str(exc)) from None
        if found:
            raise ProblemError(
                409,
                "likely duplicates of this patient exist; register anyway with confirm_duplicate: true",
                possible_duplicates=found,
            )
        return Registered(id=patient_id, mrn=mrn)

    @r.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        """The caller's own patient record."""
        who = await caller(request)
        async with ctx.db.read() as uow:
            row = await store.patient_of_user(uow.conn, uuid.UUID(who.subject))
            if row is None:
                raise HTTPException(404, "no patient record is linked to your account")
            record_access(
                uow,
                PatientsRecordAccessed,
                who,
                patient_id=row["id"],
                action="read",
                resource="patient",
                purpose="own_record",
            )
        return store.as_json(row)

    @r.get("")
    async def search(
        request: Request,
        q: Annotated[SearchText | None, Query(max_length=100)] = None,
        birth_date: CalendarDate | None = None,
        limit: Limit = 20,
    ) -> dict[str, Any]:
        """Find patients by MRN, by name (accents, case and small typos do not matter) and/or by
        birth date, best matches first (staff only).

        A clinician sees the full record only of patients in their care (or under an emergency
        grant, audited as such); of others, just enough to recognise them, marked
        ``"restricted": true``.
        """
        who = await caller(request)
        if not policy.decide(Operation.SEARCH, who.roles, NONE).allowed:
            raise HTTPException(403, "not allowed for your role")
        if q is None and birth_date is None:
            raise HTTPException(422, "give q (MRN or name), birth_date, or both")
        async with ctx.db.read() as uow:
            rows = await store.search(uow.conn, q, birth_date, limit)
            reach: dict[uuid.UUID, bool] | None = None  # None: the caller's role reaches every patient
            if who.roles & CLINICIANS and not who.roles & ROLE_BASED and rows:
                ids = [row["id"] for row in rows]
                reach = await store.reachable_among(uow.conn, uuid.UUID(who.subject), ids, guard.clock())
            for row in rows:
                emergency = reach is not None and reach.get(row["id"]) is False
                record_access(
                    uow,
                    PatientsRecordAccessed,
                    who,
                    patient_id=row["id"],
                    action="search",
                    resource="patient",
                    purpose="emergency" if emergency else "care",
                )
        return {"items": [_shown(row, reach) for row in rows]}

    r.include_router(care_router(ctx, guard))  # before /{patient_id}, which would match its fixed paths
    r.include_router(records_router(ctx, guard, cipher))
    r.include_router(lab_router(ctx, guard))
    r.include_router(invitations_router(ctx, guard, invitation_codes, invitation_minutes))

    @r.get("/{patient_id}", responses=CARE_REQUIRED_RESPONSE)
    async def get(patient_id: uuid.UUID, request: Request) -> Any:
        """One patient's master data: the patient themself, or staff (clinicians need a care relationship).

        A clinician without one gets 403 with an ``emergency_access`` member saying how to
        request break-the-glass access.
        """
        who = await caller(request)
        async with ctx.db.read() as uow:
            row, decision = await guard.open(uow, who, patient_id, Operation.READ, resource="patient")
        if not decision.allowed:
            return guard.refusal(patient_id, decision)  # the denial above is committed and audited
        return store.as_json(row)

    @r.patch("/{patient_id}", responses=CARE_REQUIRED_RESPONSE)
    async def update(patient_id: uuid.UUID, body: UpdatePatient, request: Request) -> Any:
        """Change a patient's master data (RECEPTIONIST, ADMIN); a patient may change their own
        e-mail and phone. Publishes ``his.patients.patient.updated.v1`` naming the changed fields, and
        ``his.patients.coverage.changed.v1`` when the coverage's payer changes (billing reprices from it).
        A payer billing has no plan for is a 422 naming the valid payers."""
        who = await caller(request)
        fields = body.model_fields_set
        if "coverage" in fields and body.coverage is not None:
            body = body.model_copy(update={"coverage": await checked(body.coverage)})
        async with ctx.db.uow() as uow:
            row, access = await guard.decide(uow, who, patient_id, Operation.UPDATE)
            decision = changing(access, who.roles, fields)
            guard.audit(uow, who, patient_id, decision, resource="patient", action="update")
            if decision.allowed and fields:
                try:
                    changed = await handlers.update_patient(
                        uow, row, body.model_dump(include=fields), actor=uuid.UUID(who.subject), zone=zone
                    )
                except InvalidPatientError as exc:
                    raise HTTPException(422, str(exc)) from None
                row = {**row, **changed}
        if access.allowed and not decision.allowed:
            raise HTTPException(403, "not allowed to change these fields")
        if not decision.allowed:
            return guard.refusal(patient_id, decision)
        return store.as_json(row)

    return r


def _shown(row: dict[str, Any], reach: dict[uuid.UUID, bool] | None) -> dict[str, Any]:
    if reach is None or row["id"] in reach:
        return store.as_json(row)
    full = store.as_json(row)
    return {k: full[k] for k in LOOKUP_FIELDS} | {"restricted": True}
