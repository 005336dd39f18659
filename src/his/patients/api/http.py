"""Internal HTTP API of the patients service (reached through the gateway)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from his.kernel.service import ServiceContext
from his.patients import handlers, store
from his.patients.domain import InvalidPatientError, NewPatient, Sex


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


def router(ctx: ServiceContext) -> APIRouter:
    r = APIRouter(prefix="/patients", tags=["patients"])

    @r.post("", status_code=201, response_model=Registered)
    async def register(body: RegisterPatient) -> Registered:
        """Register a patient; publishes ``his.patients.patient.registered.v1``."""
        cmd = NewPatient(body.given_name, body.family_name, body.birth_date, body.sex, body.email, body.phone)
        try:
            async with ctx.db.uow() as uow:
                patient_id, mrn = await handlers.register_patient(uow, cmd)
        except InvalidPatientError as exc:
            raise HTTPException(422, str(exc)) from None
        return Registered(id=patient_id, mrn=mrn)

    @r.get("/{patient_id}")
    async def get(patient_id: uuid.UUID) -> dict[str, Any]:
        """One patient's master data."""
        async with ctx.db.pool.acquire() as conn:
            row = await store.get_patient(conn, patient_id)
        if row is None:
            raise HTTPException(404, "patient not found")
        return store.as_json(row)

    return r
