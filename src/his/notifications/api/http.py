"""Internal HTTP API of the notifications service.

Every route re-verifies the caller's token and calls one use case of
``his.notifications.handlers.Notifications``. What reaches a patient is decided by
``his.notifications.policy`` (the patient themself, ADMIN, reception for preferences; another
patient's id answers 404, other staff 403), and every decision, allowed or denied, is audited.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from his.kernel.params import Limit
from his.kernel.web import Caller, Moment, errors, provided, public
from his.notifications import domain
from his.notifications.handlers import Notifications

router = APIRouter(prefix="/notifications", tags=["notifications"])
Messages = Annotated[Notifications, Depends(provided(Notifications))]


class Alert(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    kind: str
    patient_id: uuid.UUID | None
    #: The user whose action raised the alert (for break_glass and break_glass_limit: the clinician).
    actor_id: uuid.UUID | None
    #: Ids and codes of the cause (for break_glass: grant_id, roles, granted_at, expires_at; for
    #: break_glass_limit: grant_id, granted_at, grants_in_window, limit, window_hours; for
    #: lab_result: order_id, priority, critical, abnormal, flagged [{code, flag}], resulted_at).
    detail: dict[str, object]
    created_at: Moment


class Alerts(BaseModel):
    items: list[Alert]


class Delivery(BaseModel):
    """One message on one channel: ``queued``, ``sent``, ``failed`` or ``suppressed`` (opted out),
    with the reason it was not sent."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    template: str
    channel: str
    status: str
    created_at: Moment
    due_at: Moment
    sent_at: Moment | None
    reason: str | None


class Deliveries(BaseModel):
    items: list[Delivery]


class PreferencesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: bool = True
    sms: bool = False
    #: No messages at all (reminders included).
    opted_out: bool = False

    @classmethod
    def of(cls, p: domain.Preferences) -> PreferencesBody:
        return cls(email=p.email, sms=p.sms, opted_out=p.opted_out)


@router.get("/alerts", responses=errors(403), openapi_extra=public("/api/notifications/alerts"))
async def my_alerts(who: Caller, messages: Messages, limit: Limit = 50) -> Alerts:
    """Alerts addressed to the caller, newest first: to ADMIN those for administrators (e.g. a
    clinician broke the glass on a patient); to a DOCTOR those for them (an abnormal or critical
    result of a lab order they placed). Other roles receive no alerts (403)."""
    return Alerts(items=[Alert.model_validate(a) for a in await messages.alerts(who, limit)])


@router.get("", responses=errors(403, 404), openapi_extra=public("/api/notifications"))
async def history(patient_id: uuid.UUID, who: Caller, messages: Messages, limit: Limit = 50) -> Deliveries:
    """Delivery history of one patient, newest first (ADMIN, or the patient themself)."""
    return Deliveries(items=[Delivery.model_validate(d) for d in await messages.history(who, patient_id, limit)])


@router.get("/preferences", responses=errors(403, 404), openapi_extra=public("/api/notifications/preferences"))
async def get_preferences(patient_id: uuid.UUID, who: Caller, messages: Messages) -> PreferencesBody:
    """How a patient wants to hear from the hospital (the patient, RECEPTIONIST, ADMIN)."""
    return PreferencesBody.of(await messages.preferences(who, patient_id))


@router.put("/preferences", responses=errors(403, 404), openapi_extra=public("/api/notifications/preferences"))
async def put_preferences(
    patient_id: uuid.UUID, body: PreferencesBody, who: Caller, messages: Messages
) -> PreferencesBody:
    """Choose channels, or opt out of all messages (the patient, RECEPTIONIST, ADMIN).
    Messages already queued honour the change when they go out."""
    chosen = domain.Preferences(body.email, body.sms, body.opted_out)
    return PreferencesBody.of(await messages.choose(who, patient_id, chosen))
