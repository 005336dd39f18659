"""Internal HTTP API of the audit service: "who saw this record".

What reaches a patient's trail is decided by ``his.audit.policy``; a refused read is itself
appended to the chain (outcome ``denied``), so attempts are seen as well as reads.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from his.audit.handlers import AuditTrail
from his.kernel.params import Limit
from his.kernel.web import Caller, Moment, errors, provided, public

router = APIRouter(prefix="/audit", tags=["audit"])
Trails = Annotated[AuditTrail, Depends(provided(AuditTrail))]


class Access(BaseModel):
    """One recorded access: by whom (user id and roles), how, why, with what outcome."""

    model_config = ConfigDict(from_attributes=True)

    seq: int
    at: Moment
    source: str
    actor_id: uuid.UUID
    actor_roles: list[str]
    action: str
    resource: str
    purpose: str
    outcome: str
    #: Break-the-glass grants and every access made under one.
    flagged: bool


class Trail(BaseModel):
    items: list[Access]
    #: Pass as ``before`` for the next (older) page; null on the last page.
    next_before: int | None


@router.get("", responses=errors(403, 404), openapi_extra=public("/api/audit"))
async def trail(
    patient_id: uuid.UUID,
    who: Caller,
    trails: Trails,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Limit = 50,
) -> Trail:
    """Every recorded access to one patient's data, newest first (AUDITOR, ADMIN, or the patient).

    ``flagged`` marks break-the-glass grants and every access made under one.
    """
    page = await trails.trail(who, patient_id, before=before, limit=limit)
    return Trail(items=[Access.model_validate(e) for e in page.items], next_before=page.next_before)
