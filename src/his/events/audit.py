"""Audit events: every read or write of a patient's data, published by the service that did it.

They carry ids and codes only (who by user id, which patient by id), like every event.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import Field

from his.kernel.db import UnitOfWork
from his.kernel.events import Event, event
from his.kernel.security import Principal

Action = Literal["read", "create", "update", "delete", "search", "break_glass"]
Outcome = Literal["allowed", "denied"]


class RecordAccessed(Event):
    """Base of the per-service access events (one type per producing service)."""

    actor_id: uuid.UUID
    actor_roles: list[str]
    patient_id: uuid.UUID | None
    action: Action
    resource: str = Field(max_length=64, pattern=r"^[a-z_./-]+$")
    #: A code (treatment, registration, billing, emergency, own_record …), never free text.
    purpose: str = Field(max_length=32, pattern=r"^[a-z_]+$")
    outcome: Outcome
    trace_id: str | None = None


@event
class PatientsRecordAccessed(RecordAccessed):
    """Someone read or changed patient master data."""

    type = "his.patients.record.accessed.v1"


@event
class NotificationsRecordAccessed(RecordAccessed):
    """Someone read a patient's delivery history."""

    type = "his.notifications.record.accessed.v1"


@event
class SchedulingRecordAccessed(RecordAccessed):
    """Someone booked, changed or read a patient's appointments."""

    type = "his.scheduling.record.accessed.v1"


def record_access(
    uow: UnitOfWork,
    model: type[RecordAccessed],
    who: Principal,
    *,
    patient_id: uuid.UUID | None,
    action: Action,
    resource: str,
    purpose: str,
    outcome: Outcome = "allowed",
) -> None:
    """Add an access record to the unit of work: it commits with the access, or neither happens.

    Reads use a transaction too, so a read whose audit record cannot be written returns nothing
    (fail-closed).
    """
    from his.kernel import tracing

    ev = model(
        actor_id=uuid.UUID(who.subject),
        actor_roles=sorted(who.roles),
        patient_id=patient_id,
        action=action,
        resource=resource,
        purpose=purpose,
        outcome=outcome,
        trace_id=tracing.parse(tracing.current()),
    )
    uow.add(ev, aggregate_id=patient_id or who.subject)
