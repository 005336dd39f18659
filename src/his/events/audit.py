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
    """Base of the per-service access events (one type per producing service).

    The actor is a user (their id and roles), or a service acting on its own behalf: then
    ``actor_id`` is ``workload_actor_id(spiffe_id)`` and ``actor_roles`` is ``[spiffe_id]``.
    """

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


@event
class AdmissionsRecordAccessed(RecordAccessed):
    """Someone admitted, moved or discharged a patient, or read their admissions and bed charges."""

    type = "his.admissions.record.accessed.v1"


@event
class LaboratoryRecordAccessed(RecordAccessed):
    """Someone placed, changed, resulted or read a patient's lab orders."""

    type = "his.laboratory.record.accessed.v1"


@event
class InventoryRecordAccessed(RecordAccessed):
    """Someone recorded stock used for a patient."""

    type = "his.inventory.record.accessed.v1"


@event
class BillingRecordAccessed(RecordAccessed):
    """Someone read a patient's charges, invoices, claims or payments, or took a payment."""

    type = "his.billing.record.accessed.v1"


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
    _record(uow, model, uuid.UUID(who.subject), sorted(who.roles), patient_id=patient_id, action=action,
            resource=resource, purpose=purpose, outcome=outcome)  # fmt: skip


def workload_actor_id(spiffe_id: str) -> uuid.UUID:
    """The actor id of a service in access records: the UUIDv5 of its SPIFFE id (URL namespace)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, spiffe_id)


def record_workload_access(
    uow: UnitOfWork,
    model: type[RecordAccessed],
    caller: str,
    *,
    patient_id: uuid.UUID | None,
    action: Action,
    resource: str,
    purpose: str,
    outcome: Outcome = "allowed",
) -> None:
    """Like ``record_access``, for a service calling on its own behalf (``caller`` is its SPIFFE id).

    Its actor id is ``workload_actor_id(caller)`` and its only role is the SPIFFE id itself, so
    the record names the service without a user id or role that could be mistaken for a person's.
    """
    _record(uow, model, workload_actor_id(caller), [caller], patient_id=patient_id, action=action,
            resource=resource, purpose=purpose, outcome=outcome)  # fmt: skip


def _record(
    uow: UnitOfWork,
    model: type[RecordAccessed],
    actor_id: uuid.UUID,
    roles: list[str],
    *,
    patient_id: uuid.UUID | None,
    action: Action,
    resource: str,
    purpose: str,
    outcome: Outcome,
) -> None:
    from his.kernel import tracing

    ev = model(
        actor_id=actor_id,
        actor_roles=roles,
        patient_id=patient_id,
        action=action,
        resource=resource,
        purpose=purpose,
        outcome=outcome,
        trace_id=tracing.current_trace_id(),
    )
    uow.add(ev, aggregate_id=patient_id or actor_id)
