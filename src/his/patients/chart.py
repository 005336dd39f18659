"""The use cases patients' routes call: registration, master data, search, the care team,
emergency access, the medical record, lab results and portal invitations.

Every use case that reaches one patient opens it through ``Chart.open``: the caller's
relationship to the patient (their own record, a care relationship, an emergency grant) is read
from the tables, ``his.patients.policy`` decides, and the decision, allowed or denied, is recorded
in the same transaction as the read. A refusal is raised as ``his.access`` says: 404 to a caller
who may not know the patient exists, 403 to staff, with an offer of emergency access to a
clinician. Each use case opens its own unit of work.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, tzinfo

from his.access import CLINICIANS, NONE, Decision, Role, refusal
from his.clients.billing import BillingTermsLookup, UnknownValueError, known_payer
from his.events.audit import Action, PatientsRecordAccessed, record_access
from his.events.patients import RecordEntryAdded
from his.kernel.clock import Clock, utc_now
from his.kernel.crypto import DecryptionError, FieldCipher
from his.kernel.ports import Work
from his.kernel.problems import ProblemError
from his.kernel.security import Principal
from his.patients import handlers, invitations, policy
from his.patients.domain import (
    CareRelationship,
    Channel,
    DecryptedEntry,
    EmergencyGrant,
    EmergencyLimit,
    EmergencyRead,
    InvalidCareRelationshipError,
    InvalidEmergencyReasonError,
    InvalidInvitationCodeError,
    InvalidPatientError,
    InvalidReviewError,
    Invitation,
    InvitationCodes,
    NewPatient,
    Patient,
    PatientChanges,
    RecordEntry,
    Refusal,
    ResultedOrder,
    ReviewNotAllowedError,
    ReviewState,
    may_redeem,
)
from his.patients.policy import REGISTRARS, ROLE_BASED, Operation, assigning, changing
from his.patients.ports import PatientsUnits, PatientsWork

__all__ = ["MAX_IDS", "Chart", "Clock", "Found", "lookup", "utc_now"]

#: The most patients one look-up by id names.
MAX_IDS = 200

OVERSIGHT = frozenset({Role.ADMIN, Role.AUDITOR})
SELF_ASSIGNMENT = (
    "you cannot put yourself on a patient's care team: another receptionist or administrator does, or, in an"
    " emergency, request emergency access (audited, flagged and reported)"
)
#: What the patient is told when a code cannot be redeemed, and with which status.
REFUSALS: dict[Refusal, tuple[int, str]] = {
    Refusal.UNKNOWN: (404, "no invitation has this code; check it against the message, or ask reception"),
    Refusal.REDEEMED: (409, "this invitation has been used already"),
    Refusal.SUPERSEDED: (409, "this invitation was replaced by a newer one; use the code of the latest message"),
    Refusal.EXPIRED: (409, "this invitation has expired; ask reception for a new one"),
    Refusal.RECORD_LINKED: (409, "this patient record is linked to an account already"),
}


def lookup(p: Patient) -> dict[str, str]:
    """What a clinician's search shows of a patient they have no care relationship with, and a
    409 of a likely duplicate: enough to recognise the patient (and request emergency access),
    no contact or coverage details."""
    return {
        "id": str(p.id),
        "mrn": p.mrn,
        "given_name": p.given_name,
        "family_name": p.family_name,
        "birth_date": p.birth_date.isoformat(),
        "sex": p.sex.value,
    }


@dataclass(frozen=True)
class ReviewItem:
    """A grant in the review queue: the grant and its review, the patient's MRN (None if the
    patient is unknown) and what patients gave the clinician under it."""

    grant: EmergencyGrant
    mrn: str | None
    reads: tuple[EmergencyRead, ...]


@dataclass(frozen=True)
class Found:
    """A search hit: the patient, and whether the caller sees only its ``lookup`` (a clinician,
    of a patient outside their care)."""

    patient: Patient
    restricted: bool
    #: Shown whole only through an emergency grant (noted for the grant's review).
    emergency: bool = False


class Chart:
    """Patients' use cases over its units of work (``his.patients.ports``), the field cipher and
    billing's payer plans. Each decides by its unit's clock; ``clock`` (the same clock) is what
    the routes call now when they present what a use case returned (a grant still active)."""

    def __init__(
        self,
        units: PatientsUnits,
        *,
        clock: Clock = utc_now,
        emergency_minutes: float = 60.0,
        emergency_limit: EmergencyLimit | None = None,
        cipher: FieldCipher | None = None,
        payers: BillingTermsLookup | None = None,
        invitation_codes: InvitationCodes | None = None,
        invitation_minutes: float = 3 * 24 * 60,
        zone: tzinfo = UTC,
    ) -> None:
        self.units, self.clock, self.emergency_minutes = units, clock, emergency_minutes
        self.emergency_limit = emergency_limit or EmergencyLimit()
        self.cipher, self.payers, self.codes = cipher, payers, invitation_codes
        self.invitation_minutes, self.zone = invitation_minutes, zone

    # --- master data -----------------------------------------------------------------------------

    async def register(self, who: Principal, cmd: NewPatient, *, confirm_duplicate: bool) -> tuple[uuid.UUID, str]:
        """Register a patient (RECEPTIONIST, ADMIN). Likely duplicates answer 409 naming them
        (each one shown is an audited read), unless ``confirm_duplicate``. A record is never
        linked to an account here (``user_id`` is a 422): the patient redeems an invitation."""
        if not who.has_any(*REGISTRARS):
            raise ProblemError(403, "not allowed for your role")
        if cmd.user_id is not None:
            raise ProblemError(
                422,
                "user_id cannot be set: the patient links their own account by redeeming an "
                "invitation (POST /api/patients/{id}/invitations)",
            )
        if cmd.coverage is not None:
            cmd = replace(cmd, coverage=(await self.checked_coverage(cmd.coverage[0]), cmd.coverage[1]))
        try:
            async with self.units.uow() as uow:  # commits the audit records of duplicates shown, too
                found = [] if confirm_duplicate else await self.duplicates(uow, who, cmd)
                if not found:
                    added = await handlers.register(uow, cmd, actor=uuid.UUID(who.subject), zone=self.zone)
                    self.record(uow, who, added.id, Decision("registration"), resource="patient", action="create")
        except InvalidPatientError as exc:
            raise ProblemError(422, str(exc)) from None
        if found:
            raise ProblemError(
                409,
                "likely duplicates of this patient exist; register anyway with confirm_duplicate: true",
                possible_duplicates=found,
            )
        return added.id, added.mrn

    async def duplicates(self, uow: PatientsWork, who: Principal, cmd: NewPatient) -> list[dict[str, str]]:
        """Likely duplicates of the patient being registered; each one shown is an audited read."""
        try:
            valid = cmd.validated(handlers.hospital_today(uow, self.zone))
        except InvalidPatientError:
            return []  # the registration itself will say what is wrong
        found = await uow.patients.likely_duplicates(valid)
        for p in found:
            self.record(uow, who, p.id, Decision("registration"), resource="patient", action="search")
        return [lookup(p) for p in found]

    async def checked_coverage(self, payer: str) -> str:
        """The payer as billing spells it; one billing has no plan for is a 422 naming the plans
        (billing owns them: it would bill such a patient as nobody's)."""
        if self.payers is None:
            raise ProblemError(503, "payer plans cannot be checked: billing is not reachable from patients")
        try:
            return known_payer(await self.payers.terms(), payer)
        except UnknownValueError as exc:
            raise exc.problem() from None

    async def mine(self, who: Principal) -> Patient:
        """The caller's own patient record."""
        async with self.units.read() as uow:
            patient = await uow.patients.of_user(uuid.UUID(who.subject))
            if patient is None:
                raise ProblemError(404, "no patient record is linked to your account")
            self.record(uow, who, patient.id, Decision("own_record"), resource="patient", action="read")
        return patient

    async def search(self, who: Principal, q: str | None, birth_date: date | None, limit: int) -> list[Found]:
        """Patients by MRN, name and/or birth date, best first (staff). A clinician sees the whole
        record only of patients in their care (or under a grant, recorded as emergency access)."""
        self.may_list(who)
        if q is None and birth_date is None:
            raise ProblemError(422, "give q (MRN or name), birth_date, or both")
        async with self.units.read() as uow:
            found = await self.shown(uow, who, await uow.patients.search(q, birth_date, limit), action="search")
        await self.noted(who, [(f.patient.id, "patient", "search") for f in found if f.emergency])
        return found

    async def by_ids(self, who: Principal, patient_ids: list[uuid.UUID]) -> list[Found]:
        """Patients by id, at most ``MAX_IDS`` of them, in the order given (each once), ids no
        patient has left out: shown and recorded as the search shows and records its results,
        each one as read."""
        self.may_list(who)
        if len(patient_ids) > MAX_IDS:
            raise ProblemError(422, f"give at most {MAX_IDS} ids (given: {len(patient_ids)})")
        wanted = list(dict.fromkeys(patient_ids))
        async with self.units.read() as uow:
            known = {p.id: p for p in await uow.patients.many(wanted)}
            found = await self.shown(uow, who, [known[i] for i in wanted if i in known], action="read")
        await self.noted(who, [(f.patient.id, "patient", "read") for f in found if f.emergency])
        return found

    @staticmethod
    def may_list(who: Principal) -> None:
        """Lists of patients (a search, a look-up by ids) are for staff: 403 to anyone else."""
        if not policy.decide(Operation.SEARCH, who.roles, NONE).allowed:
            raise ProblemError(403, "not allowed for your role")

    async def shown(self, uow: PatientsWork, who: Principal, found: list[Patient], *, action: Action) -> list[Found]:
        """What a list of patients shows the caller, each patient recorded in ``uow`` (as
        ``action``): the whole record to roles that reach every patient, and to a clinician of the
        patients in their care or under a grant (recorded as emergency access); of the others
        only their lookup."""
        reach: dict[uuid.UUID, bool] | None = None  # None: the caller's role reaches every patient
        if who.roles & CLINICIANS and not who.roles & ROLE_BASED and found:
            ids = [p.id for p in found]
            reach = await uow.care.reachable(uuid.UUID(who.subject), ids, uow.clock())
        for p in found:
            emergency = reach is not None and reach.get(p.id) is False
            purpose = "emergency" if emergency else "care"
            self.record(uow, who, p.id, Decision(purpose), resource="patient", action=action)
        return [
            Found(p, reach is not None and p.id not in reach, reach is not None and reach.get(p.id) is False)
            for p in found
        ]

    async def patient(self, who: Principal, patient_id: uuid.UUID) -> Patient:
        """One patient's master data: the patient themself, or staff (clinicians need care)."""
        async with self.units.read() as uow:
            patient, decision = await self.open(uow, who, patient_id, Operation.READ, resource="patient")
        self.allowed(patient_id, decision)
        await self.noted(who, self.under_grant(patient_id, decision, "patient", "read"))
        return patient

    async def update(self, who: Principal, patient_id: uuid.UUID, changes: PatientChanges) -> Patient:
        """Change a patient's master data (RECEPTIONIST, ADMIN; the patient their own e-mail and
        phone); a payer billing has no plan for is a 422 naming the valid payers."""
        coverage = changes.coverage
        if coverage is not None:
            coverage = replace(coverage, payer=await self.checked_coverage(coverage.payer))
            changes = replace(changes, coverage=coverage)
        async with self.units.uow() as uow:
            patient, access = await self.decide(uow, who, patient_id, Operation.UPDATE)
            decision = changing(access, who.roles, changes.named)
            self.record(uow, who, patient_id, decision, resource="patient", action="update")
            if decision.allowed and changes.named:
                try:
                    patient = await handlers.update_patient(
                        uow, patient, changes, actor=uuid.UUID(who.subject), zone=self.zone
                    )
                except InvalidPatientError as exc:
                    raise ProblemError(422, str(exc)) from None
        if access.allowed and not decision.allowed:
            raise ProblemError(403, "not allowed to change these fields")
        self.allowed(patient_id, decision)
        return patient

    # --- care team and emergency access ----------------------------------------------------------

    async def grants(
        self, who: Principal, patient_id: uuid.UUID | None, limit: int, state: ReviewState | None = None
    ) -> list[ReviewItem]:
        """The review queue: break-the-glass grants with their reasons, the patient's MRN, what
        patients gave under each, and their review, newest first (ADMIN, AUDITOR); of one patient
        or all, in one review state or any. Reading it is recorded per patient; a refusal about
        one patient is recorded too."""
        if patient_id is not None:
            decision = policy.decide(Operation.OVERSEE_GRANTS, who.roles, NONE)
            if not decision.allowed:
                async with self.units.read() as uow:
                    self.record(uow, who, patient_id, decision, resource="emergency_access", action="read")
        if not who.roles & OVERSIGHT:
            raise ProblemError(403, "not allowed for your role")
        async with self.units.read() as uow:
            found = await uow.grants.find(patient_id=patient_id, limit=limit, state=state)
            ids = list(dict.fromkeys(g.patient_id for g in found))
            mrns = {p.id: p.mrn for p in await uow.patients.many(ids)}
            reads = await uow.grants.reads([g.id for g in found])
            for pid in ids:
                self.record(uow, who, pid, Decision("oversight"), resource="emergency_access", action="read")
        return [ReviewItem(g, mrns.get(g.patient_id), tuple(reads.get(g.id, ()))) for g in found]

    async def review(self, who: Principal, grant_id: uuid.UUID, decision: ReviewState, note: str | None) -> ReviewItem:
        """An administrator's decision on a grant: ``reviewed`` (justified) or ``escalated`` (with a
        note saying why); announced and recorded in the audit trail. Auditors read the queue only.
        A refused attempt (not an administrator, one's own grant, a decision the grant's state
        does not take) is recorded too, as a denied update of the grant's patient."""
        allowed = policy.decide(Operation.REVIEW_GRANTS, who.roles, NONE).allowed
        grant: EmergencyGrant | None = None
        try:
            async with self.units.uow() as uow:
                grant = await uow.grants.get(grant_id, lock=allowed)
                if grant is None:
                    raise ProblemError(404 if allowed else 403, "no emergency access has this id")
                if not allowed:
                    raise ReviewNotAllowedError(
                        "only administrators review emergency access (auditors read the queue)", status=403
                    )
                done = await handlers.review_emergency_access(uow, grant, who, decision, note)
                patient = await uow.patients.get(done.patient_id)
                reads = await uow.grants.reads([done.id])
        except InvalidReviewError as exc:
            raise ProblemError(422, str(exc)) from None
        except ReviewNotAllowedError as exc:
            assert grant is not None  # refused once the grant was found
            async with self.units.uow() as uow:  # the refusal's record commits, the attempt does not
                record_access(
                    uow,
                    PatientsRecordAccessed,
                    who,
                    patient_id=grant.patient_id,
                    action="update",
                    resource="emergency_access",
                    purpose="review",
                    outcome="denied",
                )
            raise ProblemError(exc.status, str(exc)) from None
        return ReviewItem(done, patient.mrn if patient else None, tuple(reads.get(done.id, ())))

    async def break_the_glass(self, who: Principal, patient_id: uuid.UUID, reason: str) -> EmergencyGrant:
        """Emergency access to one patient without a care relationship (DOCTOR, NURSE), for
        ``emergency_minutes``; audited, flagged, announced to administrators."""
        async with self.units.uow() as uow:
            _, decision = await self.decide(uow, who, patient_id, Operation.BREAK_GLASS)
            if not decision.allowed:
                self.record(uow, who, patient_id, decision, resource="patient", action="break_glass")
        if not decision.allowed:
            raise self.error(patient_id, decision, "emergency access is for clinicians (DOCTOR, NURSE)")
        try:
            async with self.units.uow() as uow:
                return await handlers.grant_emergency_access(
                    uow, patient_id, who, reason, minutes=self.emergency_minutes, limit=self.emergency_limit
                )
        except InvalidEmergencyReasonError as exc:
            raise ProblemError(422, str(exc), rule=exc.rule.value) from None
        except handlers.PatientNotFoundError:
            raise ProblemError(404, "patient not found") from None

    async def care_team(self, who: Principal, patient_id: uuid.UUID) -> list[CareRelationship]:
        """The patient's active care relationships."""
        async with self.units.read() as uow:
            _, decision = await self.open(uow, who, patient_id, Operation.READ, resource="care_team")
            team = await uow.care.team(patient_id, uow.clock()) if decision.allowed else []
        self.allowed(patient_id, decision)
        await self.noted(who, self.under_grant(patient_id, decision, "care_team", "read"))
        return team

    async def assign(
        self, who: Principal, patient_id: uuid.UUID, user_id: uuid.UUID, until: datetime | None
    ) -> CareRelationship:
        """Put a clinician on the patient's care team (RECEPTIONIST, ADMIN), never oneself."""
        actor = uuid.UUID(who.subject)
        async with self.units.uow() as uow:
            _, access = await self.decide(uow, who, patient_id, Operation.MANAGE_CARE_TEAM)
            decision = assigning(access, actor, user_id)
            if not decision.allowed:
                self.record(uow, who, patient_id, decision, resource="care_team", action="create")
        if access.allowed and not decision.allowed:
            raise self.error(patient_id, decision, SELF_ASSIGNMENT)
        self.allowed(patient_id, decision)
        try:
            async with self.units.uow() as uow:
                made = await handlers.assign_to_care_team(uow, patient_id, user_id, until, actor=actor)
                self.record(uow, who, patient_id, decision, resource="care_team", action="create")
        except InvalidCareRelationshipError as exc:
            raise ProblemError(422, str(exc)) from None
        except handlers.PatientNotFoundError:
            raise ProblemError(404, "patient not found") from None
        except handlers.NotAClinicianError:
            raise ProblemError(422, "user_id is not a known clinician account (DOCTOR or NURSE)") from None
        except handlers.AlreadyOnCareTeamError:
            raise ProblemError(409, "this clinician is already on the patient's care team") from None
        return made

    async def end_care(self, who: Principal, patient_id: uuid.UUID, relationship_id: uuid.UUID) -> None:
        """End a care relationship now (RECEPTIONIST, ADMIN); one that follows from an
        appointment or admission ends with it (409)."""
        async with self.units.uow() as uow:
            _, decision = await self.decide(uow, who, patient_id, Operation.MANAGE_CARE_TEAM)
            ended = decision.allowed and await uow.care.end(
                patient_id, relationship_id, uow.clock(), uuid.UUID(who.subject)
            )
            if ended or not decision.allowed:
                self.record(uow, who, patient_id, decision, resource="care_team", action="update")
        self.allowed(patient_id, decision)
        if not ended:
            async with self.units.read() as unit:
                follows = await unit.care.follows_event(patient_id, relationship_id)
            if follows:
                raise ProblemError(
                    409,
                    "this care relationship follows from an appointment or admission; "
                    "it ends with it (cancel the appointment, or discharge)",
                )
            raise ProblemError(404, "this patient has no such care relationship")

    # --- medical record and lab results ----------------------------------------------------------

    async def add_entry(
        self, who: Principal, patient_id: uuid.UUID, kind: str, code: str | None, text: str
    ) -> RecordEntry:
        """Add an entry to the medical record (clinicians with care or a grant); its text is
        stored encrypted, bound to its patient and entry; the event says only its kind."""
        aes = self.keys()
        entry_id = uuid.uuid4()
        async with self.units.uow() as uow:
            _, decision = await self.open(
                uow, who, patient_id, Operation.WRITE_CLINICAL, resource="patient/record", action="create"
            )
            if decision.allowed:
                entry = await uow.records.add(
                    entry_id=entry_id,
                    patient_id=patient_id,
                    kind=kind,
                    code=code,
                    text_cipher=aes.encrypt(text, _aad(patient_id, entry_id)),
                    author_id=uuid.UUID(who.subject),
                    author_roles=sorted(who.roles),
                    at=uow.clock(),
                )
                uow.add(
                    RecordEntryAdded(entry_id=entry_id, patient_id=patient_id, kind=kind),
                    aggregate_id=patient_id,
                )
                reads = self.under_grant(patient_id, decision, "patient/record", "create")
                await handlers.note_emergency_reads(uow, uuid.UUID(who.subject), reads)
        self.allowed(patient_id, decision)
        return entry

    async def entries(self, who: Principal, patient_id: uuid.UUID, limit: int) -> list[DecryptedEntry]:
        """The medical record, newest first: the patient, or clinicians with care or a grant."""
        aes = self.keys()
        async with self.units.read() as uow:
            _, decision = await self.open(uow, who, patient_id, Operation.READ_CLINICAL, resource="patient/record")
            stored = await uow.records.of(patient_id, limit) if decision.allowed else []
        self.allowed(patient_id, decision)
        await self.noted(who, self.under_grant(patient_id, decision, "patient/record", "read"))
        try:
            return [e.decrypted(aes.decrypt(e.text_cipher, _aad(patient_id, e.id))) for e in stored]
        except DecryptionError:
            raise ProblemError(503, "a record entry cannot be decrypted with the configured keys") from None

    async def lab_results(self, who: Principal, patient_id: uuid.UUID, limit: int) -> list[ResultedOrder]:
        """Lab results in the chart, by order, as the medical record is read."""
        async with self.units.read() as uow:
            _, decision = await self.open(uow, who, patient_id, Operation.READ_CLINICAL, resource="patient/lab_result")
            orders = await uow.lab.of(patient_id, limit) if decision.allowed else []
        self.allowed(patient_id, decision)
        await self.noted(who, self.under_grant(patient_id, decision, "patient/lab_result", "read"))
        return orders

    def keys(self) -> FieldCipher:
        if self.cipher is None:
            raise ProblemError(503, "medical records are unavailable: no encryption key is configured")
        return self.cipher

    # --- portal invitations ----------------------------------------------------------------------

    async def invite(self, who: Principal, patient_id: uuid.UUID, channel: Channel) -> Invitation:
        """Send the patient a one-time code to link their record to their own account (RECEPTIONIST,
        ADMIN); it replaces their outstanding invitation. The code is in no answer or event."""
        async with self.units.uow() as uow:  # a refusal's audit record commits before the answer
            _, decision = await self.decide(uow, who, patient_id, Operation.INVITE)
            if not decision.allowed:
                self.record(uow, who, patient_id, decision, resource="patient/invitation", action="create")
        self.allowed(patient_id, decision)
        if self.codes is None:
            raise ProblemError(503, "invitations need the records key (HIS_RECORDS_KEYS), which is not configured")
        try:
            async with self.units.uow() as uow:
                return await invitations.issue(
                    uow, patient_id, channel, who, codes=self.codes, minutes=self.invitation_minutes
                )
        except invitations.PatientNotFoundError:
            raise ProblemError(404, "patient not found") from None
        except invitations.RecordAlreadyLinkedError:
            raise ProblemError(409, "this patient record is linked to an account already") from None
        except invitations.NoAddressError:
            what = "e-mail address" if channel is Channel.EMAIL else "phone"
            raise ProblemError(
                422,
                f"the patient has no {what} on record: add one (PATCH /api/patients/"
                f"{patient_id}) or choose the other channel",
            ) from None

    async def redeem(self, who: Principal, code: str) -> Patient:
        """Redeem an invitation's code from the patient's own account: its record becomes theirs."""
        if not may_redeem(who.roles):
            raise ProblemError(403, "an invitation is redeemed from the patient's own account (role PATIENT only)")
        try:
            async with self.units.uow() as uow:  # commits the audit record of a refused attempt too
                done = await invitations.redeem(uow, code, who)
        except InvalidInvitationCodeError as exc:
            raise ProblemError(422, str(exc)) from None
        except invitations.AccountAlreadyLinkedError:
            raise ProblemError(409, "your account is linked to a patient record already") from None
        if done.refusal is not None:
            status, detail = REFUSALS[done.refusal]
            extra = {"expired_at": done.expired_at.isoformat()} if done.expired_at else {}
            raise ProblemError(status, detail, reason=done.refusal.value, **extra)
        assert done.patient is not None
        return done.patient

    # --- reads under emergency grants --------------------------------------------------------------

    @staticmethod
    def under_grant(
        patient_id: uuid.UUID, decision: Decision, resource: str, action: str
    ) -> list[tuple[uuid.UUID, str, str]]:
        """The read to note for a grant's review, if the decision allowed it through the grant."""
        return [(patient_id, resource, action)] if decision.allowed and decision.purpose == "emergency" else []

    async def noted(self, who: Principal, reads: list[tuple[uuid.UUID, str, str]]) -> None:
        """Note reads made under an emergency grant against the grant, for its review, before the
        answer: a read that cannot be noted is not answered (its audit record, flagged, is
        committed already)."""
        if reads:
            async with self.units.uow() as uow:
                await handlers.note_emergency_reads(uow, uuid.UUID(who.subject), reads)

    # --- access ----------------------------------------------------------------------------------

    async def open(
        self,
        uow: PatientsWork,
        who: Principal,
        patient_id: uuid.UUID,
        op: Operation,
        *,
        resource: str,
        action: Action = "read",
    ) -> tuple[Patient, Decision]:
        """The patient and the policy's decision on ``op``, recorded (allowed or denied) in
        ``uow``. An unknown id raises at once (404, or 403 to roles that never may)."""
        patient, decision = await self.decide(uow, who, patient_id, op)
        self.record(uow, who, patient_id, decision, resource=resource, action=action)
        return patient, decision

    async def decide(
        self, uow: PatientsWork, who: Principal, patient_id: uuid.UUID, op: Operation
    ) -> tuple[Patient, Decision]:
        """As ``open``, without the record (for a use case that refines the decision first)."""
        patient = await uow.patients.get(patient_id)
        if patient is None:
            raise self.error(patient_id, policy.not_found(op, who.roles))
        rel = await handlers.relationship(uow.care, who, patient, uow.clock())
        return patient, policy.decide(op, who.roles, rel)

    @staticmethod
    def record(
        uow: Work, who: Principal, patient_id: uuid.UUID, decision: Decision, *, resource: str, action: Action
    ) -> None:
        record_access(
            uow,
            PatientsRecordAccessed,
            who,
            patient_id=patient_id,
            action=action,
            resource=resource,
            purpose=decision.purpose,
            outcome=decision.outcome,
        )

    def allowed(self, patient_id: uuid.UUID, decision: Decision) -> None:
        """Raise the refusal (after its record committed) unless the decision allows."""
        if not decision.allowed:
            raise self.error(patient_id, decision)

    def error(self, patient_id: uuid.UUID, decision: Decision, detail: str | None = None) -> ProblemError:
        """The refusal as an exception, with an offer of emergency access where care is missing."""
        p = refusal(decision, patient_id, emergency_minutes=self.emergency_minutes)
        return ProblemError(p.status, detail or p.detail, **p.members)


def _aad(patient_id: uuid.UUID, entry_id: uuid.UUID) -> bytes:
    return f"patients.record_entry|{patient_id}|{entry_id}".encode()
