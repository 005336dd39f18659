"""What the patients' use cases work through: the master patient index, clinician accounts,
care relationships (assigned, or following from appointments and admissions), emergency grants,
the medical record, lab results in the chart and portal invitations, inside a unit of work
(``his.kernel.ports``). The store implements them on PostgreSQL (``his.patients.store``);
``his.testing.patients`` in memory, for unit tests. Both pass the same contract tests
(``tests/integration/test_patients_contract.py``).

A record entry's text is kept as the use case gives it: ciphertext (``Chart`` encrypts and
decrypts it with the field cipher); the repositories never see the clear text.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Protocol

from his.kernel.ports import Units, Work
from his.patients.domain import (
    CareRelationship,
    ContactDetails,
    EmergencyGrant,
    EmergencyRead,
    Invitation,
    NewCareRelationship,
    NewPatient,
    Patient,
    RecordEntry,
    ResultedOrder,
    ReviewState,
    Stored,
)


class Patients(Protocol):
    """The master patient index."""

    async def add(self, p: NewPatient, at: datetime) -> Patient:
        """A new patient, registered ``at``, with the next medical record number;
        ``AccountLinkedError`` when ``p.user_id`` is already another patient's."""
        ...

    async def get(self, patient_id: uuid.UUID, *, lock: bool = False) -> Patient | None:
        """The patient, if there is one; ``lock`` holds them until the unit of work ends (the
        changes to one patient's care team and invitations serialise on it)."""
        ...

    async def many(self, patient_ids: list[uuid.UUID]) -> list[Patient]:
        """The patients with these ids, each once, in no particular order; ids no patient has
        are left out."""
        ...

    async def of_user(self, user_id: uuid.UUID) -> Patient | None:
        """The patient whose record is linked to this user account."""
        ...

    async def contact(self, patient_id: uuid.UUID) -> ContactDetails | None:
        """Only what is needed to reach the patient."""
        ...

    async def search(self, q: str | None, birth_date: date | None, limit: int) -> list[Patient]:
        """By MRN (exact, any case), by name and/or by birth date; the MRN's patient first, then
        the best name matches, ties by family name, given name and id. ``q`` is taken literally
        (``%``, ``_`` and ``\\`` match themselves)."""
        ...

    async def likely_duplicates(self, p: NewPatient, limit: int = 5) -> list[Patient]:
        """Patients who are probably this one (same birth date and a similar name, the same
        e-mail address or the same phone number), the earliest registered first."""
        ...

    async def update(self, patient_id: uuid.UUID, changes: dict[str, Stored]) -> None:
        """Set these columns of master data (``his.patients.domain.master_data`` names them);
        other names are ignored."""
        ...


class Clinicians(Protocol):
    """Which user accounts are clinicians, and which account a practitioner is."""

    async def remember(self, user_id: uuid.UUID, roles: list[str], at: datetime) -> None:
        """A clinician account (known ``at``), or its roles changed."""
        ...

    async def known(self, user_id: uuid.UUID) -> bool:
        """Whether the user is a known clinician account."""
        ...

    async def remember_practitioner(self, practitioner_id: uuid.UUID, account_id: uuid.UUID) -> None:
        """The user account a practitioner is (the latest announcement wins)."""
        ...


class CareTeams(Protocol):
    """Care relationships: assigned by reception, or following from an appointment or admission
    with a practitioner whose account is known."""

    async def assigned(self, patient_id: uuid.UUID, user_id: uuid.UUID, at: datetime) -> uuid.UUID | None:
        """The user's assignment to the patient's care team active ``at``, if any."""
        ...

    async def assign(self, rel: NewCareRelationship, created_by: uuid.UUID | None, at: datetime) -> CareRelationship:
        """A new care relationship, made by ``created_by`` at ``at``."""
        ...

    async def end(self, patient_id: uuid.UUID, relationship_id: uuid.UUID, at: datetime, ended_by: uuid.UUID) -> bool:
        """End the patient's assigned relationship ``at`` (never before it began; one that has
        ended stays as it is); False if the patient has no such assignment."""
        ...

    async def follows_event(self, patient_id: uuid.UUID, link_id: uuid.UUID) -> bool:
        """Whether the id is the patient's appointment or admission that care follows from."""
        ...

    async def team(self, patient_id: uuid.UUID, at: datetime) -> list[CareRelationship]:
        """The patient's care relationships active ``at``, the earliest begun first (ties by id)."""
        ...

    async def basis(self, patient_id: uuid.UUID, user_id: uuid.UUID, at: datetime) -> tuple[bool, bool]:
        """(an active care relationship, an active emergency grant) of the user with the patient."""
        ...

    async def reachable(self, user_id: uuid.UUID, patient_ids: list[uuid.UUID], at: datetime) -> dict[uuid.UUID, bool]:
        """Which of these patients the user reaches ``at``: True through care, False only
        through an emergency grant; the others are absent."""
        ...

    async def merge_appointment(
        self,
        *,
        appointment_id: uuid.UUID,
        patient_id: uuid.UUID,
        practitioner_id: uuid.UUID,
        version: int,
        seen_at: datetime,
        until: datetime,
        cancelled_at: datetime | None,
    ) -> None:
        """Merge one appointment event into its care, in any order: the earliest start, the end
        of the latest version, the first cancellation."""
        ...

    async def merge_admission(
        self,
        *,
        admission_id: uuid.UUID,
        patient_id: uuid.UUID,
        practitioner_id: uuid.UUID | None,
        admitted_at: datetime,
        until: datetime | None,
    ) -> None:
        """Merge an admission (names the practitioner) or its discharge (sets the end), in any order."""
        ...


class EmergencyGrants(Protocol):
    """Break-the-glass grants, with their reasons, what was read under them and their review."""

    async def add(
        self,
        *,
        patient_id: uuid.UUID,
        user_id: uuid.UUID,
        roles: list[str],
        reason: str,
        granted_at: datetime,
        expires_at: datetime,
        over_limit: bool = False,
    ) -> EmergencyGrant:
        """A new grant, pending review (a reason of 20 to 500 characters, expiring after it is granted)."""
        ...

    async def find(
        self, *, patient_id: uuid.UUID | None, limit: int, state: ReviewState | None = None
    ) -> list[EmergencyGrant]:
        """Grants, the latest granted first (ties by id); of one patient or of all, in one review state or any."""
        ...

    async def get(self, grant_id: uuid.UUID, *, lock: bool = False) -> EmergencyGrant | None:
        """One grant; ``lock`` holds it until the unit ends (two reviews never cross)."""
        ...

    async def of_user(self, user_id: uuid.UUID, since: datetime) -> list[EmergencyGrant]:
        """The user's grants granted at or after ``since``, the latest first (ties by id)."""
        ...

    async def review(
        self, grant_id: uuid.UUID, *, state: ReviewState, by: uuid.UUID, at: datetime, note: str | None
    ) -> EmergencyGrant:
        """Record a review's decision on the grant (the last decision is the grant's state)."""
        ...

    async def note_read(
        self, *, patient_id: uuid.UUID, user_id: uuid.UUID, resource: str, action: str, at: datetime
    ) -> bool:
        """Note a read of the patient's data by the user under their grant active ``at`` (the
        latest granted); False if none is active."""
        ...

    async def reads(self, grant_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[EmergencyRead]]:
        """What was read under each of these grants, the earliest first; grants without reads are absent."""
        ...


class Records(Protocol):
    """Entries of the medical record, their text encrypted by the use case."""

    async def add(
        self,
        *,
        entry_id: uuid.UUID,
        patient_id: uuid.UUID,
        kind: str,
        code: str | None,
        text_cipher: bytes,
        author_id: uuid.UUID,
        author_roles: list[str],
        at: datetime,
    ) -> RecordEntry:
        """A new entry, written ``at``."""
        ...

    async def of(self, patient_id: uuid.UUID, limit: int) -> list[RecordEntry]:
        """The patient's entries, the latest first (ties by id)."""
        ...


class LabResults(Protocol):
    """The chart's copy of the laboratory's results."""

    async def add(self, order: ResultedOrder, at: datetime) -> int:
        """Add an order's results (received ``at``); results already there (same order and test)
        are kept as they are. How many were added."""
        ...

    async def of(self, patient_id: uuid.UUID, limit: int) -> list[ResultedOrder]:
        """The patient's ``limit`` most recently resulted orders (ties by order id), each with
        its results in the order they came."""
        ...


class Invitations(Protocol):
    """Portal invitations: at most one outstanding per patient; only the code's digest is kept."""

    async def supersede(self, patient_id: uuid.UUID, at: datetime) -> None:
        """The patient's outstanding invitation (if any) is revoked ``at``."""
        ...

    async def add(self, invitation: Invitation) -> None:
        """A new invitation (not redeemed, not revoked)."""
        ...

    async def by_digest(self, digest: bytes, *, lock: bool = False) -> Invitation | None:
        """The invitation whose code has this digest; ``lock`` holds it until the unit ends."""
        ...

    async def get(self, invitation_id: uuid.UUID) -> tuple[Invitation, bool] | None:
        """An invitation, and whether its patient's record is linked to an account yet."""
        ...

    async def redeem(self, invitation_id: uuid.UUID, patient_id: uuid.UUID, user_id: uuid.UUID, at: datetime) -> None:
        """Link the (unlinked) record to the account and mark the invitation redeemed ``at``;
        ``AccountLinkedError`` if the account is another patient's."""
        ...


class PatientsWork(Work, Protocol):
    """A unit of work of the patients service."""

    @property
    def patients(self) -> Patients: ...

    @property
    def clinicians(self) -> Clinicians: ...

    @property
    def care(self) -> CareTeams: ...

    @property
    def grants(self) -> EmergencyGrants: ...

    @property
    def records(self) -> Records: ...

    @property
    def lab(self) -> LabResults: ...

    @property
    def invitations(self) -> Invitations: ...


#: Where the patients' units of work come from.
PatientsUnits = Units[PatientsWork]
