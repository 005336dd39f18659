"""Internal HTTP API of the audit service: "who saw this record".

What reaches a patient's trail is decided by ``his.audit.policy``; a refused read is itself
appended to the chain (outcome ``denied``), so attempts are seen as well as reads.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query, Request

from his.access import NONE, Relationship
from his.audit import handlers, policy, store
from his.audit.policy import Operation
from his.clients.patients import refused
from his.kernel.auth import authenticate, jwks_verifier
from his.kernel.params import Limit
from his.kernel.security import TokenVerifier
from his.kernel.service import ServiceContext


def router(ctx: ServiceContext, verifier: TokenVerifier | None = None) -> APIRouter:
    r = APIRouter(prefix="/audit", tags=["audit"])
    tokens = verifier or jwks_verifier()

    @r.get("")
    async def trail(
        request: Request,
        patient_id: uuid.UUID,
        before: int | None = Query(default=None, ge=1),
        limit: Limit = 50,
    ) -> dict[str, Any]:
        """Every recorded access to one patient's data, newest first (AUDITOR, ADMIN, or the patient).

        ``flagged`` marks break-the-glass grants and every access made under one.
        """
        who = await authenticate(request, tokens)
        op = Operation.READ_TRAIL
        rel = NONE
        if policy.RULES[op].needs_relationship(who.roles):
            async with ctx.db.pool.acquire() as conn:
                rel = Relationship(owner=await store.owns(conn, uuid.UUID(who.subject), patient_id))
        decision = policy.decide(op, who.roles, rel)
        if not decision.allowed:
            async with ctx.db.uow() as uow:  # the refusal joins the chain before it is answered
                await handlers.record_denied(uow, who, patient_id, decision.purpose, resource="audit_trail")
            raise refused(decision, patient_id)
        async with ctx.db.pool.acquire() as conn:
            found = await store.for_patient(conn, patient_id, before=before, limit=limit)
        return {
            "items": [store.as_json(x) for x in found],
            "next_before": found[-1]["seq"] if len(found) == limit else None,
        }

    return r
