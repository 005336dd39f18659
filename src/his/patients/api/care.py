"""Care teams and break-the-glass, under /patients (reached through the gateway)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from his.access import NONE, REASON_MAX, REASON_MIN, Role
from his.events.audit import PatientsRecordAccessed, record_access
from his.kernel.auth import require
from his.kernel.params import Limit
from his.kernel.problems import HTTPException
from his.kernel.service import ServiceContext
from his.patients import handlers, policy, store
from his.patients.api.access import CARE_REQUIRED_RESPONSE, Guard
from his.patients.domain import (
    InvalidCareRelationshipError,
    InvalidEmergencyReasonError,
)
from his.patients.policy import Operation, assigning

OVERSIGHT = (Role.ADMIN, Role.AUDITOR)
SELF_ASSIGNMENT = (
    "you cannot put yourself on a patient's care team: another receptionist or administrator does, or, in an"
    " emergency, request emergency access (audited, flagged and reported)"
)


class AssignToCareTeam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: The clinician's user id (the ``sub`` of their access token), not a practitioner id.
    user_id: uuid.UUID
    #: When the relationship ends; open-ended if omitted.
    until: AwareDatetime | None = None


class CareRelationship(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    user_id: uuid.UUID
    source: str
    valid_from: datetime
    valid_until: datetime | None


class CareTeam(BaseModel):
    items: list[CareRelationship]


class RequestEmergencyAccess(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Why access is needed now, in a sentence. Kept in patients; never published.
    reason: str = Field(min_length=REASON_MIN, max_length=REASON_MAX)


class EmergencyGrant(BaseModel):
    grant_id: uuid.UUID
    patient_id: uuid.UUID
    expires_at: datetime


class EmergencyGrantRecord(BaseModel):
    grant_id: uuid.UUID
    patient_id: uuid.UUID
    user_id: uuid.UUID
    roles: list[str]
    reason: str
    granted_at: datetime
    expires_at: datetime
    active: bool


class EmergencyGrants(BaseModel):
    items: list[EmergencyGrantRecord]


def care_router(ctx: ServiceContext, guard: Guard) -> APIRouter:
    r = APIRouter()

    @r.get("/emergency-access", response_model=EmergencyGrants)
    async def grants(request: Request, patient_id: uuid.UUID | None = None, limit: Limit = 50) -> EmergencyGrants:
        """Break-the-glass grants with their stated reasons, newest first (ADMIN, AUDITOR); of one patient or all."""
        who = await guard.caller(request)
        if patient_id is not None:  # a refusal about one patient is audited
            decision = policy.decide(Operation.OVERSEE_GRANTS, who.roles, NONE)
            if not decision.allowed:
                async with ctx.db.read() as uow:
                    Guard.audit(uow, who, patient_id, decision, resource="emergency_access", action="read")
        require(who, *OVERSIGHT)
        now = guard.clock()
        async with ctx.db.read() as uow:
            rows = await store.emergency_grants(uow.conn, patient_id=patient_id, limit=limit)
            for pid in dict.fromkeys(r["patient_id"] for r in rows):
                record_access(
                    uow,
                    PatientsRecordAccessed,
                    who,
                    patient_id=pid,
                    action="read",
                    resource="emergency_access",
                    purpose="oversight",
                )
        return EmergencyGrants(
            items=[
                EmergencyGrantRecord(
                    grant_id=r["id"],
                    patient_id=r["patient_id"],
                    user_id=r["user_id"],
                    roles=r["user_roles"],
                    reason=r["reason"],
                    granted_at=r["granted_at"],
                    expires_at=r["expires_at"],
                    active=r["granted_at"] <= now < r["expires_at"],
                )
                for r in rows
            ]
        )

    @r.post("/{patient_id}/emergency-access", status_code=201, response_model=EmergencyGrant)
    async def break_the_glass(patient_id: uuid.UUID, body: RequestEmergencyAccess, request: Request) -> EmergencyGrant:
        """Emergency access to one patient without a care relationship (DOCTOR, NURSE).

        Needs a reason; lasts ``HIS_EMERGENCY_ACCESS_MINUTES`` (default 60) for this patient
        only. The grant and every read under it are audited and flagged; administrators are
        alerted (``his.patients.emergency_access.granted.v1``, ids only).
        """
        who = await guard.caller(request)
        async with ctx.db.uow() as uow:
            _, decision = await guard.decide(uow, who, patient_id, Operation.BREAK_GLASS)
            if not decision.allowed:
                guard.audit(uow, who, patient_id, decision, resource="patient", action="break_glass")
        if not decision.allowed:
            raise guard.error(patient_id, decision, "emergency access is for clinicians (DOCTOR, NURSE)")
        try:
            async with ctx.db.uow() as uow:
                grant = await handlers.grant_emergency_access(
                    uow, patient_id, who, body.reason, minutes=guard.emergency_minutes, now=guard.clock()
                )
        except InvalidEmergencyReasonError as exc:
            raise HTTPException(422, str(exc)) from None
        except handlers.PatientNotFoundError:
            raise HTTPException(404, "patient not found") from None
        return EmergencyGrant(grant_id=grant.grant_id, patient_id=grant.patient_id, expires_at=grant.expires_at)

    @r.get("/{patient_id}/care-team", response_model=CareTeam, responses=CARE_REQUIRED_RESPONSE)
    async def team(patient_id: uuid.UUID, request: Request) -> Any:
        """The patient's active care relationships: staff (clinicians need their own), or the patient themself."""
        who = await guard.caller(request)
        async with ctx.db.read() as uow:
            _, decision = await guard.open(uow, who, patient_id, Operation.READ, resource="care_team")
            rows = await store.care_team(uow.conn, patient_id, guard.clock()) if decision.allowed else []
        if not decision.allowed:
            return guard.refusal(patient_id, decision)
        return CareTeam(items=[CareRelationship(**r) for r in rows])

    @r.post("/{patient_id}/care-team", status_code=201, response_model=CareRelationship)
    async def assign(patient_id: uuid.UUID, body: AssignToCareTeam, request: Request) -> CareRelationship:
        """Put a clinician (DOCTOR or NURSE user) on the patient's care team (RECEPTIONIST, ADMIN).

        Never oneself: an account that is both clinician and registrar asks another registrar,
        or requests emergency access (which is flagged and reported)."""
        who = await guard.caller(request)
        actor = uuid.UUID(who.subject)
        async with ctx.db.uow() as uow:
            _, access = await guard.decide(uow, who, patient_id, Operation.MANAGE_CARE_TEAM)
            decision = assigning(access, actor, body.user_id)
            if not decision.allowed:
                guard.audit(uow, who, patient_id, decision, resource="care_team", action="create")
        if access.allowed and not decision.allowed:
            raise guard.error(patient_id, decision, SELF_ASSIGNMENT)
        if not decision.allowed:
            raise guard.error(patient_id, decision)
        try:
            async with ctx.db.uow() as uow:
                row = await handlers.assign_to_care_team(
                    uow, patient_id, body.user_id, body.until, actor=actor, now=guard.clock()
                )
                guard.audit(uow, who, patient_id, decision, resource="care_team", action="create")
        except InvalidCareRelationshipError as exc:
            raise HTTPException(422, str(exc)) from None
        except handlers.PatientNotFoundError:
            raise HTTPException(404, "patient not found") from None
        except handlers.NotAClinicianError:
            raise HTTPException(422, "user_id is not a known clinician account (DOCTOR or NURSE)") from None
        except handlers.AlreadyOnCareTeamError:
            raise HTTPException(409, "this clinician is already on the patient's care team") from None
        return CareRelationship(**row)

    @r.delete("/{patient_id}/care-team/{relationship_id}", status_code=204, response_class=Response)
    async def end(patient_id: uuid.UUID, relationship_id: uuid.UUID, request: Request) -> Response:
        """End a care relationship now (RECEPTIONIST, ADMIN); it stays on record as ended."""
        who = await guard.caller(request)
        async with ctx.db.uow() as uow:
            _, decision = await guard.decide(uow, who, patient_id, Operation.MANAGE_CARE_TEAM)
            ended = decision.allowed and await store.end_care_relationship(
                uow.conn, patient_id, relationship_id, guard.clock(), uuid.UUID(who.subject)
            )
            if ended or not decision.allowed:
                guard.audit(uow, who, patient_id, decision, resource="care_team", action="update")
        if not decision.allowed:
            raise guard.error(patient_id, decision)
        if not ended:
            async with ctx.db.pool.acquire() as conn:
                if await store.is_event_care(conn, patient_id, relationship_id):
                    raise HTTPException(
                        409,
                        "this care relationship follows from an appointment or admission; "
                        "it ends with it (cancel the appointment, or discharge)",
                    )
            raise HTTPException(404, "this patient has no such care relationship")
        return Response(status_code=204)

    return r
