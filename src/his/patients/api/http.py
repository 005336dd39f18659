"""Internal HTTP API of the patients service (reached through the gateway).

Every route re-verifies the caller's token. Staff reach patients by role; a patient reaches
only the record linked to their own account, and any other id answers 404, exactly as an id
that does not exist, so ids cannot be probed.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from his.events.audit import PatientsRecordAccessed, record_access
from his.kernel.auth import authenticate, jwks_verifier, require
from his.kernel.problems import HTTPException
from his.kernel.security import Principal, TokenVerifier
from his.kernel.service import ServiceContext
from his.patients import handlers, store
from his.patients.domain import InvalidPatientError, NewPatient, Sex

REGISTRARS = ("RECEPTIONIST", "ADMIN")
STAFF = ("ADMIN", "RECEPTIONIST", "DOCTOR", "NURSE", "LAB_TECH", "BILLING")


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
    user_id: uuid.UUID | None = None
    coverage: Coverage | None = None


class Registered(BaseModel):
    id: uuid.UUID
    mrn: str


def router(ctx: ServiceContext, verifier: TokenVerifier | None = None) -> APIRouter:
    r = APIRouter(prefix="/patients", tags=["patients"])
    tokens = verifier or jwks_verifier()

    async def caller(request: Request) -> Principal:
        return await authenticate(request, tokens)

    @r.post("", status_code=201, response_model=Registered)
    async def register(body: RegisterPatient, request: Request) -> Registered:
        """Register a patient (RECEPTIONIST, ADMIN); publishes ``his.patients.patient.registered.v1``."""
        who = await caller(request)
        require(who, *REGISTRARS)
        coverage = (body.coverage.payer, body.coverage.member_id) if body.coverage else None
        cmd = NewPatient(
            body.given_name, body.family_name, body.birth_date, body.sex, body.email, body.phone, body.user_id, coverage
        )
        try:
            async with ctx.db.uow() as uow:
                patient_id, mrn = await handlers.register_patient(uow, cmd, actor=uuid.UUID(who.subject))
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
        except store.AccountLinkedError:
            raise HTTPException(409, "this user account is already linked to a patient") from None
        return Registered(id=patient_id, mrn=mrn)

    @r.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        """The caller's own patient record."""
        who = await caller(request)
        async with ctx.db.uow() as uow:
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
        request: Request, q: str = Query(min_length=2, max_length=100), limit: int = Query(default=20, ge=1, le=50)
    ) -> dict[str, Any]:
        """Find patients by MRN or family-name prefix (staff only)."""
        who = await caller(request)
        require(who, *STAFF)
        async with ctx.db.uow() as uow:
            rows = await store.search(uow.conn, q, limit)
            for row in rows:
                record_access(
                    uow,
                    PatientsRecordAccessed,
                    who,
                    patient_id=row["id"],
                    action="search",
                    resource="patient",
                    purpose="care",
                )
        return {"items": [store.as_json(row) for row in rows]}

    @r.get("/{patient_id}")
    async def get(patient_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """One patient's master data: staff, or the patient themself."""
        who = await caller(request)
        async with ctx.db.uow() as uow:
            row = await store.get_patient(uow.conn, patient_id)
            if row is None:
                raise HTTPException(404, "patient not found")
            owner = row["user_id"] is not None and str(row["user_id"]) == who.subject
            allowed = owner or who.has_any(*STAFF)
            record_access(
                uow,
                PatientsRecordAccessed,
                who,
                patient_id=patient_id,
                action="read",
                resource="patient",
                purpose="own_record" if owner else "care",
                outcome="allowed" if allowed else "denied",
            )
        if not allowed:
            raise HTTPException(404, "patient not found")  # the denial above is committed and audited
        return store.as_json(row)

    return r
