"""Internal HTTP API of the audit service: "who saw this record", and "who changed this account".

What reaches a trail is decided by ``his.audit.policy``; a refused read is itself appended to the
chain (outcome ``denied``), so attempts are seen as well as reads.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict

from his.audit.domain import Actor, Entry
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
    #: Who it was, in words: ``staff``, ``patient`` (the patient themself), ``service`` (a
    #: service acting on its own behalf) or ``unknown``.
    actor_kind: str = "unknown"
    #: Their name: a member of staff's full name (from the staff directory), "the patient", or
    #: "the <name> service"; null when the directory did not name them.
    actor_name: str | None = None
    #: The account the access concerns (a change to it); null when it concerns none.
    account_id: uuid.UUID | None = None


class Trail(BaseModel):
    items: list[Access]
    #: Pass as ``before`` for the next (older) page; null on the last page.
    next_before: int | None


@router.get("", responses=errors(403, 404), openapi_extra=public("/api/audit"))
async def trail(  # noqa: PLR0917 - FastAPI's parameters, by name
    request: Request,
    patient_id: uuid.UUID,
    who: Caller,
    trails: Trails,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Limit = 50,
) -> Trail:
    """Every recorded access to one patient's data, newest first (AUDITOR, ADMIN, or the patient).

    ``flagged`` marks break-the-glass grants and every access made under one. Each access names
    its actor in words (``actor_kind``, ``actor_name``): staff by name, a service by its name.
    Reading the trail is itself recorded in it (resource ``audit_trail``).
    """
    page = await trails.trail(
        who, patient_id, before=before, limit=limit, authorization=request.headers.get("authorization", "")
    )
    return Trail(items=[_access(e, page.actors.get(e.actor_id)) for e in page.items], next_before=page.next_before)


def _access(entry: Entry, actor: Actor | None) -> Access:
    named = {"actor_kind": actor.kind, "actor_name": actor.name} if actor is not None else {}
    return Access.model_validate(Access.model_validate(entry).model_dump() | named)


@router.get("/accounts/{account_id}", responses=errors(403), openapi_extra=public("/api/audit/accounts/{id}"))
async def account_trail(  # noqa: PLR0917 - FastAPI's parameters, by name
    request: Request,
    account_id: uuid.UUID,
    who: Caller,
    trails: Trails,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Limit = 50,
) -> Trail:
    """Every recorded change to one account, newest first (AUDITOR, ADMIN): its roles changed, it
    was disabled or enabled, unlocked, a new password required or its second factor removed, by
    whom. An account without records has an empty trail. Reading it is itself recorded (resource
    ``audit_trail``, naming the account).
    """
    page = await trails.account_trail(
        who, account_id, before=before, limit=limit, authorization=request.headers.get("authorization", "")
    )
    return Trail(items=[_access(e, page.actors.get(e.actor_id)) for e in page.items], next_before=page.next_before)
