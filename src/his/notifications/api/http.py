"""Internal HTTP API of the notifications service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from his.events.audit import NotificationsRecordAccessed, record_access
from his.kernel.auth import authenticate, jwks_verifier, require
from his.kernel.problems import HTTPException
from his.kernel.security import TokenVerifier
from his.kernel.service import ServiceContext
from his.notifications import store


class Alert(BaseModel):
    id: uuid.UUID
    kind: str
    patient_id: uuid.UUID | None
    #: The user whose action raised the alert (for break_glass: the clinician).
    actor_id: uuid.UUID | None
    #: Ids and codes of the cause (for break_glass: grant_id, roles, granted_at, expires_at).
    detail: dict[str, Any]
    created_at: datetime


class Alerts(BaseModel):
    items: list[Alert]


def router(ctx: ServiceContext, verifier: TokenVerifier | None = None) -> APIRouter:
    r = APIRouter(prefix="/notifications", tags=["notifications"])
    tokens = verifier or jwks_verifier()

    @r.get("/alerts", response_model=Alerts)
    async def admin_alerts(request: Request, limit: int = Query(default=50, ge=1, le=200)) -> Alerts:
        """Alerts for administrators, newest first (ADMIN): e.g. a clinician broke the glass on a patient."""
        who = await authenticate(request, tokens)
        require(who, "ADMIN")
        async with ctx.db.uow() as uow:
            rows = await store.alerts(uow.conn, audience="ADMIN", limit=limit)
            for pid in dict.fromkeys(x["patient_id"] for x in rows if x["patient_id"] is not None):
                record_access(uow, NotificationsRecordAccessed, who, patient_id=pid, action="read",
                              resource="alert", purpose="administration")  # fmt: skip
        return Alerts(items=[Alert(**x) for x in rows])

    @r.get("")
    async def history(
        request: Request, patient_id: uuid.UUID, limit: int = Query(default=50, ge=1, le=200)
    ) -> dict[str, Any]:
        """Delivery history of one patient, newest first (ADMIN, or the patient themself)."""
        who = await authenticate(request, tokens)
        async with ctx.db.uow() as uow:
            owner = await store.owns(uow.conn, uuid.UUID(who.subject), patient_id)
            if not (owner or who.has_any("ADMIN")):
                raise HTTPException(404, "patient not found")
            rows = await uow.conn.fetch(
                """SELECT id, template, channel, status, created_at FROM delivery
                   WHERE patient_id = $1 ORDER BY created_at DESC LIMIT $2""",
                patient_id,
                limit,
            )
            record_access(uow, NotificationsRecordAccessed, who, patient_id=patient_id, action="read",
                          resource="delivery", purpose="own_record" if owner else "administration")  # fmt: skip
        items = [
            {"id": str(x["id"]), "template": x["template"], "channel": x["channel"], "status": x["status"],
             "created_at": x["created_at"].isoformat()}
            for x in rows
        ]  # fmt: skip
        return {"items": items}

    return r
