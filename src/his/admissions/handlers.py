"""Use cases of the admissions service: one function per command (and the nightly job), and the
``Admissions`` use cases its routes call.

They work through the service's ports (``his.admissions.ports``): its units of work, on
PostgreSQL in the hospital and in memory in unit tests, never a connection. The patient look-up
happens before the unit of work opens, so no transaction waits on the network. Inside it, row
locks order the work: an admission locks one free bed (skipping beds that concurrent admissions
are taking), a transfer or discharge locks the admission first and then its beds; the partial
unique indexes are the last word on "one active admission per bed / patient".
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

from prometheus_client import Counter

from his.access import NONE, Decision
from his.admissions import policy
from his.admissions.domain import (
    Admission,
    AdmissionStatus,
    AlreadyAdmittedError,
    Bed,
    BedAction,
    BedCharge,
    BedState,
    BedStay,
    BedTakenError,
    InvalidTransitionError,
    InvalidWardError,
    Stay,
    Ward,
    WardChanges,
    bed_labels,
    bed_transition,
    check_rate,
    day_end,
    local_date,
    nights_due,
    ward_for_night,
)
from his.admissions.policy import Operation
from his.admissions.ports import AdmissionsUnits, AdmissionsWork
from his.clients.audited import AccessLog
from his.clients.billing import BillingTermsLookup, UnknownValueError, known_currency
from his.clients.patients import PatientLookup, refused, relationship_for
from his.clients.practitioners import PractitionerLookup
from his.events.admissions import (
    BedChargePosted,
    PatientAdmitted,
    PatientDischarged,
    PatientTransferred,
    WardUpdated,
)
from his.events.audit import Action as AuditAction
from his.events.audit import AdmissionsRecordAccessed
from his.kernel.clock import Clock
from his.kernel.problems import ProblemError
from his.kernel.security import Principal

log = logging.getLogger("his.admissions")

ADMITTED = Counter("his_admissions_total", "Patients admitted (counted after their commit)")


class UnknownError(LookupError):
    """A patient, ward, bed or admission that does not exist; ``what`` says which."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


class NoFreeBedError(Exception):
    """The ward has no available bed."""


@dataclass(frozen=True)
class NewWard:
    name: str
    ward_type: str
    daily_rate: Decimal
    currency: str
    beds: int
    rooms: int | None = None


async def create_ward(uow: AdmissionsWork, w: NewWard, actor: uuid.UUID) -> Ward:
    """A ward with its rooms and beds, every bed available (``InvalidWardError`` on bad input)."""
    labels = bed_labels(w.beds, w.rooms)
    return await uow.wards.add(
        ward_id=uuid.uuid4(),
        name=w.name,
        ward_type=w.ward_type,
        daily_rate=check_rate(w.daily_rate),
        currency=w.currency,
        created_by=actor,
        beds=labels,
        at=uow.clock(),
    )


async def update_ward(uow: AdmissionsWork, ward_id: uuid.UUID, changes: WardChanges, actor: uuid.UUID) -> Ward:
    """Correct what was entered for a ward (``name``, ``ward_type``, ``daily_rate``, ``currency``;
    the caller checked the currency with billing). Announces the ward's tariff when anything
    changed: nights posted from now on carry it, and billing bills at it the nights it could not."""
    ward = await uow.wards.get(ward_id, lock=True)
    if ward is None:
        raise UnknownError("ward")
    if changes.daily_rate is not None:
        changes = replace(changes, daily_rate=check_rate(changes.daily_rate))
    changed = changes.against(ward)
    if not changed.names:
        return ward
    saved = await uow.wards.update(ward_id, changed, actor, uow.clock())
    uow.add(
        WardUpdated(
            ward_id=ward_id,
            fields=sorted("type" if k == "ward_type" else k for k in changed.names),
            ward_type=saved.ward_type,
            daily_rate=saved.daily_rate,
            currency=saved.currency,
        ),
        aggregate_id=ward_id,
        aggregate_version=saved.version,
    )
    return saved


async def bed_action(uow: AdmissionsWork, bed_id: uuid.UUID, action: BedAction) -> Bed:
    """Release a cleaned bed, close or open it, put it in isolation (409 when its state forbids)."""
    bed = await uow.beds.get(bed_id, lock=True)
    if bed is None:
        raise UnknownError("bed")
    after = bed_transition(bed.state, action)
    return await uow.beds.set_state(bed_id, after, uow.clock())


async def _move_bed(uow: AdmissionsWork, bed: Bed, action: BedAction) -> None:
    await uow.beds.set_state(bed.id, bed_transition(bed.state, action), uow.clock())


@dataclass(frozen=True)
class Admit:
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    ward_id: uuid.UUID


@dataclass(frozen=True)
class Directories:
    """Where admissions checks that what it records is real: patient and practitioner ids (over
    gRPC, in parallel), and a ward's currency (billing's)."""

    patients: PatientLookup
    practitioners: PractitionerLookup
    #: The currencies billing invoices in, which a ward's rate must be in (None: not reachable,
    #: so no ward can be created or have its currency changed).
    billing: BillingTermsLookup | None = None


async def admit(uow: AdmissionsWork, a: Admit, actor: uuid.UUID) -> Admission:
    """Admit a patient (known to exist) to a free bed of the ward, taken atomically."""
    if await uow.wards.get(a.ward_id) is None:
        raise UnknownError("ward")
    if await uow.admissions.active_of(a.patient_id) is not None:
        raise AlreadyAdmittedError
    bed_id = await uow.beds.claim_free(a.ward_id)
    if bed_id is None:
        raise NoFreeBedError
    moment = uow.clock()
    await uow.beds.set_state(bed_id, bed_transition(BedState.AVAILABLE, BedAction.OCCUPY), moment)
    saved = await uow.admissions.add(
        admission_id=uuid.uuid4(),
        patient_id=a.patient_id,
        practitioner_id=a.practitioner_id,
        ward_id=a.ward_id,
        bed_id=bed_id,
        admitted_at=moment,
        admitted_by=actor,
    )
    uow.add(
        PatientAdmitted(
            admission_id=saved.id,
            patient_id=a.patient_id,
            practitioner_id=a.practitioner_id,
            ward_id=a.ward_id,
            bed_id=bed_id,
            admitted_at=saved.admitted_at,
        ),
        aggregate_id=saved.id,
        aggregate_version=saved.version,
    )
    uow.on_commit(ADMITTED.inc)
    return saved


async def known_people(known: Directories, a: Admit) -> None:
    """The patient and practitioner exist (asked in parallel, before any transaction opens)."""
    patient, practitioner = await asyncio.gather(
        known.patients.find(a.patient_id), known.practitioners.find(a.practitioner_id)
    )
    if patient is None:
        raise UnknownError("patient")
    if practitioner is None:
        raise UnknownError("practitioner")


async def _active(uow: AdmissionsWork, admission_id: uuid.UUID, doing: str) -> Admission:
    admission = await uow.admissions.get(admission_id, lock=True)
    if admission is None:
        raise UnknownError("admission")
    if admission.status is not AdmissionStatus.ACTIVE:
        raise InvalidTransitionError(f"a {admission.status.value} admission cannot be {doing}")
    return admission


async def _target_bed(uow: AdmissionsWork, ward_id: uuid.UUID, bed_id: uuid.UUID | None) -> uuid.UUID:
    """The bed a transfer goes to: the one asked for if it is free, else any free bed of the ward."""
    if bed_id is None:
        found = await uow.beds.claim_free(ward_id)
        if found is None:
            raise NoFreeBedError
        return found
    bed = await uow.beds.get(bed_id, lock=True)
    if bed is None or bed.ward_id != ward_id:
        raise UnknownError("bed")
    if bed.state is not BedState.AVAILABLE:
        raise InvalidTransitionError(f"bed {bed.label} is {bed.state.value}, not available")
    return bed_id


async def transfer(
    uow: AdmissionsWork, admission_id: uuid.UUID, ward_id: uuid.UUID, bed_id: uuid.UUID | None = None
) -> Admission:
    """Move an admitted patient to another bed: the old bed goes to cleaning, the new one is
    occupied, both in one transaction (409 if no bed is free or the admission is over)."""
    admission = await _active(uow, admission_id, "transferred")
    if await uow.wards.get(ward_id) is None:
        raise UnknownError("ward")
    if bed_id == admission.bed_id:
        raise InvalidTransitionError("the patient is already in that bed")
    new_bed = await _target_bed(uow, ward_id, bed_id)
    old_bed = await uow.beds.get(admission.bed_id, lock=True)
    assert old_bed is not None
    moment = uow.clock()
    await _move_bed(uow, old_bed, BedAction.VACATE)
    await uow.beds.set_state(new_bed, bed_transition(BedState.AVAILABLE, BedAction.OCCUPY), moment)
    moved = await uow.admissions.move(admission_id, ward_id, new_bed, moment)
    uow.add(
        PatientTransferred(
            admission_id=admission_id,
            patient_id=admission.patient_id,
            from_ward_id=admission.ward_id,
            from_bed_id=admission.bed_id,
            to_ward_id=ward_id,
            to_bed_id=new_bed,
            transferred_at=moment,
        ),
        aggregate_id=admission_id,
        aggregate_version=moved.version,
    )
    return moved


@dataclass
class Posted:
    posted: int = 0
    already_posted: int = 0


async def post_nights(uow: AdmissionsWork, admission: Admission, through: date, zone: ZoneInfo) -> Posted:
    """Charge every night of the admission up to ``through`` that is not charged yet (the caller
    holds the admission's row lock; the unique (admission, night) is the last word)."""
    admitted_on = local_date(admission.admitted_at, zone)
    discharged_on = local_date(admission.discharged_at, zone) if admission.discharged_at else None
    due = nights_due(admitted_on, discharged_on, through)
    have = await uow.charges.nights(admission.id)
    out = Posted(already_posted=sum(1 for n in due if n in have))
    missing = [n for n in due if n not in have]
    if not missing:
        return out
    stays = [Stay(s.ward_id, s.started_at, s.ended_at) for s in await uow.admissions.stays(admission.id)]
    posted_at = uow.clock()
    wards: dict[uuid.UUID, Ward] = {}
    for night in missing:
        ward_id = ward_for_night(stays, night, zone)
        if ward_id not in wards:
            found = await uow.wards.get(ward_id)
            assert found is not None  # wards are never deleted
            wards[ward_id] = found
        ward = wards[ward_id]
        charge = await uow.charges.add(
            charge_id=uuid.uuid4(),
            admission_id=admission.id,
            night=night,
            ward_id=ward_id,
            ward_type=ward.ward_type,
            amount=ward.daily_rate,
            currency=ward.currency,
            at=posted_at,
        )
        if charge is None:
            out.already_posted += 1
            continue
        out.posted += 1
        uow.add(
            BedChargePosted(
                charge_id=charge.id,
                admission_id=charge.admission_id,
                patient_id=admission.patient_id,
                ward_id=charge.ward_id,
                ward_type=charge.ward_type,
                night=charge.night,
                amount=charge.amount,
                currency=charge.currency,
            ),
            aggregate_id=admission.id,
        )
    return out


async def discharge(uow: AdmissionsWork, admission_id: uuid.UUID, actor: uuid.UUID, zone: ZoneInfo) -> DischargeView:
    """Discharge: first post every night still owed, then close the admission and send the bed to
    cleaning, all in one transaction. The answer carries ``nights``, the total charged."""
    admission = await _active(uow, admission_id, "discharged")
    moment = max(uow.clock(), admission.admitted_at)
    await post_nights(uow, replace(admission, discharged_at=moment), local_date(moment, zone), zone)
    done = await uow.admissions.discharge(admission_id, moment, actor)
    bed = await uow.beds.get(admission.bed_id, lock=True)
    assert bed is not None
    await _move_bed(uow, bed, BedAction.VACATE)
    nights = await uow.charges.count(admission_id)
    assert done.discharged_at is not None  # the database holds a discharge time for each
    uow.add(
        PatientDischarged(
            admission_id=admission_id,
            patient_id=admission.patient_id,
            ward_id=admission.ward_id,
            bed_id=admission.bed_id,
            admitted_at=admission.admitted_at,
            discharged_at=done.discharged_at,
            nights=nights,
        ),
        aggregate_id=admission_id,
        aggregate_version=done.version,
    )
    return DischargeView(done, nights)


@dataclass
class RunSummary:
    night: date
    admissions: int = 0
    posted: int = 0
    already_posted: int = 0
    failed: int = 0

    def as_json(self) -> dict[str, str | int]:
        return {
            "date": self.night.isoformat(),
            "admissions": self.admissions,
            "posted": self.posted,
            "already_posted": self.already_posted,
            "failed": self.failed,
        }


async def run_charges(units: AdmissionsUnits, through: date, zone: ZoneInfo) -> RunSummary:
    """The nightly job: for every active admission, post each night up to and including
    ``through`` not posted yet. Each admission has its own transaction, so one that fails is
    counted and logged and the others are still charged; re-running never charges twice."""
    summary = RunSummary(through)
    async with units.read() as unit:
        due = await unit.admissions.due(day_end(through, zone))
    for admission_id in due:
        summary.admissions += 1
        try:
            async with units.uow() as uow:
                admission = await uow.admissions.get(admission_id, lock=True)
                if admission is None or admission.status is not AdmissionStatus.ACTIVE:
                    continue  # discharged meanwhile: the discharge posted its nights
                done = await post_nights(uow, admission, through, zone)
        except Exception:  # one bad admission must not stop the night's run
            log.exception("bed charges for admission %s failed", admission_id)
            summary.failed += 1
            continue
        summary.posted += done.posted
        summary.already_posted += done.already_posted
    log.info("bed charges through %s: %s", through, summary.as_json())
    return summary


class Admissions:
    """The use cases staff call, each with its caller. Wards and beds are decided by role;
    admissions are a patient's data, decided by ``his.admissions.policy`` and recorded in the
    access log, allowed or denied."""

    def __init__(self, units: AdmissionsUnits, known: Directories, zone: ZoneInfo, clock: Clock) -> None:
        #: ``clock`` is the one the units run by: the nightly run's "today" is told by it.
        self.units, self.known, self.zone, self.clock = units, known, zone, clock
        self.log = AccessLog(units, AdmissionsRecordAccessed, "admission")

    # --- wards and beds --------------------------------------------------------------------------

    async def create_ward(self, who: Principal, w: NewWard) -> Ward:
        """Create a ward and its beds (ADMIN); its currency must be one billing invoices in."""
        allow(who, policy.WARD_ADMINS)
        await self.billable(w.currency)
        try:
            async with self.units.uow() as uow:
                return await create_ward(uow, w, uuid.UUID(who.subject))
        except InvalidWardError as exc:
            raise ProblemError(422, str(exc)) from None

    async def correct_ward(self, who: Principal, ward_id: uuid.UUID, changes: WardChanges) -> WardView:
        """Correct a ward's name, type, rate or currency (ADMIN); publishes ``WardUpdated``."""
        allow(who, policy.WARD_ADMINS)
        if changes.currency is not None:
            await self.billable(changes.currency)
        try:
            async with self.units.uow() as uow:
                ward = await update_ward(uow, ward_id, changes, uuid.UUID(who.subject))
        except UnknownError:
            raise ProblemError(404, "ward not found") from None
        except InvalidWardError as exc:
            raise ProblemError(422, str(exc)) from None
        async with self.units.read() as unit:
            counts = await unit.beds.counts([ward_id])
        return WardView(ward, counts[ward_id])

    async def wards(self, who: Principal) -> list[WardView]:
        allow(who, policy.STAFF)
        async with self.units.read() as unit:
            found = await unit.wards.all()
            counts = await unit.beds.counts([w.id for w in found])
        return [WardView(w, counts[w.id]) for w in found]

    async def ward(self, who: Principal, ward_id: uuid.UUID) -> WardView:
        allow(who, policy.STAFF)
        async with self.units.read() as unit:
            ward = await unit.wards.get(ward_id)
            if ward is None:
                raise ProblemError(404, "ward not found")
            counts = await unit.beds.counts([ward_id])
            rooms = await unit.wards.rooms(ward_id)
        return WardView(ward, counts[ward_id], rooms)

    async def beds(self, who: Principal, ward_id: uuid.UUID | None, state: BedState | None, limit: int) -> list[Bed]:
        allow(who, policy.STAFF)
        async with self.units.read() as unit:
            if ward_id is not None and await unit.wards.get(ward_id) is None:
                raise ProblemError(404, "ward not found")
            return await unit.beds.find(ward_id, state, limit)

    async def bed_step(self, who: Principal, bed_id: uuid.UUID, action: BedAction) -> Bed:
        """Release, close, open or isolate a bed (NURSE, ADMIN); 409 when its state forbids it."""
        allow(who, policy.HOUSEKEEPING)
        try:
            async with self.units.uow() as uow:
                return await bed_action(uow, bed_id, action)
        except UnknownError:
            raise ProblemError(404, "bed not found") from None
        except InvalidTransitionError as exc:
            raise ProblemError(409, str(exc)) from None

    async def billable(self, currency: str) -> None:
        """A ward's rate is in a currency billing invoices in, or the request is a 422 naming them:
        its nights would otherwise be charged and never billed."""
        if self.known.billing is None:
            raise ProblemError(503, "currencies cannot be checked: billing is not reachable from admissions")
        try:
            known_currency(await self.known.billing.terms(), currency)
        except UnknownValueError as exc:
            raise exc.problem() from None

    # --- admissions ------------------------------------------------------------------------------

    async def run_charges(self, who: Principal, night: date) -> RunSummary:
        """Post the bed charges of every night through ``night`` not posted yet (ADMIN)."""
        allow(who, policy.WARD_ADMINS)
        if night >= self.clock().astimezone(self.zone).date():
            raise ProblemError(422, "only nights before today can be charged")
        return await run_charges(self.units, night, self.zone)

    async def admit(self, who: Principal, a: Admit) -> Admission:
        """Admit a patient to a free bed (RECEPTIONIST, ADMIN): 409 when the ward has no free bed
        or the patient is already admitted, 422 for an unknown patient, practitioner or ward."""
        decision = policy.decide(Operation.ADMIT, who.roles, NONE)
        if not decision.allowed:
            raise await self.log.refuse(who, a.patient_id, decision, "create")
        try:
            await known_people(self.known, a)
            async with self.units.uow() as uow:
                admitted = await admit(uow, a, uuid.UUID(who.subject))
                self.log.record(uow, who, a.patient_id, "create", decision)
        except UnknownError as exc:
            raise ProblemError(422, f"unknown {exc.what}_id") from None
        except NoFreeBedError:
            raise no_free_bed(a.ward_id) from None
        except BedTakenError:
            raise bed_taken() from None
        except AlreadyAdmittedError:
            raise ProblemError(409, "the patient is already admitted", conflict={"with": "admission"}) from None
        return admitted

    async def admissions(
        self, who: Principal, patient_id: uuid.UUID | None, active: bool | None, limit: int
    ) -> list[Admission]:
        """Admissions, latest first: reception and ADMIN list anyone's; a clinician one patient's."""
        if patient_id is not None:
            decision = await self.decide(who, Operation.READ, patient_id, "patient")
            if not decision.allowed:
                raise await self.log.refuse(who, patient_id, decision, "read")
        elif policy.lists_everyone(who.roles):
            decision = policy.decide(Operation.READ, who.roles, NONE)
        elif policy.RULES[Operation.READ].admits(who.roles):
            raise ProblemError(403, "clinicians list the admissions of one patient in their care: give patient_id")
        else:
            raise ProblemError(403, "not allowed for your role")
        async with self.units.read() as uow:
            found = await uow.admissions.find(patient_id, active, limit)
            for seen in dict.fromkeys(x.patient_id for x in found):
                self.log.record(uow, who, seen, "read", decision)
        return found

    async def admission(self, who: Principal, admission_id: uuid.UUID) -> AdmissionView:
        """One admission with its stays and the nights charged so far."""
        admission, decision = await self.opened(who, admission_id, Operation.READ, "read")
        async with self.units.read() as uow:
            stays = await uow.admissions.stays(admission_id)
            nights = await uow.charges.count(admission_id)
            self.log.record(uow, who, admission.patient_id, "read", decision)
        return AdmissionView(admission, nights, stays)

    async def charges(self, who: Principal, admission_id: uuid.UUID) -> list[BedCharge]:
        """The bed nights charged for an admission, one per night."""
        admission, decision = await self.opened(who, admission_id, Operation.READ_CHARGES, "read", CHARGES)
        async with self.units.read() as uow:
            items = await uow.charges.of(admission_id)
            self.log.record(uow, who, admission.patient_id, "read", decision, resource=CHARGES)
        return items

    async def transfer(
        self, who: Principal, admission_id: uuid.UUID, ward_id: uuid.UUID, bed_id: uuid.UUID | None
    ) -> Admission:
        """Move an admitted patient to a free bed of a ward (or the bed named); 409 if none is free
        or the admission is over."""
        _, decision = await self.opened(who, admission_id, Operation.TRANSFER, "update")
        try:
            async with self.units.uow() as uow:
                moved = await transfer(uow, admission_id, ward_id, bed_id)
                self.log.record(uow, who, moved.patient_id, "update", decision)
        except UnknownError as exc:
            if exc.what == "admission":
                raise ProblemError(404, "admission not found") from None
            raise ProblemError(422, f"unknown {exc.what}_id (or not in that ward)") from None
        except NoFreeBedError:
            raise no_free_bed(ward_id) from None
        except BedTakenError:
            raise bed_taken() from None
        except InvalidTransitionError as exc:
            raise ProblemError(409, str(exc)) from None
        return moved

    async def discharge(self, who: Principal, admission_id: uuid.UUID) -> DischargeView:
        """Charge the nights still owed, close the admission, send its bed to cleaning; 409 if over."""
        _, decision = await self.opened(who, admission_id, Operation.DISCHARGE, "update")
        try:
            async with self.units.uow() as uow:
                done = await discharge(uow, admission_id, uuid.UUID(who.subject), self.zone)
                self.log.record(uow, who, done.admission.patient_id, "update", decision)
        except UnknownError:
            raise ProblemError(404, "admission not found") from None
        except InvalidTransitionError as exc:
            raise ProblemError(409, str(exc)) from None
        return done

    async def decide(self, who: Principal, op: Operation, patient_id: uuid.UUID, what: str) -> Decision:
        """The policy's decision on ``op`` for the caller and this patient (not yet recorded)."""
        rel = await relationship_for(self.known.patients, policy.RULES[op], patient_id, who)
        if rel is None:
            raise refused(policy.not_found(op, who.roles), patient_id, what)
        return policy.decide(op, who.roles, rel)

    async def opened(
        self, who: Principal, admission_id: uuid.UUID, op: Operation, action: AuditAction, resource: str | None = None
    ) -> tuple[Admission, Decision]:
        """The admission and the policy's decision on ``op``; a refusal is recorded and raised."""
        async with self.units.read() as unit:
            admission = await unit.admissions.get(admission_id)

        async def decide(a: Admission) -> Decision:
            return await self.decide(who, op, a.patient_id, "admission")

        missing = policy.not_found(op, who.roles)
        return await self.log.admit(
            who, admission, decide, missing=missing, action=action, resource=resource, what="admission"
        )


CHARGES = "bed_charge"


@dataclass(frozen=True)
class WardView:
    """A ward with how many beds are in each state (and its rooms, when asked for one ward)."""

    ward: Ward
    beds: dict[str, int]
    rooms: list[str] | None = None


@dataclass(frozen=True)
class AdmissionView:
    """An admission with the nights charged so far and the beds it went through."""

    admission: Admission
    nights: int
    stays: list[BedStay]


@dataclass(frozen=True)
class DischargeView:
    """A discharged admission with the bed nights it was charged in all."""

    admission: Admission
    nights: int


def allow(who: Principal, roles: frozenset[str]) -> None:
    if not who.roles & roles:
        raise ProblemError(403, "not allowed for your role")


def bed_taken() -> ProblemError:
    """The bed chosen holds another active admission: the database's one admission per bed
    refused the second (the state of the bed said it was free). Asking again chooses afresh."""
    return ProblemError(409, "the bed was taken by another admission; ask again", conflict={"with": "admission"})


def no_free_bed(ward_id: uuid.UUID) -> ProblemError:
    return ProblemError(409, "the ward has no free bed", conflict={"with": "beds", "ward_id": str(ward_id)})
