"""Internal HTTP API of the notifications service."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Query, Request

from his.kernel.auth import authenticate, jwks_verifier, require
from his.kernel.security import TokenVerifier
from his.kernel.service import ServiceContext


def router(ctx: ServiceContext, verifier: TokenVerifier | None = None) -> APIRouter:
    r = APIRouter(prefix="/notifications", tags=["notifications"])
    tokens = verifier or jwks_verifier()

    @r.get("")
    async def history(
        request: Request, patient_id: uuid.UUID, limit: int = Query(default=50, ge=1, le=200)
    ) -> dict[str, Any]:
        """Delivery history of one patient, newest first (ADMIN; the patient's own view comes later)."""
        require(await authenticate(request, tokens), "ADMIN")
        rows = await ctx.db.pool.fetch(
            """SELECT id, template, channel, status, created_at FROM delivery
               WHERE patient_id = $1 ORDER BY created_at DESC LIMIT $2""",
            patient_id,
            limit,
        )
        return {
            "items": [
                {
                    "id": str(r["id"]),
                    "template": r["template"],
                    "channel": r["channel"],
                    "status": r["status"],
                    "created_at": r["created_at"].isoformat(),
                }
                for r in rows
            ]
        }

    return r
