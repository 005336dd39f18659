"""Events published by the patients service."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from his.kernel.events import Event, Superseded, event


@event
class PatientRegistered(Event):
    """A patient was registered. Carries the surrogate id only: fetch details over the API."""

    type = "his.patients.patient.registered.v1"
    patient_id: uuid.UUID
    registered_by: uuid.UUID | None = None
    #: The user account linked to the patient, if any (lets other services check ownership).
    account_id: uuid.UUID | None = None


@event
class EmergencyAccessGranted(Event):
    """A clinician broke the glass: time-limited access to one patient without a care relationship.

    Ids and expiry only: the stated reason stays in patients, readable by ADMIN and AUDITOR
    (``GET /api/patients/emergency-access``).
    """

    type = "his.patients.emergency_access.granted.v1"
    grant_id: uuid.UUID
    patient_id: uuid.UUID
    #: The clinician's user id, and their roles (codes).
    granted_to: uuid.UUID
    roles: list[str]
    granted_at: datetime
    expires_at: datetime


@event
class RecordEntryAdded(Event):
    """A clinician added an entry to a patient's medical record: its kind only, never its code
    (a diagnosis) or its text, which stay in patients."""

    type = "his.patients.record_entry.added.v2"
    entry_id: uuid.UUID
    patient_id: uuid.UUID
    kind: str


@event
class RecordEntryAddedV1(Superseded):
    """A clinician added an entry to a patient's medical record, with its code. No longer
    published: replaced by ``his.patients.record_entry.added.v2``, which leaves the code out."""

    type = "his.patients.record_entry.added.v1"
    entry_id: uuid.UUID
    patient_id: uuid.UUID
    kind: str
    code: str | None = None

    def upcast(self) -> RecordEntryAdded:
        """The same entry without its code."""
        return RecordEntryAdded(entry_id=self.entry_id, patient_id=self.patient_id, kind=self.kind)


@event
class PatientUpdated(Event):
    """A patient's master data changed: which fields (names only, never values)."""

    type = "his.patients.patient.updated.v1"
    patient_id: uuid.UUID
    fields: list[str]


@event
class CoverageChanged(Event):
    """A patient's insurance changed (payer code only; the member id stays in patients).

    ``payer`` is None when the patient became self-paying. Published at registration when
    coverage is given, and whenever it changes.
    """

    type = "his.patients.coverage.changed.v1"
    patient_id: uuid.UUID
    payer: str | None
    effective_from: date


@event
class InvitationIssued(Event):
    """Reception invited a patient to link the record to their own account (the patient portal).

    Ids, the channel and the expiry only: the invitation's code never travels on the bus.
    Notifications asks patients for it over gRPC when it sends the message.
    """

    type = "his.patients.invitation.issued.v1"
    invitation_id: uuid.UUID
    patient_id: uuid.UUID
    #: Where the code goes: ``email`` or ``sms`` (the patient's address on record).
    channel: str
    expires_at: datetime
    issued_by: uuid.UUID


@event
class InvitationRedeemed(Event):
    """A patient redeemed an invitation from their own account: the record is now linked to that
    account, as ``account_id`` of ``his.patients.patient.registered.v1`` would have said."""

    type = "his.patients.invitation.redeemed.v1"
    invitation_id: uuid.UUID
    patient_id: uuid.UUID
    account_id: uuid.UUID


@event
class EmergencyAccessOverLimit(Event):
    """A clinician broke the glass more often than the limit within the window: the grant stands
    (it is an emergency) and is marked for review; administrators are alerted. Ids and counts only."""

    type = "his.patients.emergency_access.over_limit.v1"
    grant_id: uuid.UUID
    patient_id: uuid.UUID
    granted_to: uuid.UUID
    granted_at: datetime
    #: The clinician's grants within the window, this one counted; the limit and the window (hours).
    grants_in_window: int
    limit: int
    window_hours: float


@event
class EmergencyAccessReviewed(Event):
    """An administrator reviewed a break-the-glass grant: ``reviewed`` (justified) or
    ``escalated`` (to be looked into). Ids and the decision only: the reviewer's note stays in
    patients."""

    type = "his.patients.emergency_access.reviewed.v1"
    grant_id: uuid.UUID
    patient_id: uuid.UUID
    granted_to: uuid.UUID
    reviewed_by: uuid.UUID
    decision: str
    reviewed_at: datetime
