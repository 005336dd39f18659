"""The access log a service's use cases write: one record per decision on a patient's data.

Every use case that reads or changes a patient's data records the policy's decision, allowed or
denied, as the service's ``RecordAccessed`` event (``his.events.audit``). An allowed access is
recorded in the use case's own unit of work, so the access and its record commit together or
neither does. A refusal is recorded in a transaction of its own, committed before the caller is
answered, and becomes the error the use case raises.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from his.access import Decision
from his.clients.patients import refused
from his.events.audit import Action, RecordAccessed, record_access
from his.kernel.ports import Units, Work
from his.kernel.problems import ProblemError
from his.kernel.security import Principal


class OfPatient(Protocol):
    """An object of one patient's record (an order, an appointment, an invoice …)."""

    @property
    def patient_id(self) -> uuid.UUID: ...


T = TypeVar("T", bound=OfPatient)


@dataclass(frozen=True)
class AccessLog:
    """Records a service's decisions on patients' data (``event``), on ``resource`` by default."""

    #: Where a refusal's record is committed (the service's database, or a fake's units).
    db: Units[Work]
    event: type[RecordAccessed]
    resource: str

    def record(
        self,
        uow: Work,
        who: Principal,
        patient_id: uuid.UUID | None,
        action: Action,
        decision: Decision,
        *,
        resource: str | None = None,
    ) -> None:
        """Add the record of ``decision`` to ``uow`` (it commits with the access)."""
        record_access(
            uow,
            self.event,
            who,
            patient_id=patient_id,
            action=action,
            resource=resource or self.resource,
            purpose=decision.purpose,
            outcome=decision.outcome,
        )

    async def refuse(
        self,
        who: Principal,
        patient_id: uuid.UUID,
        decision: Decision,
        action: Action,
        *,
        resource: str | None = None,
        what: str = "patient",
    ) -> ProblemError:
        """Commit the record of a refusal and give the error to raise (404, or 403 with an offer
        of emergency access when only care is missing)."""
        async with self.db.read() as uow:
            self.record(uow, who, patient_id, action, decision, resource=resource)
        return refused(decision, patient_id, what)

    async def admit(
        self,
        who: Principal,
        found: T | None,
        decide: Callable[[T], Awaitable[Decision]],
        *,
        missing: Decision,
        action: Action,
        resource: str | None = None,
        what: str,
    ) -> tuple[T, Decision]:
        """The object a caller asked for by id (``found``, None when there is none) and the
        policy's decision on it (``decide``), or the error to answer: for a missing object the
        one ``missing`` gives (404, or 403 when the caller's roles never allow the operation),
        for a refusal the one ``refuse`` records and gives. The allowed decision is not recorded
        yet: the use case records it with the access, in its own unit of work."""
        if found is None:
            raise refused(missing, None, what)
        decision = await decide(found)
        if not decision.allowed:
            raise await self.refuse(who, found.patient_id, decision, action, resource=resource, what=what)
        return found, decision
