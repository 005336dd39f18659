"""Use cases of portal invitations: reception invites a patient, the patient links their record.

A record registered at reception has no account. Reception issues an invitation; notifications
sends its code to the patient's e-mail address or phone (asking patients for the code over gRPC,
so it never travels on the bus); the patient signs in to their own account and redeems it, which
links the record to that account. Each step is audited and announced by ids only. The code is
never stored (only its digest), never logged, and shown to no one but the patient.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from his.events.audit import Outcome, PatientsRecordAccessed, record_access
from his.events.patients import InvitationIssued, InvitationRedeemed
from his.kernel.ports import Work
from his.kernel.security import Principal
from his.patients.domain import (
    AccountLinkedError,
    Channel,
    Invitation,
    InvitationCodes,
    Patient,
    Refusal,
    code_digest,
    invitation_expiry,
    normalise_code,
)
from his.patients.ports import Invitations, PatientsWork


class PatientNotFoundError(LookupError):
    """No patient has this id."""


class RecordAlreadyLinkedError(Exception):
    """The patient's record is linked to an account already: there is nothing to invite to."""


class NoAddressError(ValueError):
    """The patient has no address on the chosen channel."""


class AccountAlreadyLinkedError(Exception):
    """The redeeming account is linked to a patient record already."""


@dataclass(frozen=True)
class Redemption:
    """The outcome of a redemption: the linked record, or why the code was refused."""

    patient: Patient | None
    refusal: Refusal | None = None
    expired_at: datetime | None = None


async def issue(
    uow: PatientsWork,
    patient_id: uuid.UUID,
    channel: Channel,
    who: Principal,
    *,
    codes: InvitationCodes,
    minutes: float,
) -> Invitation:
    """Invite the patient to link their record to their own account, now; supersedes an
    outstanding invitation."""
    now = uow.clock()
    patient = await uow.patients.get(patient_id, lock=True)
    if patient is None:
        raise PatientNotFoundError(str(patient_id))
    if patient.user_id is not None:
        raise RecordAlreadyLinkedError(str(patient_id))
    if not (patient.email if channel is Channel.EMAIL else patient.phone):
        raise NoAddressError(channel.value)
    await uow.invitations.supersede(patient_id, now)
    invitation_id, expires_at = uuid.uuid4(), invitation_expiry(now, minutes)
    invitation = Invitation(
        id=invitation_id,
        patient_id=patient_id,
        code_digest=code_digest(codes.code(invitation_id)),
        channel=channel,
        issued_by=uuid.UUID(who.subject),
        issued_at=now,
        expires_at=expires_at,
    )
    await uow.invitations.add(invitation)
    record_access(
        uow,
        PatientsRecordAccessed,
        who,
        patient_id=patient_id,
        action="create",
        resource="patient/invitation",
        purpose="portal_invitation",
    )
    uow.add(
        InvitationIssued(
            invitation_id=invitation_id,
            patient_id=patient_id,
            channel=channel.value,
            expires_at=expires_at,
            issued_by=uuid.UUID(who.subject),
        ),
        aggregate_id=invitation_id,
    )
    return invitation


async def redeem(uow: PatientsWork, code: str, who: Principal) -> Redemption:
    """Link the record an invitation was issued for to the caller's account (a PATIENT-only
    account, checked by the caller of this function).

    A refused code is returned, not raised, so that the audit record of the attempt commits.
    Raises ``InvalidInvitationCodeError`` for text that is not a code at all, and
    ``AccountAlreadyLinkedError`` if the account has a record already.
    """
    digest = code_digest(normalise_code(code))
    now = uow.clock()
    user_id = uuid.UUID(who.subject)
    if await uow.patients.of_user(user_id) is not None:
        raise AccountAlreadyLinkedError(str(user_id))
    found = await uow.invitations.by_digest(digest)
    if found is None:
        _attempt(uow, who, None, "denied")
        return Redemption(None, Refusal.UNKNOWN)
    # The patient's row first, then the invitation's, as issuing locks them: no deadlock between the two.
    patient = await uow.patients.get(found.patient_id, lock=True)
    invitation = await uow.invitations.by_digest(digest, lock=True)
    assert patient is not None and invitation is not None  # foreign key; invitations are never deleted
    refusal = invitation.refusal(now, record_linked=patient.user_id is not None)
    if refusal is not None:
        _attempt(uow, who, patient.id, "denied")
        expired = invitation.expires_at if refusal is Refusal.EXPIRED else None
        return Redemption(None, refusal, expired)
    try:
        await uow.invitations.redeem(invitation.id, patient.id, user_id, now)
    except AccountLinkedError:  # a concurrent redemption linked this account first
        raise AccountAlreadyLinkedError(str(user_id)) from None
    _attempt(uow, who, patient.id, "allowed")
    uow.add(
        InvitationRedeemed(invitation_id=invitation.id, patient_id=patient.id, account_id=user_id),
        aggregate_id=invitation.id,
    )
    return Redemption(replace(patient, user_id=user_id))


def _attempt(uow: Work, who: Principal, patient_id: uuid.UUID | None, outcome: Outcome) -> None:
    """The audit record of a redemption: linking a record to an account is a write of it."""
    record_access(
        uow,
        PatientsRecordAccessed,
        who,
        patient_id=patient_id,
        action="update",
        resource="patient/account",
        purpose="own_record",
        outcome=outcome,
    )


@dataclass(frozen=True)
class Message:
    """What notifications needs to send an invitation: the code, to the patient, before it expires."""

    invitation_id: uuid.UUID
    patient_id: uuid.UUID
    channel: Channel
    code: str
    expires_at: datetime


async def message(
    invitations: Invitations, invitation_id: uuid.UUID, codes: InvitationCodes, now: datetime
) -> Message | Refusal:
    """The code to send for an invitation, or why it is no longer worth sending."""
    found = await invitations.get(invitation_id)
    if found is None:
        return Refusal.UNKNOWN
    invitation, record_linked = found
    refusal = invitation.refusal(now, record_linked=record_linked)
    if refusal is not None:
        return refusal
    code = codes.recover(invitation_id, invitation.code_digest)
    if code is None:  # the key that made it is no longer configured: a new invitation is needed
        return Refusal.SUPERSEDED
    return Message(invitation_id, invitation.patient_id, invitation.channel, code, invitation.expires_at)
