"""Use cases of the audit service: append access records; learn which account owns which patient;
show a patient's trail, or the changes made to an account (``AuditTrail``), to whoever
``his.audit.policy`` lets see it.

Each consumed event has its use case over the service's unit of work (``AuditWork``) and its
handler (``on_...``), which runs it in the unit of work the consumer loop opened.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from his.access import NONE, Relationship
from his.audit import policy
from his.audit.domain import Actor, Entry, NewRecord, is_flagged, name_actor
from his.audit.policy import Operation
from his.audit.ports import AuditUnits, AuditWork, StaffDirectory
from his.audit.store import AuditUnit
from his.clients.patients import refused
from his.events.audit import RecordAccessed, RecordsAccessed
from his.events.patients import InvitationRedeemed, PatientRegistered
from his.kernel.db import UnitOfWork
from his.kernel.events import Envelope
from his.kernel.security import Principal


async def record_accessed(uow: AuditWork, env: Envelope, ev: RecordAccessed) -> None:
    """Append the access to the hash chain; emergency access is flagged."""
    await uow.chain.append(
        NewRecord(
            event_id=env.id,
            at=env.time,
            source=env.source,
            actor_id=ev.actor_id,
            actor_roles=tuple(ev.actor_roles),
            patient_id=ev.patient_id,
            action=ev.action,
            resource=ev.resource,
            purpose=ev.purpose,
            outcome=ev.outcome,
            trace_id=ev.trace_id,
            flagged=is_flagged(ev.action, ev.purpose),
            producer_seq=ev.producer_seq,
            account_id=ev.account_id,
        )
    )


async def records_accessed(uow: AuditWork, env: Envelope, ev: RecordsAccessed) -> None:
    """Append a batch of accesses (reads committed together) to the hash chain, in order; each
    keeps its own id and time, and its own number (the batch's first, then the next ones)."""
    first = ev.producer_seq
    await uow.chain.append_many(
        [
            NewRecord(
                event_id=a.id,
                at=a.at,
                source=env.source,
                actor_id=a.actor_id,
                actor_roles=tuple(a.actor_roles),
                patient_id=a.patient_id,
                action=a.action,
                resource=a.resource,
                purpose=a.purpose,
                outcome=a.outcome,
                trace_id=a.trace_id,
                flagged=is_flagged(a.action, a.purpose),
                producer_seq=None if first is None else first + i,
                account_id=a.account_id,
            )
            for i, a in enumerate(ev.accesses)
        ]
    )


async def patient_registered(uow: AuditWork, env: Envelope, ev: PatientRegistered | InvitationRedeemed) -> None:
    """Remember the patient's account, so a patient can see who read their own record."""
    if ev.account_id is not None:
        await uow.accounts.link(ev.patient_id, ev.account_id)


async def on_record_accessed(uow: UnitOfWork, env: Envelope, ev: RecordAccessed) -> None:
    """``record_accessed`` in the consumer loop's unit of work."""
    await record_accessed(AuditUnit(uow), env, ev)


async def on_records_accessed(uow: UnitOfWork, env: Envelope, ev: RecordsAccessed) -> None:
    """``records_accessed`` in the consumer loop's unit of work."""
    await records_accessed(AuditUnit(uow), env, ev)


async def on_patient_registered(uow: UnitOfWork, env: Envelope, ev: PatientRegistered | InvitationRedeemed) -> None:
    """``patient_registered`` in the consumer loop's unit of work."""
    await patient_registered(AuditUnit(uow), env, ev)


async def record_denied(
    uow: AuditWork,
    who: Principal,
    patient_id: uuid.UUID | None,
    purpose: str,
    *,
    resource: str,
    account_id: uuid.UUID | None = None,
) -> None:
    """Append a refused read of this service's own data (a patient's or an account's trail) to the
    chain, as the other services' refusals arrive: actor, roles, patient or account, outcome ``denied``."""
    await record_own_access(uow, who, patient_id, purpose, resource=resource, outcome="denied", account_id=account_id)


async def record_own_access(
    uow: AuditWork,
    who: Principal,
    patient_id: uuid.UUID | None,
    purpose: str,
    *,
    resource: str,
    outcome: str,
    account_id: uuid.UUID | None = None,
) -> None:
    """Append a read of this service's own data (a patient's or an account's trail) to the chain:
    reading the audit trail is itself an access to what it is about, recorded like any other
    (ADR 0028)."""
    from his.kernel import tracing

    await uow.chain.append(
        NewRecord(
            event_id=uuid.uuid4(),
            at=uow.clock(),
            source="his.audit",
            actor_id=uuid.UUID(who.subject),
            actor_roles=tuple(sorted(who.roles)),
            patient_id=patient_id,
            action="read",
            resource=resource,
            purpose=purpose,
            outcome=outcome,
            trace_id=tracing.current_trace_id(),
            flagged=is_flagged("read", purpose),
            account_id=account_id,
        )
    )


@dataclass(frozen=True)
class Page:
    """A page of a trail, each entry's actor named, and the ``before`` of the next page (None on the last)."""

    items: list[Entry]
    next_before: int | None
    actors: dict[uuid.UUID, Actor] = field(default_factory=dict)


class AuditTrail:
    """Who saw a patient's record: the trail, to the patient, an AUDITOR or ADMIN, each actor named."""

    def __init__(self, units: AuditUnits, directory: StaffDirectory | None = None) -> None:
        self.units = units
        self.directory = directory

    async def trail(
        self, who: Principal, patient_id: uuid.UUID, *, before: int | None, limit: int, authorization: str = ""
    ) -> Page:
        """The patient's trail, newest first. A refusal is appended to the chain before it is raised;
        an allowed read is appended in the transaction that reads the page (fail-closed)."""
        op = Operation.READ_TRAIL
        rel = NONE
        if policy.RULES[op].needs_relationship(who.roles):
            async with self.units.read() as u:
                rel = Relationship(owner=await u.accounts.owns(uuid.UUID(who.subject), patient_id))
        decision = policy.decide(op, who.roles, rel)
        if not decision.allowed:
            async with self.units.uow() as u:
                await record_denied(u, who, patient_id, decision.purpose, resource="audit_trail")
            raise refused(decision, patient_id)
        async with self.units.uow() as u:
            found = await u.chain.trail(patient_id, before=before, limit=limit)
            people = {e.actor_id for e in found if "PATIENT" in e.actor_roles}
            owners = {a for a in people if await u.accounts.owns(a, patient_id)}
            await record_own_access(u, who, patient_id, decision.purpose, resource="audit_trail", outcome="allowed")
        return Page(
            found, found[-1].seq if len(found) == limit else None, await self._actors(found, owners, authorization)
        )

    async def account_trail(
        self, who: Principal, account_id: uuid.UUID, *, before: int | None, limit: int, authorization: str = ""
    ) -> Page:
        """The records that name one account (the changes made to it), newest first, to an AUDITOR
        or ADMIN. Recorded like a patient's trail: a refusal before it is raised, an allowed read in
        the transaction that reads the page."""
        decision = policy.decide(Operation.READ_ACCOUNT_TRAIL, who.roles, NONE)
        if not decision.allowed:
            async with self.units.uow() as u:
                await record_denied(u, who, None, decision.purpose, resource="audit_trail", account_id=account_id)
            raise refused(decision, None, what="account")
        async with self.units.uow() as u:
            found = await u.chain.account_trail(account_id, before=before, limit=limit)
            await record_own_access(
                u, who, None, decision.purpose, resource="audit_trail", outcome="allowed", account_id=account_id
            )
        return Page(
            found, found[-1].seq if len(found) == limit else None, await self._actors(found, set(), authorization)
        )

    async def _actors(self, found: list[Entry], owners: set[uuid.UUID], authorization: str) -> dict[uuid.UUID, Actor]:
        """Each actor of the page named: staff through the directory, in one call."""
        staff = [e.actor_id for e in found if e.actor_id not in owners and not _is_service(e.actor_roles)]
        names: dict[uuid.UUID, str] = {}
        if staff and self.directory is not None and authorization:
            names = await self.directory.names(list(dict.fromkeys(staff)), authorization)
        return {
            e.actor_id: name_actor(e.actor_roles, owner=e.actor_id in owners, staff_name=names.get(e.actor_id))
            for e in found
        }


def _is_service(roles: tuple[str, ...]) -> bool:
    return name_actor(roles, owner=False, staff_name=None).kind == "service"
