"""Use cases of the notifications service: one function per consumed event."""

from __future__ import annotations

from his.events.patients import EmergencyAccessGranted, PatientRegistered
from his.kernel.consumer import PermanentError
from his.kernel.db import UnitOfWork
from his.kernel.events import Envelope, Event
from his.notifications import store


async def on_patient_registered(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
    """Queue the welcome message for a newly registered patient."""
    if not isinstance(ev, PatientRegistered):
        raise PermanentError(f"unexpected event {env.type}")
    if ev.account_id is not None:
        await store.link_account(uow.conn, ev.patient_id, ev.account_id)
    await store.queue_delivery(uow.conn, patient_id=ev.patient_id, template="welcome", channel="email", event_id=env.id)


async def on_emergency_access_granted(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
    """Alert administrators that a clinician broke the glass (ids and expiry only)."""
    if not isinstance(ev, EmergencyAccessGranted):
        raise PermanentError(f"unexpected event {env.type}")
    await store.raise_alert(
        uow.conn,
        kind="break_glass",
        audience="ADMIN",
        patient_id=ev.patient_id,
        actor_id=ev.granted_to,
        detail={"grant_id": str(ev.grant_id), "roles": list(ev.roles), "granted_at": ev.granted_at.isoformat(),
                "expires_at": ev.expires_at.isoformat()},
        event_id=env.id,
    )  # fmt: skip
