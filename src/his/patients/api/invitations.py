"""Portal invitations over HTTP: reception issues, the patient redeems (``his.patients.invitations``).

An invitation's code is never in a response, a log line or an event: it reaches the patient
only in the message notifications sends to the address on record.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from his.kernel.problems import HTTPException, ProblemError
from his.kernel.service import ServiceContext
from his.patients import invitations, store
from his.patients.api.access import Guard
from his.patients.domain import Channel, InvalidInvitationCodeError, InvitationCodes, Refusal, may_redeem
from his.patients.policy import Operation

#: What the patient is told when a code cannot be redeemed, and with which status.
REFUSALS: dict[Refusal, tuple[int, str]] = {
    Refusal.UNKNOWN: (404, "no invitation has this code; check it against the message, or ask reception"),
    Refusal.REDEEMED: (409, "this invitation has been used already"),
    Refusal.SUPERSEDED: (409, "this invitation was replaced by a newer one; use the code of the latest message"),
    Refusal.EXPIRED: (409, "this invitation has expired; ask reception for a new one"),
    Refusal.RECORD_LINKED: (409, "this patient record is linked to an account already"),
}


class NewInvitation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Where to send the code: the patient's e-mail address or phone on record.
    channel: Channel = Channel.EMAIL


class Invitation(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    channel: Channel
    expires_at: datetime


class Redeem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: The code from the invitation message, e.g. ``7KQ2-M9XD-4RTA`` (blanks, dashes and case do not matter).
    code: str = Field(min_length=1, max_length=64)


def invitations_router(ctx: ServiceContext, guard: Guard, codes: InvitationCodes | None, minutes: float) -> APIRouter:
    r = APIRouter()

    def keys() -> InvitationCodes:
        if codes is None:
            raise HTTPException(503, "invitations need the records key (HIS_RECORDS_KEYS), which is not configured")
        return codes

    @r.post(
        "/invitations/redeem",
        responses={
            404: {"description": "unknown code"},
            409: {"description": "used, replaced or expired invitation, or an account or record linked already"},
        },
    )
    async def redeem(body: Redeem, request: Request) -> dict[str, Any]:
        """Redeem an invitation's code from the patient's own account (role PATIENT only, not yet
        linked to a record): the record it was issued for becomes the caller's (``GET
        /api/patients/me``). Publishes ``his.patients.invitation.redeemed.v1``."""
        who = await guard.caller(request)
        if not may_redeem(who.roles):
            raise HTTPException(403, "an invitation is redeemed from the patient's own account (role PATIENT only)")
        try:
            async with ctx.db.uow() as uow:  # commits the audit record of a refused attempt too
                done = await invitations.redeem(uow, body.code, who, now=guard.clock())
        except InvalidInvitationCodeError as exc:
            raise HTTPException(422, str(exc)) from None
        except invitations.AccountAlreadyLinkedError:
            raise HTTPException(409, "your account is linked to a patient record already") from None
        if done.refusal is not None:
            status, detail = REFUSALS[done.refusal]
            extra = {"expired_at": done.expired_at.isoformat()} if done.expired_at else {}
            raise ProblemError(status, detail, reason=done.refusal.value, **extra)
        assert done.patient is not None
        return store.as_json(done.patient)

    @r.post("/{patient_id}/invitations", status_code=201, response_model=Invitation)
    async def issue(patient_id: uuid.UUID, request: Request, body: NewInvitation | None = None) -> Invitation:
        """Invite a patient to link their record to their own account (RECEPTIONIST, ADMIN): a
        one-time code goes to the patient's e-mail address (or phone, ``channel: sms``) and is
        valid for ``HIS_INVITATION_MINUTES``. A new invitation replaces the patient's outstanding
        one. Publishes ``his.patients.invitation.issued.v1``; the code is in no response or event."""
        who = await guard.caller(request)
        async with ctx.db.uow() as uow:  # a refusal's audit record commits before the answer
            _, decision = await guard.decide(uow, who, patient_id, Operation.INVITE)
            if not decision.allowed:
                guard.audit(uow, who, patient_id, decision, resource="patient/invitation", action="create")
        if not decision.allowed:
            raise guard.error(patient_id, decision)
        channel = (body or NewInvitation()).channel
        try:
            async with ctx.db.uow() as uow:
                made = await invitations.issue(
                    uow, patient_id, channel, who, codes=keys(), now=guard.clock(), minutes=minutes
                )
        except invitations.PatientNotFoundError:
            raise HTTPException(404, "patient not found") from None
        except invitations.RecordAlreadyLinkedError:
            raise HTTPException(409, "this patient record is linked to an account already") from None
        except invitations.NoAddressError:
            what = "e-mail address" if channel is Channel.EMAIL else "phone"
            raise HTTPException(
                422,
                f"the patient has no {what} on record: add one (PATCH /api/patients/"
                f"{patient_id}) or choose the other channel",
            ) from None
        return Invitation(id=made.id, patient_id=made.patient_id, channel=made.channel, expires_at=made.expires_at)

    return r
