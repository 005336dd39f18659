"""Use cases of the notifications service: one function per consumed event."""

from __future__ import annotations

from his.events.patients import PatientRegistered
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
