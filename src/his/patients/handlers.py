"""Use cases of the patients service: registration, master data, care and emergency grants, and
the consumed events (care from appointments and admissions, lab results into the chart). They
work through the service's ports (``his.patients.ports``); the ``on_*`` handlers run them in the
unit of work the consumer loop opened."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, tzinfo

from his.access import CLINICIANS, Relationship
from his.clients.laboratory import ReleasedOrder, ReleasedResults
from his.events.admissions import PatientAdmitted, PatientDischarged
from his.events.audit import PatientsRecordAccessed, record_access
from his.events.identity import UserRegistered
from his.events.laboratory import LabOrderResulted
from his.events.patients import (
    CoverageChanged,
    EmergencyAccessGranted,
    EmergencyAccessOverLimit,
    EmergencyAccessReviewed,
    PatientRegistered,
    PatientUpdated,
)
from his.events.practitioners import PractitionerRegistered
from his.events.scheduling import AppointmentBooked, AppointmentCancelled, AppointmentRescheduled
from his.kernel.consumer import PermanentError
from his.kernel.db import UnitOfWork
from his.kernel.events import Envelope, Event
from his.kernel.ports import Work
from his.kernel.security import Principal
from his.patients.domain import (
    CARE_AFTER,
    REASON_REUSE,
    CareRelationship,
    CareSource,
    EmergencyGrant,
    EmergencyLimit,
    LabResult,
    NewCareRelationship,
    NewPatient,
    Patient,
    PatientChanges,
    ResultedOrder,
    ReviewState,
    emergency_expiry,
    emergency_reason,
    master_data,
    over_limit,
    review,
)
from his.patients.ports import CareTeams, PatientsWork
from his.patients.store import PatientsUnit


class PatientNotFoundError(LookupError):
    """No patient has this id."""


class NotAClinicianError(ValueError):
    """The user is not a known clinician account (DOCTOR or NURSE)."""


class AlreadyOnCareTeamError(Exception):
    """The clinician already has an active care relationship with the patient."""


def hospital_today(uow: Work, zone: tzinfo) -> date:
    """The hospital's date by the service's clock: a birth date is a date in its time zone."""
    return uow.clock().astimezone(zone).date()


async def register(
    uow: PatientsWork, cmd: NewPatient, *, actor: uuid.UUID | None = None, zone: tzinfo = UTC
) -> Patient:
    """Register a patient and announce it (ids only) in the same unit of work."""
    today = hospital_today(uow, zone)
    patient = cmd.validated(today)
    added = await uow.patients.add(patient, uow.clock())
    uow.add(
        PatientRegistered(patient_id=added.id, registered_by=actor, account_id=patient.user_id),
        aggregate_id=added.id,
    )
    if patient.coverage is not None:
        uow.add(
            CoverageChanged(patient_id=added.id, payer=patient.coverage[0], effective_from=today),
            aggregate_id=added.id,
        )
    return added


async def relationship(care: CareTeams, who: Principal, patient: Patient, now: datetime) -> Relationship:
    """What ``who`` is to this patient now: the patient themself, or a clinician in their care or
    under an emergency grant (asked of the tables only for clinicians)."""
    owner = patient.user_id is not None and str(patient.user_id) == who.subject
    in_care = emergency = False
    if who.roles & CLINICIANS and not owner:
        in_care, emergency = await care.basis(patient.id, uuid.UUID(who.subject), now)
    return Relationship(owner=owner, in_care=in_care, emergency=emergency)


async def assign_to_care_team(
    uow: PatientsWork,
    patient_id: uuid.UUID,
    user_id: uuid.UUID,
    until: datetime | None,
    *,
    actor: uuid.UUID,
) -> CareRelationship:
    """Start a care relationship (source ``assignment``) between a clinician and a patient, now."""
    now = uow.clock()
    rel = NewCareRelationship(patient_id, user_id, CareSource.ASSIGNMENT, now, until).validated()
    if await uow.patients.get(patient_id, lock=True) is None:
        raise PatientNotFoundError(str(patient_id))
    if not await uow.clinicians.known(user_id):
        raise NotAClinicianError(str(user_id))
    if await uow.care.assigned(patient_id, user_id, now) is not None:
        raise AlreadyOnCareTeamError(str(user_id))
    return await uow.care.assign(rel, actor, now)


async def grant_emergency_access(
    uow: PatientsWork,
    patient_id: uuid.UUID,
    who: Principal,
    reason: str,
    *,
    minutes: float,
    limit: EmergencyLimit = EmergencyLimit(),  # noqa: B008 - frozen, shared safely
) -> EmergencyGrant:
    """Break the glass: access to one patient for ``minutes`` from now, audited and flagged,
    announced to ADMIN; over the clinician's limit, marked and announced as such too.

    The reason is refused if it is a placeholder, or the clinician's reason for another patient
    within a day. It is kept here only; the events and the audit record carry ids and codes.
    """
    if await uow.patients.get(patient_id) is None:
        raise PatientNotFoundError(str(patient_id))
    now = uow.clock()
    user_id, roles = uuid.UUID(who.subject), sorted(who.roles)
    recent = await uow.grants.of_user(user_id, now - max(limit.window, REASON_REUSE))
    text = emergency_reason(
        reason, earlier=[g.reason for g in recent if g.patient_id != patient_id and g.granted_at > now - REASON_REUSE]
    )
    in_window = 1 + sum(g.granted_at > now - limit.window for g in recent)
    expires_at = emergency_expiry(now, minutes)
    grant = await uow.grants.add(
        patient_id=patient_id,
        user_id=user_id,
        roles=roles,
        reason=text,
        granted_at=now,
        expires_at=expires_at,
        over_limit=over_limit(in_window, limit.grants),
    )
    record_access(
        uow,
        PatientsRecordAccessed,
        who,
        patient_id=patient_id,
        action="break_glass",
        resource="patient",
        purpose="emergency",
    )
    uow.add(
        EmergencyAccessGranted(
            grant_id=grant.id,
            patient_id=patient_id,
            granted_to=user_id,
            roles=roles,
            granted_at=now,
            expires_at=expires_at,
        ),
        aggregate_id=grant.id,
    )
    if grant.over_limit:
        uow.add(
            EmergencyAccessOverLimit(
                grant_id=grant.id,
                patient_id=patient_id,
                granted_to=user_id,
                granted_at=now,
                grants_in_window=in_window,
                limit=limit.grants,
                window_hours=limit.window.total_seconds() / 3600,
            ),
            aggregate_id=grant.id,
        )
    return grant


async def review_emergency_access(
    uow: PatientsWork, grant: EmergencyGrant, who: Principal, decision: ReviewState, note: str | None
) -> EmergencyGrant:
    """An administrator's decision on a grant (locked by the caller): stored with its note,
    announced (ids and the decision) and recorded in the audit trail as an update of the grant."""
    reviewer, now = uuid.UUID(who.subject), uow.clock()
    text = review(grant, decision, note, reviewer)
    done = await uow.grants.review(grant.id, state=decision, by=reviewer, at=now, note=text)
    record_access(
        uow,
        PatientsRecordAccessed,
        who,
        patient_id=grant.patient_id,
        action="update",
        resource="emergency_access",
        purpose="review",
    )
    uow.add(
        EmergencyAccessReviewed(
            grant_id=grant.id,
            patient_id=grant.patient_id,
            granted_to=grant.user_id,
            reviewed_by=reviewer,
            decision=decision.value,
            reviewed_at=now,
        ),
        aggregate_id=grant.id,
    )
    return done


async def note_emergency_reads(uow: PatientsWork, user_id: uuid.UUID, reads: list[tuple[uuid.UUID, str, str]]) -> None:
    """Note (patient, resource, action) reads a clinician made under their grants, now, for the
    review queue (the audit trail has them already, flagged)."""
    now = uow.clock()
    for patient_id, resource, action in reads:
        await uow.grants.note_read(patient_id=patient_id, user_id=user_id, resource=resource, action=action, at=now)


async def update_patient(
    uow: PatientsWork, patient: Patient, changes: PatientChanges, *, actor: uuid.UUID, zone: tzinfo = UTC
) -> Patient:
    """Apply changes to a patient's master data (validated as a whole); announce which fields
    changed. Returns the patient as changed."""
    today = hospital_today(uow, zone)
    updated = changes.applied_to(patient, today)
    old, new = master_data(patient), master_data(updated)
    changed = {k: v for k, v in new.items() if old[k] != v}
    if changed:
        await uow.patients.update(patient.id, changed)
        uow.add(PatientUpdated(patient_id=patient.id, fields=sorted(changed)), aggregate_id=patient.id)
        if "coverage_payer" in changed:
            payer = updated.coverage.payer if updated.coverage else None
            uow.add(
                CoverageChanged(patient_id=patient.id, payer=payer, effective_from=today),
                aggregate_id=patient.id,
            )
    return updated


# --- Consumed events ----------------------------------------------------------------------------


async def user_registered(uow: PatientsWork, env: Envelope, ev: UserRegistered) -> None:
    """Remember clinician accounts, so care relationships can name only real clinicians."""
    if CLINICIANS.intersection(ev.roles):
        await uow.clinicians.remember(ev.user_id, sorted(ev.roles), uow.clock())


async def practitioner_registered(uow: PatientsWork, env: Envelope, ev: PractitionerRegistered) -> None:
    """Remember which user account a practitioner is, so their appointments and admissions name a user."""
    if ev.account_id is not None:
        await uow.clinicians.remember_practitioner(ev.practitioner_id, ev.account_id)


async def appointment(
    uow: PatientsWork, env: Envelope, ev: AppointmentBooked | AppointmentRescheduled | AppointmentCancelled
) -> None:
    """A booked, moved or cancelled appointment puts its practitioner in the patient's care from
    the booking to ``CARE_AFTER`` past its end, or ends that at the cancellation."""
    await uow.care.merge_appointment(
        appointment_id=ev.appointment_id,
        patient_id=ev.patient_id,
        practitioner_id=ev.practitioner_id,
        version=env.aggregate_version,
        seen_at=env.time,
        until=ev.end + CARE_AFTER,
        cancelled_at=env.time if isinstance(ev, AppointmentCancelled) else None,
    )


async def admission(uow: PatientsWork, env: Envelope, ev: Event) -> None:
    """An admission puts its practitioner in the patient's care until ``CARE_AFTER`` past the discharge."""
    if isinstance(ev, PatientAdmitted):
        await uow.care.merge_admission(
            admission_id=ev.admission_id,
            patient_id=ev.patient_id,
            practitioner_id=ev.practitioner_id,
            admitted_at=ev.admitted_at,
            until=None,
        )
    elif isinstance(ev, PatientDischarged):
        await uow.care.merge_admission(
            admission_id=ev.admission_id,
            patient_id=ev.patient_id,
            practitioner_id=None,
            admitted_at=ev.admitted_at,
            until=ev.discharged_at + CARE_AFTER,
        )
    else:
        raise PermanentError(f"unexpected event {env.type}")


def released_by(lab: ReleasedResults) -> Callable[[Envelope, LabOrderResulted], Awaitable[ReleasedOrder | None]]:
    """What ``lab_order_resulted`` is given, asked of laboratory before the consumer's transaction
    opens (``Subscription.prepared``): the order's results with their values, or None if
    laboratory has no such resulted order. If laboratory cannot answer,
    ``DependencyUnavailableError`` goes to the consumer loop, which delivers the event again later."""

    async def released(env: Envelope, ev: LabOrderResulted) -> ReleasedOrder | None:
        return await lab.released(ev.order_id)

    return released


async def lab_order_resulted(
    uow: PatientsWork, env: Envelope, ev: LabOrderResulted, released: ReleasedOrder | None
) -> None:
    """Copy a resulted order's results into the patient's chart, once (the inbox skips a
    redelivered event; the (order, test) key keeps results that are already there).

    The event carries codes and flags, never the values: laboratory, which owns them, was asked
    for them before the transaction opened (``released_by``, ADR 0032)."""
    if await uow.patients.get(ev.patient_id) is None:
        raise PermanentError(f"lab results for unknown patient {ev.patient_id}")
    if released is None or released.patient_id != ev.patient_id:
        raise PermanentError(f"laboratory has no resulted order {ev.order_id} of patient {ev.patient_id}")
    order = ResultedOrder(
        order_id=ev.order_id,
        patient_id=ev.patient_id,
        ordered_by=ev.ordered_by,
        priority=ev.priority,
        resulted_at=ev.resulted_at,
        results=tuple(
            LabResult(r.code, r.value, r.unit, r.reference_low, r.reference_high, r.flag) for r in released.results
        ),
    )
    await uow.lab.add(order, uow.clock())


async def on_user_registered(uow: UnitOfWork, env: Envelope, ev: UserRegistered) -> None:
    """``user_registered`` in the unit of work the consumer loop opened."""
    await user_registered(PatientsUnit(uow), env, ev)


async def on_practitioner_registered(uow: UnitOfWork, env: Envelope, ev: PractitionerRegistered) -> None:
    """``practitioner_registered`` in the unit of work the consumer loop opened."""
    await practitioner_registered(PatientsUnit(uow), env, ev)


async def on_appointment(
    uow: UnitOfWork, env: Envelope, ev: AppointmentBooked | AppointmentRescheduled | AppointmentCancelled
) -> None:
    """``appointment`` in the unit of work the consumer loop opened."""
    await appointment(PatientsUnit(uow), env, ev)


async def on_admission(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
    """``admission`` in the unit of work the consumer loop opened."""
    await admission(PatientsUnit(uow), env, ev)


async def on_lab_order_resulted(
    uow: UnitOfWork, env: Envelope, ev: LabOrderResulted, released: ReleasedOrder | None
) -> None:
    """``lab_order_resulted`` in the unit of work the consumer loop opened."""
    await lab_order_resulted(PatientsUnit(uow), env, ev, released)
