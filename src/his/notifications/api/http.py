"""Internal HTTP API of the notifications service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from his.events.audit import NotificationsRecordAccessed, record_access
from his.kernel.auth import authenticate, jwks_verifier, require
from his.kernel.params import Limit
from his.kernel.problems import HTTPException
from his.kernel.security import Principal, TokenVerifier
from his.kernel.service import ServiceContext
from his.notifications import store
from his.notifications.domain import Preferences


class Alert(BaseModel):
    id: uuid.UUID
    kind: str
    patient_id: uuid.UUID | None
    #: The user whose action raised the alert (for break_glass: the clinician).
    actor_id: uuid.UUID | None
    #: Ids and codes of the cause (for break_glass: grant_id, roles, granted_at, expires_at; for
    #: lab_result: order_id, priority, critical, abnormal, flagged [{code, flag}], resulted_at).
    detail: dict[str, Any]
    created_at: datetime


class Alerts(BaseModel):
    items: list[Alert]


class PreferencesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: bool = True
    sms: bool = False
    #: No messages at all (reminders included).
    opted_out: bool = False


#: Roles that alerts are addressed to as a whole.
ROLE_AUDIENCES = ("ADMIN",)
#: Roles that receive alerts: administrators, and doctors (their own lab orders' results).
ALERTED = ("ADMIN", "DOCTOR")


def router(ctx: ServiceContext, verifier: TokenVerifier | None = None) -> APIRouter:
    r = APIRouter(prefix="/notifications", tags=["notifications"])
    tokens = verifier or jwks_verifier()

    @r.get("/alerts", response_model=Alerts)
    async def my_alerts(request: Request, limit: Limit = 50) -> Alerts:
        """Alerts addressed to the caller, newest first: to ADMIN those for administrators (e.g. a
        clinician broke the glass on a patient); to a DOCTOR those for them (an abnormal or critical
        result of a lab order they placed). Other roles receive no alerts (403)."""
        who = await authenticate(request, tokens)
        require(who, *ALERTED)
        audiences = [role for role in ROLE_AUDIENCES if who.has_any(role)] + [
            store.user_audience(uuid.UUID(who.subject))
        ]
        async with ctx.db.read() as uow:
            rows = await store.alerts(uow.conn, audiences=audiences, limit=limit)
            purposes = {(x["patient_id"], "administration" if x["audience"] in ROLE_AUDIENCES else "care")
                        for x in rows if x["patient_id"] is not None}  # fmt: skip
            for pid, purpose in sorted(purposes, key=str):
                record_access(uow, NotificationsRecordAccessed, who, patient_id=pid, action="read",
                              resource="alert", purpose=purpose)  # fmt: skip
        return Alerts(items=[Alert(**x) for x in rows])

    @r.get("")
    async def history(request: Request, patient_id: uuid.UUID, limit: Limit = 50) -> dict[str, Any]:
        """Delivery history of one patient, newest first (ADMIN, or the patient themself)."""
        who = await authenticate(request, tokens)
        async with ctx.db.read() as uow:
            owner = await store.owns(uow.conn, uuid.UUID(who.subject), patient_id)
            if not (owner or who.has_any("ADMIN")):
                raise HTTPException(404, "patient not found")
            rows = await uow.conn.fetch(
                """SELECT id, template, channel, status, created_at, due_at, sent_at, last_error FROM delivery
                   WHERE patient_id = $1 ORDER BY created_at DESC, due_at DESC LIMIT $2""",
                patient_id,
                limit,
            )
            record_access(uow, NotificationsRecordAccessed, who, patient_id=patient_id, action="read",
                          resource="delivery", purpose="own_record" if owner else "administration")  # fmt: skip
        items = [
            {"id": str(x["id"]), "template": x["template"], "channel": x["channel"], "status": x["status"],
             "created_at": x["created_at"].isoformat(), "due_at": x["due_at"].isoformat(),
             "sent_at": x["sent_at"].isoformat() if x["sent_at"] else None, "reason": x["last_error"]}
            for x in rows
        ]  # fmt: skip
        return {"items": items}

    async def may_manage(who: Principal, patient_id: uuid.UUID) -> bool:
        if who.has_any("ADMIN", "RECEPTIONIST"):
            return True
        async with ctx.db.pool.acquire() as conn:
            return await store.owns(conn, uuid.UUID(who.subject), patient_id)

    @r.get("/preferences", response_model=PreferencesBody)
    async def get_preferences(request: Request, patient_id: uuid.UUID) -> PreferencesBody:
        """How a patient wants to hear from the hospital (the patient, RECEPTIONIST, ADMIN)."""
        who = await authenticate(request, tokens)
        if not await may_manage(who, patient_id):
            raise HTTPException(404, "patient not found")
        async with ctx.db.read() as uow:
            p = await store.preferences(uow.conn, patient_id)
            purpose = "own_record" if who.has_any("PATIENT") else "care"
            record_access(uow, NotificationsRecordAccessed, who, patient_id=patient_id, action="read",
                          resource="preference", purpose=purpose)  # fmt: skip
        return PreferencesBody(email=p.email, sms=p.sms, opted_out=p.opted_out)

    @r.put("/preferences", response_model=PreferencesBody)
    async def put_preferences(request: Request, patient_id: uuid.UUID, body: PreferencesBody) -> PreferencesBody:
        """Choose channels, or opt out of all messages (the patient, RECEPTIONIST, ADMIN).
        Messages already queued honour the change when they go out."""
        who = await authenticate(request, tokens)
        if not await may_manage(who, patient_id):
            raise HTTPException(404, "patient not found")
        async with ctx.db.uow() as uow:
            await store.set_preferences(uow.conn, patient_id, Preferences(body.email, body.sms, body.opted_out))
            purpose = "own_record" if who.has_any("PATIENT") else "care"
            record_access(uow, NotificationsRecordAccessed, who, patient_id=patient_id, action="update",
                          resource="preference", purpose=purpose)  # fmt: skip
        return body

    return r
