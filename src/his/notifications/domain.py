"""What to tell a patient, when, and on which channels. Pure, no IO."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

#: Reminders go out this long before an appointment.
REMINDER_LEAD = timedelta(hours=24)
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


def reminder_due(start: datetime, now: datetime) -> datetime | None:
    """When to remind of an appointment starting at ``start``; None if that moment has passed."""
    due = start - REMINDER_LEAD
    return due if due > now else None


def retry_delay(attempts: int) -> timedelta:
    """Back off while a dependency (the patient directory, a mail server) does not answer."""
    return timedelta(seconds=min(300.0, 2.0 * 2 ** min(attempts, 8)))
