"""What the patients routes share: the caller, the clock, and the per-patient access check.

Every route that reaches one patient opens it through ``Guard.open``: the caller's relationship
to the patient (their own record, a care relationship or an emergency grant) is read from the
tables, ``policy.decide`` rules, and the decision, allowed or denied, is audited in the same
transaction as the read. A refusal is answered as ``his.access`` says: 404 to a caller who may
not know the patient exists, 403 to staff, with an offer of emergency access to a clinician.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from his.access import CARE_REQUIRED_TYPE, Decision, refusal
from his.events.audit import Action, PatientsRecordAccessed, record_access
from his.kernel.auth import authenticate
from his.kernel.db import UnitOfWork
from his.kernel.problems import ProblemError, problem
from his.kernel.security import Principal, TokenVerifier
from his.patients import handlers, policy, store
from his.patients.policy import Operation

Clock = Callable[[], datetime]

__all__ = ["CARE_REQUIRED_RESPONSE", "CARE_REQUIRED_TYPE", "Clock", "Guard", "utc_now"]

#: The 403 a clinician gets without a care relationship (documented in the OpenAPI responses).
CARE_REQUIRED_RESPONSE: dict[int | str, dict[str, Any]] = {
    403: {
        "description": "not allowed; for a clinician without a care relationship, the body offers emergency access",
        "content": {
            "application/problem+json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "emergency_access": {
                            "type": "object",
                            "properties": {
                                "href": {"type": "string"},
                                "method": {"type": "string"},
                                "requires": {"type": "object"},
                                "minutes": {"type": "number"},
                                "notice": {"type": "string"},
                            },
                        },
                    },
                }
            }
        },
    }
}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Guard:
    """Authenticates callers and decides, audits and answers access to one patient."""

    tokens: TokenVerifier
    clock: Clock
    emergency_minutes: float

    async def caller(self, request: Request) -> Principal:
        return await authenticate(request, self.tokens)

    async def open(
        self,
        uow: UnitOfWork,
        who: Principal,
        patient_id: uuid.UUID,
        op: Operation,
        *,
        resource: str,
        action: Action = "read",
    ) -> tuple[dict[str, Any], Decision]:
        """The patient row and the policy's decision on ``op`` for ``who``, audited (allowed or
        denied) in ``uow``. An unknown id raises at once (404, or 403 to roles that never may)."""
        row, decision = await self.decide(uow, who, patient_id, op)
        self.audit(uow, who, patient_id, decision, resource=resource, action=action)
        return row, decision

    async def decide(
        self, uow: UnitOfWork, who: Principal, patient_id: uuid.UUID, op: Operation
    ) -> tuple[dict[str, Any], Decision]:
        """As ``open``, without the audit record (for a route that refines the decision first)."""
        row = await store.get_patient(uow.conn, patient_id)
        if row is None:
            raise self.error(patient_id, policy.not_found(op, who.roles))
        rel = await handlers.relationship(uow.conn, who, row, self.clock())
        return row, policy.decide(op, who.roles, rel)

    @staticmethod
    def audit(
        uow: UnitOfWork, who: Principal, patient_id: uuid.UUID, decision: Decision, *, resource: str, action: Action
    ) -> None:
        record_access(
            uow,
            PatientsRecordAccessed,
            who,
            patient_id=patient_id,
            action=action,
            resource=resource,
            purpose=decision.purpose,
            outcome=decision.outcome,
        )

    def error(self, patient_id: uuid.UUID, decision: Decision, detail: str | None = None) -> ProblemError:
        """The refusal as an exception (raise it after the denial's audit record committed)."""
        p = refusal(decision, patient_id, emergency_minutes=self.emergency_minutes)
        return ProblemError(p.status, detail or p.detail, **p.members)

    def refusal(self, patient_id: uuid.UUID, decision: Decision) -> JSONResponse:
        """The answer to a denied access (call it after the denial's audit record committed)."""
        p = refusal(decision, patient_id, emergency_minutes=self.emergency_minutes)
        return problem(p.status, p.detail, **p.members)
