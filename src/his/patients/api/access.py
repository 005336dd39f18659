"""What the patients routes share: the caller, the clock, and the per-patient access check.

A patient reaches only their own record (any other id answers 404, as an id that does not
exist); role-based staff reach every record; a clinician (DOCTOR, NURSE) needs an active care
relationship or emergency grant, and without one gets a 403 that offers emergency access.
Every decision, allowed or denied, is audited in the same transaction as the read.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from his.events.audit import Action, PatientsRecordAccessed, record_access
from his.kernel.auth import authenticate
from his.kernel.db import UnitOfWork
from his.kernel.problems import HTTPException, problem
from his.kernel.security import Principal, TokenVerifier
from his.patients import handlers, store
from his.patients.domain import REASON_MAX, REASON_MIN, Access, Denial, may_read_records

Clock = Callable[[], datetime]

CARE_REQUIRED_TYPE = "https://his.local/problems/care-relationship-required"

#: The 403 a clinician gets without a care relationship (documented in the OpenAPI responses).
CARE_REQUIRED_RESPONSE: dict[int | str, dict[str, Any]] = {
    403: {
        "description": "not allowed; for a clinician without a care relationship, the body offers emergency access",
        "content": {"application/problem+json": {"schema": {
            "type": "object",
            "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"},
                "emergency_access": {"type": "object", "properties": {
                    "href": {"type": "string"}, "method": {"type": "string"},
                    "requires": {"type": "object"}, "minutes": {"type": "number"}, "notice": {"type": "string"},
                }},
            },
        }}},
    }
}  # fmt: skip


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
        self, uow: UnitOfWork, who: Principal, patient_id: uuid.UUID, *, resource: str, action: Action = "read"
    ) -> tuple[dict[str, Any], Access]:
        """The patient row and the caller's access to it, audited (allowed or denied) in ``uow``."""
        row = await store.get_patient(uow.conn, patient_id)
        if row is None:
            raise HTTPException(404, "patient not found")
        access = await handlers.access_to_patient(uow.conn, who, row, self.clock())
        record_access(uow, PatientsRecordAccessed, who, patient_id=patient_id, action=action, resource=resource,
                      purpose=access.purpose.value, outcome="allowed" if access.allowed else "denied")  # fmt: skip
        return row, access

    async def open_clinical(
        self, uow: UnitOfWork, who: Principal, patient_id: uuid.UUID, *, resource: str
    ) -> tuple[bool, Access]:
        """Whether ``who`` may read the patient's clinical data (records, lab results): the
        patient, or clinicians in their care or with an emergency grant; audited in ``uow``."""
        row = await store.get_patient(uow.conn, patient_id)
        if row is None:
            raise HTTPException(404, "patient not found")
        owner = row["user_id"] is not None and str(row["user_id"]) == who.subject
        access = await handlers.access_to_patient(uow.conn, who, row, self.clock())
        allowed = may_read_records(access, who.roles, owner=owner)
        record_access(uow, PatientsRecordAccessed, who, patient_id=patient_id, action="read", resource=resource,
                      purpose=access.purpose.value, outcome="allowed" if allowed else "denied")  # fmt: skip
        return allowed, access

    def clinical_refusal(self, patient_id: uuid.UUID, access: Access, what: str) -> JSONResponse:
        """The answer to a refused clinical read (after its audit record committed): an offer of
        emergency access to a clinician without a care relationship, 403 to other staff, who may
        know the patient exists, and 404 to anyone else."""
        if access.denial is Denial.CARE_RELATIONSHIP_REQUIRED:
            return self.refusal(patient_id, access)
        if access.allowed:
            raise HTTPException(403, f"{what} are for the patient and the clinicians caring for them")
        raise HTTPException(404, "patient not found")

    def refusal(self, patient_id: uuid.UUID, access: Access) -> JSONResponse:
        """The answer to a denied access (call it after the denial's audit record committed)."""
        if access.denial is Denial.CARE_RELATIONSHIP_REQUIRED:
            return problem(
                403,
                "a care relationship with this patient is required; in an emergency, request emergency access",
                type=CARE_REQUIRED_TYPE,
                emergency_access={
                    "href": f"/api/patients/{patient_id}/emergency-access",
                    "method": "POST",
                    "requires": {"reason": f"why you need access now, {REASON_MIN} to {REASON_MAX} characters"},
                    "minutes": self.emergency_minutes,
                    "notice": "emergency access is audited, flagged for review and reported to administrators",
                },
            )
        return problem(404, "patient not found")
