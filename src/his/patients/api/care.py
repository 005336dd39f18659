"""Care teams and break-the-glass, under /patients (reached through the gateway)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from his.access import REASON_MAX
from his.kernel.params import Limit
from his.kernel.web import Caller, Moment, errors, public
from his.patients import domain
from his.patients.api.access import ONE_PATIENT, Patients, router
from his.patients.chart import ReviewItem


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
    #: Why access is needed now, in a sentence: placeholders ("test", "asdf", "acil", "n/a" …)
    #: and the same words given for another patient within a day are refused with 422 naming the
    #: ``rule``. Kept in patients; never published.
    reason: str = Field(max_length=REASON_MAX)


class EmergencyGrant(BaseModel):
    grant_id: uuid.UUID
    patient_id: uuid.UUID
    expires_at: Moment

    @classmethod
    def of(cls, g: domain.EmergencyGrant) -> EmergencyGrant:
        return cls(grant_id=g.id, patient_id=g.patient_id, expires_at=g.expires_at)


class ReadUnderGrant(BaseModel):
    """What patients gave the clinician under the grant: the resource, how, when."""

    resource: str
    action: str
    at: Moment


class EmergencyGrantRecord(BaseModel):
    grant_id: uuid.UUID
    patient_id: uuid.UUID
    #: The patient's MRN (null only if the patient is unknown here).
    mrn: str | None
    user_id: uuid.UUID
    roles: list[str]
    reason: str
    granted_at: Moment
    expires_at: Moment
    active: bool
    #: How long the grant has been open (to its end, or to now while active), in minutes.
    lasted_minutes: float
    #: What patients gave the clinician under the grant, the earliest first. What other services
    #: gave under it is in the patient's audit trail (``audit_trail``), flagged.
    reads: list[ReadUnderGrant]
    #: Where the patient's whole audit trail is read (ADMIN, AUDITOR).
    audit_trail: str
    #: The clinician's grants within the limit's window went over the limit with this one.
    over_limit: bool
    #: ``pending``, ``reviewed`` or ``escalated``.
    review_state: str
    reviewed_by: uuid.UUID | None
    reviewed_at: Moment | None
    #: The reviewer's note (kept in patients; never published).
    review_note: str | None

    @classmethod
    def of(cls, item: ReviewItem, now: datetime) -> EmergencyGrantRecord:
        g = item.grant
        return cls(
            grant_id=g.id,
            patient_id=g.patient_id,
            mrn=item.mrn,
            user_id=g.user_id,
            roles=list(g.roles),
            reason=g.reason,
            granted_at=g.granted_at,
            expires_at=g.expires_at,
            active=g.active(now),
            lasted_minutes=round(g.lasted(now).total_seconds() / 60, 2),
            reads=[ReadUnderGrant(resource=r.resource, action=r.action, at=r.at) for r in item.reads],
            audit_trail=f"/api/audit?patient_id={g.patient_id}",
            over_limit=g.over_limit,
            review_state=g.review_state.value,
            reviewed_by=g.reviewed_by,
            reviewed_at=g.reviewed_at,
            review_note=g.review_note,
        )


class EmergencyGrants(BaseModel):
    items: list[EmergencyGrantRecord]


class ReviewEmergencyAccess(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: ``reviewed`` (the access was justified) or ``escalated`` (to be looked into).
    decision: Literal["reviewed", "escalated"]
    #: Why, for the record; needed to escalate. Kept in patients; never published.
    note: str | None = Field(default=None, max_length=domain.REVIEW_NOTE_MAX)


@router.get("/emergency-access", responses=errors(403), openapi_extra=public("/api/patients/emergency-access"))
async def grants(
    who: Caller,
    chart: Patients,
    patient_id: uuid.UUID | None = None,
    state: Literal["pending", "reviewed", "escalated"] | None = None,
    limit: Limit = 50,
) -> EmergencyGrants:
    """The break-the-glass review queue, newest first (ADMIN, AUDITOR): each grant with who, the
    patient (id and MRN), when, the stated reason, how long it lasted, what patients gave under
    it, whether it went over the clinician's limit, and its review; of one patient or all, in one
    review ``state`` or any. Reading it is audited."""
    now = chart.clock()
    wanted = domain.ReviewState(state) if state is not None else None
    return EmergencyGrants(
        items=[EmergencyGrantRecord.of(i, now) for i in await chart.grants(who, patient_id, limit, wanted)]
    )


@router.post(
    "/emergency-access/{grant_id}/review",
    responses=errors(403, 404, 409, 422),
    openapi_extra=public("/api/patients/emergency-access/{grant_id}/review"),
)
async def review(
    grant_id: uuid.UUID, body: ReviewEmergencyAccess, who: Caller, chart: Patients
) -> EmergencyGrantRecord:
    """Review one emergency access (ADMIN, never one's own): ``reviewed`` or ``escalated`` (with a
    note); an escalated one may later be closed as reviewed, a reviewed one stays so (409). The
    decision is announced (``his.patients.emergency_access.reviewed.v1``, no note) and audited
    (``update`` of ``emergency_access``, purpose ``review``)."""
    done = await chart.review(who, grant_id, domain.ReviewState(body.decision), body.note)
    return EmergencyGrantRecord.of(done, chart.clock())


@router.post(
    "/{patient_id}/emergency-access",
    status_code=201,
    responses=errors(403, 404, 422),
    openapi_extra=public("/api/patients/{id}/emergency-access"),
)
async def break_the_glass(
    patient_id: uuid.UUID, body: RequestEmergencyAccess, who: Caller, chart: Patients
) -> EmergencyGrant:
    """Emergency access to one patient without a care relationship (DOCTOR, NURSE).

    Needs a reason that says why (a placeholder is a 422 naming its ``rule``); lasts
    ``HIS_EMERGENCY_ACCESS_MINUTES`` (default 60) for this patient only. The grant and every
    read under it are audited and flagged; administrators are alerted
    (``his.patients.emergency_access.granted.v1``, ids only), and once more when the clinician
    goes over ``HIS_EMERGENCY_ACCESS_LIMIT`` grants within ``HIS_EMERGENCY_ACCESS_WINDOW_HOURS``
    (``…over_limit.v1``): the grant stands, marked for review.
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
