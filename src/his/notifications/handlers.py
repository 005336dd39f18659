"""Use cases of the notifications service: one function per consumed event, and the queries and
choices of ``Notifications`` that its routes call.

Consumers only decide what to send and when (a delivery row per channel the patient wants, in
the event's unit of work); the dispatcher sends. Events carry ids, codes and times, never an
address or a name: those are asked of patients when the message goes out. Each event has its
use case over the service's unit of work (``NotificationsWork``) and its handler (``on_...``),
which runs it in the unit of work the consumer loop opened.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from his.access import NONE, Decision, Relationship, Role
from his.clients.audited import AccessLog
from his.events.audit import Action as AuditAction
from his.events.audit import NotificationsRecordAccessed
from his.events.laboratory import LabResults
from his.events.patients import (
    EmergencyAccessGranted,
    EmergencyAccessOverLimit,
    InvitationIssued,
    InvitationRedeemed,
    PatientRegistered,
)
from his.events.scheduling import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentEvent,
    AppointmentRescheduled,
    WaitlistOffered,
)
from his.kernel.db import UnitOfWork
from his.kernel.events import Envelope
from his.kernel.problems import ProblemError
from his.kernel.security import Principal
from his.notifications import policy
from his.notifications.domain import (
    INVITATION,
    REMINDER,
    Alert,
    Context,
    Delivery,
    Message,
    Preferences,
    reminder_due,
    user_audience,
)
from his.notifications.policy import Operation
from his.notifications.ports import NotificationsUnits, NotificationsWork
from his.notifications.store import NotificationsUnit


async def _queue(
    uow: NotificationsWork,
    env: Envelope,
    patient_id: uuid.UUID,
    template: str,
    *,
    due_at: datetime | None = None,
    appointment_id: uuid.UUID | None = None,
    context: Context | None = None,
) -> None:
    prefs = await uow.preferences.get(patient_id)
    now = uow.clock()
    ctx = {"queued_at": now.isoformat(), **(context or {})}
    for channel in prefs.channels():
        await uow.deliveries.queue(
            patient_id=patient_id,
            template=template,
            channel=channel,
            event_id=env.id,
            due_at=due_at or now,
            at=now,
            appointment_id=appointment_id,
            context=ctx,
        )


async def _queue_all(
    uow: NotificationsWork,
    env: Envelope,
    patient_id: uuid.UUID,
    appointment_id: uuid.UUID,
    messages: list[tuple[str, datetime | None, Context]],
) -> None:
    """Queue the messages (template, due_at, context) one event causes: the patient's preferences
    are read once and every delivery goes in one statement (a booking queues two)."""
    prefs = await uow.preferences.get(patient_id)
    now = uow.clock()
    rows = [
        Message(template, channel, due_at or now, {"queued_at": now.isoformat(), **context})
        for template, due_at, context in messages
        for channel in prefs.channels()
    ]
    if rows:
        await uow.deliveries.queue_many(
            patient_id=patient_id, event_id=env.id, appointment_id=appointment_id, messages=rows, at=now
        )


def _appointment(ev: AppointmentEvent) -> dict[str, str]:
    return {"start": ev.start.isoformat(), "end": ev.end.isoformat(), "service": ev.service}


async def patient_registered(uow: NotificationsWork, env: Envelope, ev: PatientRegistered) -> None:
    """Welcome a newly registered patient; remember which account owns the record."""
    if ev.account_id is not None:
        await uow.accounts.link(ev.patient_id, ev.account_id)
    await _queue(uow, env, ev.patient_id, "welcome")


async def invitation_issued(uow: NotificationsWork, env: Envelope, ev: InvitationIssued) -> None:
    """Send a portal invitation on the channel reception chose. The delivery holds the invitation's
    id, never its code: the dispatcher asks patients for the code when it sends the message."""
    now = uow.clock()
    await uow.deliveries.queue(
        patient_id=ev.patient_id,
        template=INVITATION,
        channel=ev.channel,
        event_id=env.id,
        due_at=now,
        at=now,
        context={
            "queued_at": now.isoformat(),
            "invitation_id": str(ev.invitation_id),
            "expires_at": ev.expires_at.isoformat(),
        },
    )


async def invitation_redeemed(uow: NotificationsWork, env: Envelope, ev: InvitationRedeemed) -> None:
    """The patient linked their record to their own account: they may now read its deliveries."""
    await uow.accounts.link(ev.patient_id, ev.account_id)


async def appointment_booked(uow: NotificationsWork, env: Envelope, ev: AppointmentBooked) -> None:
    """Confirm the booking now, and remind 24 hours before (once per appointment time)."""
    messages: list[tuple[str, datetime | None, Context]] = [("appointment_booked", None, _appointment(ev))]
    due = reminder_due(ev.start, uow.clock())
    if due is not None:
        messages.append((REMINDER, due, _appointment(ev)))
    await _queue_all(uow, env, ev.patient_id, ev.appointment_id, messages)


async def appointment_cancelled(uow: NotificationsWork, env: Envelope, ev: AppointmentCancelled) -> None:
    await uow.deliveries.cancel_reminders(ev.appointment_id)
    await _queue(
        uow, env, ev.patient_id, "appointment_cancelled", appointment_id=ev.appointment_id, context=_appointment(ev)
    )


async def appointment_rescheduled(uow: NotificationsWork, env: Envelope, ev: AppointmentRescheduled) -> None:
    await uow.deliveries.cancel_reminders(ev.appointment_id)
    ctx = _appointment(ev) | {"previous_start": ev.previous_start.isoformat()}
    await _queue(uow, env, ev.patient_id, "appointment_rescheduled", appointment_id=ev.appointment_id, context=ctx)
    due = reminder_due(ev.start, uow.clock())
    if due is not None:
        await _queue(
            uow,
            env,
            ev.patient_id,
            REMINDER,
            due_at=due,
            appointment_id=ev.appointment_id,
            context=_appointment(ev),
        )


async def waitlist_offered(uow: NotificationsWork, env: Envelope, ev: WaitlistOffered) -> None:
    ctx = {
        "start": ev.start.isoformat(),
        "end": ev.end.isoformat(),
        "service": ev.service,
        "expires_at": ev.expires_at.isoformat(),
    }
    await _queue(uow, env, ev.patient_id, "waitlist_offer", context=ctx)


async def emergency_access_granted(uow: NotificationsWork, env: Envelope, ev: EmergencyAccessGranted) -> None:
    """Alert administrators that a clinician broke the glass (ids and expiry only)."""
    await uow.alerts.add(
        kind="break_glass",
        audience="ADMIN",
        patient_id=ev.patient_id,
        actor_id=ev.granted_to,
        detail={
            "grant_id": str(ev.grant_id),
            "roles": list(ev.roles),
            "granted_at": ev.granted_at.isoformat(),
            "expires_at": ev.expires_at.isoformat(),
        },
        event_id=env.id,
        at=uow.clock(),
    )


async def emergency_access_over_limit(uow: NotificationsWork, env: Envelope, ev: EmergencyAccessOverLimit) -> None:
    """Alert administrators that a clinician broke the glass more often than the limit allows
    within the window (ids and counts only); the grant is marked in patients' review queue."""
    await uow.alerts.add(
        kind="break_glass_limit",
        audience="ADMIN",
        patient_id=ev.patient_id,
        actor_id=ev.granted_to,
        detail={
            "grant_id": str(ev.grant_id),
            "granted_at": ev.granted_at.isoformat(),
            "grants_in_window": ev.grants_in_window,
            "limit": ev.limit,
            "window_hours": ev.window_hours,
        },
        event_id=env.id,
        at=uow.clock(),
    )


async def lab_order_resulted(uow: NotificationsWork, env: Envelope, ev: LabResults) -> None:
    """Alert the ordering doctor to an abnormal or critical result: ids, codes and flags only,
    once per order. Normal results raise nothing."""
    if not (ev.abnormal or ev.critical):
        return
    flagged = [{"code": r.code, "flag": r.flag} for r in ev.results if r.flag != "N"]
    await uow.alerts.add(
        kind="lab_result",
        audience=user_audience(ev.ordered_by),
        patient_id=ev.patient_id,
        actor_id=None,
        detail={
            "order_id": str(ev.order_id),
            "priority": ev.priority,
            "critical": ev.critical,
            "abnormal": ev.abnormal,
            "flagged": flagged,
            "resulted_at": ev.resulted_at.isoformat(),
        },
        event_id=env.id,
        at=uow.clock(),
    )


async def on_patient_registered(uow: UnitOfWork, env: Envelope, ev: PatientRegistered) -> None:
    """``patient_registered`` in the unit of work the consumer loop opened."""
    await patient_registered(NotificationsUnit(uow), env, ev)


async def on_invitation_issued(uow: UnitOfWork, env: Envelope, ev: InvitationIssued) -> None:
    """``invitation_issued`` in the unit of work the consumer loop opened."""
    await invitation_issued(NotificationsUnit(uow), env, ev)


async def on_invitation_redeemed(uow: UnitOfWork, env: Envelope, ev: InvitationRedeemed) -> None:
    """``invitation_redeemed`` in the unit of work the consumer loop opened."""
    await invitation_redeemed(NotificationsUnit(uow), env, ev)


async def on_appointment_booked(uow: UnitOfWork, env: Envelope, ev: AppointmentBooked) -> None:
    """``appointment_booked`` in the unit of work the consumer loop opened."""
    await appointment_booked(NotificationsUnit(uow), env, ev)


async def on_appointment_cancelled(uow: UnitOfWork, env: Envelope, ev: AppointmentCancelled) -> None:
    """``appointment_cancelled`` in the unit of work the consumer loop opened."""
    await appointment_cancelled(NotificationsUnit(uow), env, ev)


async def on_appointment_rescheduled(uow: UnitOfWork, env: Envelope, ev: AppointmentRescheduled) -> None:
    """``appointment_rescheduled`` in the unit of work the consumer loop opened."""
    await appointment_rescheduled(NotificationsUnit(uow), env, ev)


async def on_waitlist_offered(uow: UnitOfWork, env: Envelope, ev: WaitlistOffered) -> None:
    """``waitlist_offered`` in the unit of work the consumer loop opened."""
    await waitlist_offered(NotificationsUnit(uow), env, ev)


async def on_emergency_access_granted(uow: UnitOfWork, env: Envelope, ev: EmergencyAccessGranted) -> None:
    """``emergency_access_granted`` in the unit of work the consumer loop opened."""
    await emergency_access_granted(NotificationsUnit(uow), env, ev)


async def on_emergency_access_over_limit(uow: UnitOfWork, env: Envelope, ev: EmergencyAccessOverLimit) -> None:
    """``emergency_access_over_limit`` in the unit of work the consumer loop opened."""
    await emergency_access_over_limit(NotificationsUnit(uow), env, ev)


async def on_lab_order_resulted(uow: UnitOfWork, env: Envelope, ev: LabResults) -> None:
    """``lab_order_resulted`` in the unit of work the consumer loop opened."""
    await lab_order_resulted(NotificationsUnit(uow), env, ev)


#: Roles that alerts are addressed to as a whole.
ROLE_AUDIENCES = (Role.ADMIN,)
#: Roles that receive alerts: administrators, and doctors (their own lab orders' results).
ALERTED = (Role.ADMIN, Role.DOCTOR)


class Notifications:
    """The use cases staff and patients call: alerts, a patient's messages and preferences.

    Each decides through ``his.notifications.policy`` and records its decision, allowed or
    denied, in the access log; the patient's own account is known here from patients' events.
    """

    def __init__(self, units: NotificationsUnits) -> None:
        self.units = units
        self.log = AccessLog(units, NotificationsRecordAccessed, "delivery")

    async def alerts(self, who: Principal, limit: int) -> list[Alert]:
        """Alerts addressed to the caller, newest first (ADMIN: those for administrators; a DOCTOR:
        those for them). Other roles receive no alerts (403)."""
        if not who.has_any(*ALERTED):
            raise ProblemError(403, "not allowed for your role")
        audiences = [role for role in ROLE_AUDIENCES if who.has_any(role)] + [user_audience(uuid.UUID(who.subject))]
        async with self.units.read() as uow:
            found = await uow.alerts.addressed_to(audiences, limit=limit)
            purposes = {
                (a.patient_id, "administration" if a.audience in ROLE_AUDIENCES else "care")
                for a in found
                if a.patient_id is not None
            }
            for pid, purpose in sorted(purposes, key=str):
                self.log.record(uow, who, pid, "read", Decision(purpose), resource="alert")
        return found

    async def history(self, who: Principal, patient_id: uuid.UUID, limit: int) -> list[Delivery]:
        """One patient's messages, newest first (ADMIN, or the patient themself)."""
        decision = await self.decide(who, Operation.READ_HISTORY, patient_id, "read", "delivery")
        async with self.units.read() as uow:
            found = await uow.deliveries.of(patient_id, limit=limit)
            self.log.record(uow, who, patient_id, "read", decision)
        return found

    async def preferences(self, who: Principal, patient_id: uuid.UUID) -> Preferences:
        """How a patient wants to hear from the hospital (the patient, RECEPTIONIST, ADMIN)."""
        decision = await self.decide(who, Operation.PREFERENCES, patient_id, "read", PREFERENCE)
        async with self.units.read() as uow:
            found = await uow.preferences.get(patient_id)
            self.log.record(uow, who, patient_id, "read", decision, resource=PREFERENCE)
        return found

    async def choose(self, who: Principal, patient_id: uuid.UUID, chosen: Preferences) -> Preferences:
        """Set a patient's channels or opt-out; messages already queued honour it when they go out."""
        decision = await self.decide(who, Operation.PREFERENCES, patient_id, "update", PREFERENCE)
        async with self.units.uow() as uow:
            await uow.preferences.set(patient_id, chosen, uow.clock())
            self.log.record(uow, who, patient_id, "update", decision, resource=PREFERENCE)
        return chosen

    async def decide(
        self, who: Principal, op: Operation, patient_id: uuid.UUID, action: AuditAction, resource: str
    ) -> Decision:
        """The policy's decision on ``op`` for this patient; a refusal is recorded and raised."""
        rel = NONE
        if policy.RULES[op].needs_relationship(who.roles):
            async with self.units.read() as uow:
                rel = Relationship(owner=await uow.accounts.owns(uuid.UUID(who.subject), patient_id))
        decision = policy.decide(op, who.roles, rel)
        if not decision.allowed:
            raise await self.log.refuse(who, patient_id, decision, action, resource=resource)
        return decision


PREFERENCE = "preference"
