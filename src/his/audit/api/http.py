"""Internal HTTP API of the audit service: "who saw this record"."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query, Request

from his.audit import store
from his.kernel.auth import authenticate, jwks_verifier
from his.kernel.params import Limit
from his.kernel.problems import HTTPException
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
        async with ctx.db.pool.acquire() as conn:
            if not who.has_any("AUDITOR", "ADMIN") and not await store.owns(conn, uuid.UUID(who.subject), patient_id):
                raise HTTPException(404, "patient not found")
            found = await store.for_patient(conn, patient_id, before=before, limit=limit)
        return {
            "items": [store.as_json(x) for x in found],
            "next_before": found[-1]["seq"] if len(found) == limit else None,
        }

    return r
