"""What to tell a patient, when, and on which channels. Pure, no IO."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

#: Reminders go out this long before an appointment.
REMINDER_LEAD = timedelta(hours=24)
#: The template of a reminder: queued once per appointment time and channel, cancelled when the
#: appointment moves or is cancelled.
REMINDER = "appointment_reminder"
#: The template of a portal invitation: sent on the channel reception chose, whatever the
#: patient's preferences (they asked for it at the desk), with a code asked of patients at sending.
INVITATION = "portal_invitation"


@dataclass(frozen=True)
class Preferences:
    email: bool = True
    sms: bool = False
    opted_out: bool = False

    def channels(self) -> list[str]:
        """Channels a patient hears on; none after opting out."""
        if self.opted_out:
            return []
        return [c for c, on in (("email", self.email), ("sms", self.sms)) if on]


@dataclass(frozen=True)
class Contact:
    email: str | None
    phone: str | None
    name: str

    def address(self, channel: str) -> str | None:
        return self.email if channel == "email" else self.phone if channel == "sms" else None


@dataclass(frozen=True)
class Alert:
    """Something staff must know, addressed to a role or to one user (``audience``)."""

    id: uuid.UUID
    kind: str
    audience: str
    patient_id: uuid.UUID | None
    #: The user whose action raised the alert (for break_glass: the clinician).
    actor_id: uuid.UUID | None
    #: Ids and codes of the cause, never personal data.
    detail: Mapping[str, object]
    created_at: datetime


@dataclass(frozen=True)
class Delivery:
    """One message to a patient on one channel: queued, sent, or given up (with the reason)."""

    id: uuid.UUID
    template: str
    channel: str
    status: str
    created_at: datetime
    due_at: datetime
    sent_at: datetime | None
    reason: str | None


#: What a message says besides the patient's name (ids, codes, ISO times): kept with the delivery
#: and given to its template when it goes out.
Context = Mapping[str, str]


@dataclass(frozen=True)
class Message:
    """One message an event causes, to queue: its template on one channel, due at ``due_at``."""

    template: str
    channel: str
    due_at: datetime
    context: Context


@dataclass(frozen=True)
class Due:
    """A queued delivery whose time has come, claimed by the dispatcher to send it now."""

    id: uuid.UUID
    patient_id: uuid.UUID
    template: str
    channel: str
    #: How often sending it was tried before.
    attempts: int
    context: Context
    #: The trace context of the event that queued it: sending it continues that trace.
    traceparent: str | None = None


def user_audience(user_id: uuid.UUID) -> str:
    """The audience of an alert for one user."""
    return f"user:{user_id}"


def reminder_due(start: datetime, now: datetime) -> datetime | None:
    """When to remind of an appointment starting at ``start``; None if that moment has passed."""
    due = start - REMINDER_LEAD
    return due if due > now else None


def retry_delay(attempts: int) -> timedelta:
    """Back off while a dependency (the patient directory, a mail server) does not answer."""
    return timedelta(seconds=min(300.0, 2.0 * 2 ** min(attempts, 8)))
