"""Audit events: every read or write of a patient's data, and every change to a staff or patient
account, published by the service that did it.

They carry ids and codes only (who by user id, which patient or account by id), like every event.
"""

from __future__ import annotations

import types
import uuid
from collections.abc import Iterable
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from his.kernel.events import SEQ_FIELD, Envelope, Event, event, service_of
from his.kernel.json import JsonObject
from his.kernel.ports import Work
from his.kernel.security import Principal

Action = Literal["read", "create", "update", "delete", "search", "break_glass"]
Outcome = Literal["allowed", "denied"]


class Access(BaseModel):
    """Who accessed which patient's data or which account, how, why and with what outcome.

    The actor is a user (their id and roles), or a service acting on its own behalf: then
    ``actor_id`` is ``workload_actor_id(spiffe_id)`` and ``actor_roles`` is ``[spiffe_id]``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    actor_id: uuid.UUID
    actor_roles: list[str]
    patient_id: uuid.UUID | None
    action: Action
    resource: str = Field(max_length=64, pattern=r"^[a-z_./-]+$")
    #: A code (treatment, registration, billing, emergency, own_record …), never free text.
    purpose: str = Field(max_length=32, pattern=r"^[a-z_]+$")
    outcome: Outcome
    trace_id: str | None = None
    #: The account concerned (a change to it: roles, disabled, a new password required …); null
    #: when the access concerns no account, and in events written before the field (ADR 0031).
    account_id: uuid.UUID | None = None


class RecordAccessed(Event, Access):
    """Base of the per-service access events (one type per producing service)."""

    #: The access's number in its producer's gap-free sequence, set when it is committed
    #: (``his.kernel.db``); the audit verifier names every number it never received (ADR 0028).
    #: Null only in events written before the numbering.
    producer_seq: int | None = Field(default=None, ge=1)


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


@event
class IdentityRecordAccessed(RecordAccessed):
    """Someone changed an account: its roles, disabled or enabled it, unlocked it, required a new
    password or removed its second factor; or changed which roles need a second factor."""

    type = "his.identity.record.accessed.v1"


class AccessEntry(Access):
    """One access inside a batched access event, with its own id and time (those of the single
    event it replaces)."""

    id: uuid.UUID
    at: AwareDatetime


#: Accesses per batched event (a 1 MB NATS message holds several times as many).
MAX_BATCH = 200


class RecordsAccessed(Event):
    """Base of the batched access events: the access records of reads committed together
    (``Database.read``), one event instead of one per access."""

    accesses: list[AccessEntry] = Field(min_length=1, max_length=MAX_BATCH)
    #: The first entry's number in its producer's gap-free sequence; the next entries have the
    #: numbers after it, in order (``RecordAccessed.producer_seq``).
    producer_seq: int | None = Field(default=None, ge=1)


def _batched(single: type[RecordAccessed], what: str) -> type[RecordsAccessed]:
    """The batched event type of a service's access events (``his.<service>.records.accessed.v1``)."""
    service = service_of(single.type)
    namespace = {
        "__module__": __name__,
        "__doc__": f"Several reads of a patient's {what}, committed together: each entry of ``accesses``"
        f" has the fields of ``{single.type}`` plus the access's own ``id`` and ``at``.",
        "type": f"his.{service}.records.accessed.v1",
    }
    return event(
        types.new_class(f"{service.title()}RecordsAccessed", (RecordsAccessed,), {}, lambda ns: ns.update(namespace))
    )


#: The batched type of each single access event that has one.
BATCHED: dict[str, type[RecordsAccessed]] = {
    single.type: _batched(single, what)
    for single, what in (
        (PatientsRecordAccessed, "master data, records, lab results or care team"),
        (NotificationsRecordAccessed, "delivery history, preferences or alerts"),
        (SchedulingRecordAccessed, "appointments or waitlist entries"),
        (AdmissionsRecordAccessed, "admissions or bed charges"),
        (LaboratoryRecordAccessed, "lab orders"),
        (BillingRecordAccessed, "charges, invoices, payments or claims"),
    )
}
PatientsRecordsAccessed = BATCHED[PatientsRecordAccessed.type]


def batch_accesses(events: list[Envelope]) -> list[Envelope]:
    """The same events with the single access records merged into batched ones (``BATCHED``),
    ``MAX_BATCH`` per event, in order; other events are kept as they are.

    Used by ``Database(combine=...)`` for the records its readers commit together.
    """
    singles: dict[str, list[Envelope]] = {}
    out: list[Envelope] = []
    for env in events:
        if env.type in BATCHED:
            singles.setdefault(env.type, []).append(env)
        else:
            out.append(env)
    for type_, group in singles.items():
        if len(group) == 1:
            out.append(group[0])
            continue
        batch_type = BATCHED[type_].type
        for i in range(0, len(group), MAX_BATCH):
            part = group[i : i + MAX_BATCH]
            batch_id = uuid.uuid4()  # a batch is its own aggregate: it spans patients
            out.append(
                Envelope(
                    id=batch_id,
                    type=batch_type,
                    source=f"his.{service_of(batch_type)}",
                    time=max(e.time for e in part),  # the batch is of accesses up to its last
                    subject=str(batch_id),
                    aggregate_id=str(batch_id),
                    aggregate_version=1,
                    traceparent=part[0].traceparent,
                    data={
                        "accesses": [_entry(e) for e in part],
                        SEQ_FIELD: None,  # numbered at commit: the first of len(part) numbers
                    },
                    numbers=len(part),
                )
            )
    return out


def _entry(env: Envelope) -> JsonObject:
    """A single access event's data as an entry of a batch: its own id and time, no number of its own."""
    data = {k: v for k, v in env.data.items() if k != SEQ_FIELD}
    return data | {"id": str(env.id), "at": env.time.isoformat()}


def record_access(
    uow: Work,
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
    _record(
        uow,
        model,
        uuid.UUID(who.subject),
        sorted(who.roles),
        patient_id=patient_id,
        action=action,
        resource=resource,
        purpose=purpose,
        outcome=outcome,
    )


def workload_actor_id(spiffe_id: str) -> uuid.UUID:
    """The actor id of a service in access records: the UUIDv5 of its SPIFFE id (URL namespace)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, spiffe_id)


def record_workload_access(
    uow: Work,
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
    _record(
        uow,
        model,
        workload_actor_id(caller),
        [caller],
        patient_id=patient_id,
        action=action,
        resource=resource,
        purpose=purpose,
        outcome=outcome,
    )


def record_account_access(
    uow: Work,
    model: type[RecordAccessed],
    actor_id: uuid.UUID,
    actor_roles: Iterable[str],
    *,
    account_id: uuid.UUID | None,
    action: Action,
    resource: str,
    purpose: str,
    outcome: Outcome = "allowed",
) -> None:
    """Add a record of an access to an account (``account_id``; None for a setting of every
    account, such as the second factor's policy) to the unit of work, made by ``actor_id`` with
    ``actor_roles``: an administrator, or the account's holder before any token names them (a
    sign-in that changes the password). It names no patient."""
    _record(
        uow,
        model,
        actor_id,
        sorted(actor_roles),
        patient_id=None,
        action=action,
        resource=resource,
        purpose=purpose,
        outcome=outcome,
        account_id=account_id,
    )


def _record(
    uow: Work,
    model: type[RecordAccessed],
    actor_id: uuid.UUID,
    roles: list[str],
    *,
    patient_id: uuid.UUID | None,
    action: Action,
    resource: str,
    purpose: str,
    outcome: Outcome,
    account_id: uuid.UUID | None = None,
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
        account_id=account_id,
    )
    uow.add(ev, aggregate_id=patient_id or account_id or actor_id)
