"""Internal HTTP API of the notifications service."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter

from his.kernel.service import ServiceContext


def router(ctx: ServiceContext) -> APIRouter:
    r = APIRouter(prefix="/notifications", tags=["notifications"])

    @r.get("")
    async def history(patient_id: uuid.UUID, limit: int = 50) -> dict[str, Any]:
        """Delivery history of one patient, newest first."""
        limit = max(1, min(limit, 200))
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
