"""Use cases of the audit service: append access records; learn which account owns which patient."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from his.audit import store
from his.audit.domain import is_flagged
from his.events.audit import RecordAccessed, RecordsAccessed
from his.events.patients import InvitationRedeemed, PatientRegistered
from his.kernel.db import UnitOfWork
from his.kernel.events import Envelope
from his.kernel.security import Principal


async def on_record_accessed(uow: UnitOfWork, env: Envelope, ev: RecordAccessed) -> None:
    """Append the access to the hash chain; emergency access is flagged."""
    await store.append(
        uow.conn,
        {
            "event_id": env.id,
            "at": env.time,
            "source": env.source,
            "actor_id": ev.actor_id,
            "actor_roles": list(ev.actor_roles),
            "patient_id": ev.patient_id,
            "action": ev.action,
            "resource": ev.resource,
            "purpose": ev.purpose,
            "outcome": ev.outcome,
            "trace_id": ev.trace_id,
            "flagged": is_flagged(ev.action, ev.purpose),
        },
    )


async def on_records_accessed(uow: UnitOfWork, env: Envelope, ev: RecordsAccessed) -> None:
    """Append a batch of accesses (reads committed together) to the hash chain, in order; each
    keeps its own id and time."""
    await store.append_many(
        uow.conn,
        [
            {
                "event_id": a.id,
                "at": a.at,
                "source": env.source,
                "actor_id": a.actor_id,
                "actor_roles": list(a.actor_roles),
                "patient_id": a.patient_id,
                "action": a.action,
                "resource": a.resource,
                "purpose": a.purpose,
                "outcome": a.outcome,
                "trace_id": a.trace_id,
                "flagged": is_flagged(a.action, a.purpose),
            }
            for a in ev.accesses
        ],
    )


async def on_patient_registered(uow: UnitOfWork, env: Envelope, ev: PatientRegistered | InvitationRedeemed) -> None:
    """Remember the patient's account, so a patient can see who read their own record."""
    if ev.account_id is not None:
        await store.link_account(uow.conn, ev.patient_id, ev.account_id)


async def record_denied(uow: UnitOfWork, who: Principal, patient_id: uuid.UUID, purpose: str, *, resource: str) -> None:
    """Append a refused read of this service's own data (a patient's trail) to the chain, as the
    other services' refusals arrive: actor, roles, patient, outcome ``denied``."""
    from his.kernel import tracing

    await store.append(
        uow.conn,
        {
            "event_id": uuid.uuid4(),
            "at": datetime.now(UTC),
            "source": "his.audit",
            "actor_id": uuid.UUID(who.subject),
            "actor_roles": sorted(who.roles),
            "patient_id": patient_id,
            "action": "read",
            "resource": resource,
            "purpose": purpose,
            "outcome": "denied",
            "trace_id": tracing.current_trace_id(),
            "flagged": is_flagged("read", purpose),
        },
    )
