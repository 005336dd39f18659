"""Care teams and break-the-glass, under /patients (reached through the gateway)."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from his.access import REASON_MAX, REASON_MIN
from his.kernel.params import Limit
from his.kernel.web import Caller, Moment, errors, public
from his.patients import domain
from his.patients.api.access import ONE_PATIENT, Patients, router


class AssignToCareTeam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: The clinician's user id (the ``sub`` of their access token), not a practitioner id.
    user_id: uuid.UUID
    #: When the relationship ends; open-ended if omitted.
    until: AwareDatetime | None = None


class CareRelationship(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    patient_id: uuid.UUID
    user_id: uuid.UUID
    source: str
    valid_from: Moment
    valid_until: Moment | None


class CareTeam(BaseModel):
    items: list[CareRelationship]


class RequestEmergencyAccess(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Why access is needed now, in a sentence. Kept in patients; never published.
    reason: str = Field(min_length=REASON_MIN, max_length=REASON_MAX)


class EmergencyGrant(BaseModel):
    grant_id: uuid.UUID
    patient_id: uuid.UUID
    expires_at: Moment

    @classmethod
    def of(cls, g: domain.EmergencyGrant) -> EmergencyGrant:
        return cls(grant_id=g.id, patient_id=g.patient_id, expires_at=g.expires_at)


class EmergencyGrantRecord(BaseModel):
    grant_id: uuid.UUID
    patient_id: uuid.UUID
    user_id: uuid.UUID
    roles: list[str]
    reason: str
    granted_at: Moment
    expires_at: Moment
    active: bool

    @classmethod
    def of(cls, g: domain.EmergencyGrant, now: datetime) -> EmergencyGrantRecord:
        return cls(
            grant_id=g.id,
            patient_id=g.patient_id,
            user_id=g.user_id,
            roles=list(g.roles),
            reason=g.reason,
            granted_at=g.granted_at,
            expires_at=g.expires_at,
            active=g.active(now),
        )


class EmergencyGrants(BaseModel):
    items: list[EmergencyGrantRecord]


@router.get("/emergency-access", responses=errors(403), openapi_extra=public("/api/patients/emergency-access"))
async def grants(
    who: Caller, chart: Patients, patient_id: uuid.UUID | None = None, limit: Limit = 50
) -> EmergencyGrants:
    """Break-the-glass grants with their stated reasons, newest first (ADMIN, AUDITOR); of one patient or all."""
    now = chart.clock()
    return EmergencyGrants(items=[EmergencyGrantRecord.of(g, now) for g in await chart.grants(who, patient_id, limit)])


@router.post(
    "/{patient_id}/emergency-access",
    status_code=201,
    responses=errors(403, 404),
    openapi_extra=public("/api/patients/{id}/emergency-access"),
)
async def break_the_glass(
    patient_id: uuid.UUID, body: RequestEmergencyAccess, who: Caller, chart: Patients
) -> EmergencyGrant:
    """Emergency access to one patient without a care relationship (DOCTOR, NURSE).

    Needs a reason; lasts ``HIS_EMERGENCY_ACCESS_MINUTES`` (default 60) for this patient
    only. The grant and every read under it are audited and flagged; administrators are
    alerted (``his.patients.emergency_access.granted.v1``, ids only).
    """
    return EmergencyGrant.of(await chart.break_the_glass(who, patient_id, body.reason))


@router.get("/{patient_id}/care-team", responses=ONE_PATIENT, openapi_extra=public("/api/patients/{id}/care-team"))
async def team(patient_id: uuid.UUID, who: Caller, chart: Patients) -> CareTeam:
    """The patient's active care relationships: staff (clinicians need their own), or the patient themself."""
    return CareTeam(items=[CareRelationship.model_validate(r) for r in await chart.care_team(who, patient_id)])


@router.post(
    "/{patient_id}/care-team",
    status_code=201,
    responses=errors(403, 404, 409),
    openapi_extra=public("/api/patients/{id}/care-team"),
)
async def assign(patient_id: uuid.UUID, body: AssignToCareTeam, who: Caller, chart: Patients) -> CareRelationship:
    """Put a clinician (DOCTOR or NURSE user) on the patient's care team (RECEPTIONIST, ADMIN).

    Never oneself: an account that is both clinician and registrar asks another registrar,
    or requests emergency access (which is flagged and reported)."""
    return CareRelationship.model_validate(await chart.assign(who, patient_id, body.user_id, body.until))


@router.delete(
    "/{patient_id}/care-team/{relationship_id}",
    status_code=204,
    response_class=Response,
    responses=errors(403, 404, 409),
    openapi_extra=public("/api/patients/{id}/care-team/{relationship_id}"),
)
async def end(patient_id: uuid.UUID, relationship_id: uuid.UUID, who: Caller, chart: Patients) -> Response:
    """End a care relationship now (RECEPTIONIST, ADMIN); it stays on record as ended."""
    await chart.end_care(who, patient_id, relationship_id)
    return Response(status_code=204)
