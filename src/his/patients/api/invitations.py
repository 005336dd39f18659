"""Portal invitations over HTTP: reception issues, the patient redeems (``his.patients.invitations``).

An invitation's code is never in a response, a log line or an event: it reaches the patient
only in the message notifications sends to the address on record.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict, Field

from his.kernel.web import Caller, Moment, errors, public
from his.patients.api.access import Patients, router
from his.patients.api.patient import Patient
from his.patients.domain import Channel


class NewInvitation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Where to send the code: the patient's e-mail address or phone on record.
    channel: Channel = Channel.EMAIL


class Invitation(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    patient_id: uuid.UUID
    channel: Channel
    expires_at: Moment


class Redeem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: The code from the invitation message, e.g. ``7KQ2-M9XD-4RTA`` (blanks, dashes and case do not matter).
    code: str = Field(min_length=1, max_length=64)


@router.post(
    "/invitations/redeem",
    responses=errors(
        403,
        (404, "unknown code"),
        (409, "used, replaced or expired invitation, or an account or record linked already"),
    ),
    openapi_extra=public("/api/patients/invitations/redeem"),
)
async def redeem(body: Redeem, who: Caller, chart: Patients) -> Patient:
    """Redeem an invitation's code from the patient's own account (role PATIENT only, not yet
    linked to a record): the record it was issued for becomes the caller's (``GET
    /api/patients/me``). Publishes ``his.patients.invitation.redeemed.v1``. 404 for an unknown
    code; 409 for a used, replaced or expired invitation, or an account or record linked already."""
    return Patient.model_validate(await chart.redeem(who, body.code))


@router.post(
    "/{patient_id}/invitations",
    status_code=201,
    responses=errors(403, 404, 409),
    openapi_extra=public("/api/patients/{id}/invitations"),
)
async def issue(patient_id: uuid.UUID, who: Caller, chart: Patients, body: NewInvitation | None = None) -> Invitation:
    """Invite a patient to link their record to their own account (RECEPTIONIST, ADMIN): a
    one-time code goes to the patient's e-mail address (or phone, ``channel: sms``) and is
    valid for ``HIS_INVITATION_MINUTES``. A new invitation replaces the patient's outstanding
    one. Publishes ``his.patients.invitation.issued.v1``; the code is in no response or event."""
    return Invitation.model_validate(await chart.invite(who, patient_id, (body or NewInvitation()).channel))
