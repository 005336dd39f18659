"""Internal HTTP API of the notifications service.

Every route re-verifies the caller's token; what reaches a patient is decided by
``his.notifications.policy`` (the patient themself, ADMIN, reception for preferences; another
patient's id answers 404, other staff 403), and every decision, allowed or denied, is audited.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from his.access import NONE, Decision, Relationship, Role
from his.clients.patients import refused
from his.events.audit import Action, NotificationsRecordAccessed, record_access
from his.kernel.auth import authenticate, jwks_verifier, require
from his.kernel.db import UnitOfWork
from his.kernel.params import Limit
from his.kernel.security import Principal, TokenVerifier
from his.kernel.service import ServiceContext
from his.notifications import policy, store
from his.notifications.domain import Preferences
from his.notifications.policy import Operation


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
ROLE_AUDIENCES = (Role.ADMIN,)
#: Roles that receive alerts: administrators, and doctors (their own lab orders' results).
ALERTED = (Role.ADMIN, Role.DOCTOR)


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
            purposes = {
                (x["patient_id"], "administration" if x["audience"] in ROLE_AUDIENCES else "care")
                for x in rows
                if x["patient_id"] is not None
            }
            for pid, purpose in sorted(purposes, key=str):
                record_access(
                    uow,
                    NotificationsRecordAccessed,
                    who,
                    patient_id=pid,
                    action="read",
                    resource="alert",
                    purpose=purpose,
                )
        return Alerts(items=[Alert(**x) for x in rows])

    @r.get("")
    async def history(request: Request, patient_id: uuid.UUID, limit: Limit = 50) -> dict[str, Any]:
        """Delivery history of one patient, newest first (ADMIN, or the patient themself)."""
        who = await authenticate(request, tokens)
        decision = await access(who, Operation.READ_HISTORY, patient_id, "read", "delivery")
        async with ctx.db.read() as uow:
            rows = await uow.conn.fetch(
                """SELECT id, template, channel, status, created_at, due_at, sent_at, last_error FROM delivery
                   WHERE patient_id = $1 ORDER BY created_at DESC, due_at DESC LIMIT $2""",
                patient_id,
                limit,
            )
            audit(uow, who, patient_id, "read", "delivery", decision=decision)
        items = [
            {
                "id": str(x["id"]),
                "template": x["template"],
                "channel": x["channel"],
                "status": x["status"],
                "created_at": x["created_at"].isoformat(),
                "due_at": x["due_at"].isoformat(),
                "sent_at": x["sent_at"].isoformat() if x["sent_at"] else None,
                "reason": x["last_error"],
            }
            for x in rows
        ]
        return {"items": items}

    def audit(
        uow: UnitOfWork, who: Principal, patient_id: uuid.UUID, action: Action, resource: str, *, decision: Decision
    ) -> None:
        record_access(
            uow,
            NotificationsRecordAccessed,
            who,
            patient_id=patient_id,
            action=action,
            resource=resource,
            purpose=decision.purpose,
            outcome=decision.outcome,
        )

    async def access(who: Principal, op: Operation, patient_id: uuid.UUID, action: Action, resource: str) -> Decision:
        """The policy's decision on ``op`` for this patient; a refusal is audited and raised. The
        patient's own account is known here from patients' events."""
        rel = NONE
        if policy.RULES[op].needs_relationship(who.roles):
            async with ctx.db.pool.acquire() as conn:
                rel = Relationship(owner=await store.owns(conn, uuid.UUID(who.subject), patient_id))
        decision = policy.decide(op, who.roles, rel)
        if not decision.allowed:
            async with ctx.db.read() as uow:
                audit(uow, who, patient_id, action, resource, decision=decision)
            raise refused(decision, patient_id)
        return decision

    @r.get("/preferences", response_model=PreferencesBody)
    async def get_preferences(request: Request, patient_id: uuid.UUID) -> PreferencesBody:
        """How a patient wants to hear from the hospital (the patient, RECEPTIONIST, ADMIN)."""
        who = await authenticate(request, tokens)
        decision = await access(who, Operation.PREFERENCES, patient_id, "read", "preference")
        async with ctx.db.read() as uow:
            p = await store.preferences(uow.conn, patient_id)
            audit(uow, who, patient_id, "read", "preference", decision=decision)
        return PreferencesBody(email=p.email, sms=p.sms, opted_out=p.opted_out)

    @r.put("/preferences", response_model=PreferencesBody)
    async def put_preferences(request: Request, patient_id: uuid.UUID, body: PreferencesBody) -> PreferencesBody:
        """Choose channels, or opt out of all messages (the patient, RECEPTIONIST, ADMIN).
        Messages already queued honour the change when they go out."""
        who = await authenticate(request, tokens)
        decision = await access(who, Operation.PREFERENCES, patient_id, "update", "preference")
        async with ctx.db.uow() as uow:
            await store.set_preferences(uow.conn, patient_id, Preferences(body.email, body.sms, body.opted_out))
            audit(uow, who, patient_id, "update", "preference", decision=decision)
        return body

    return r
