"""Events published by the practitioners service (ids, codes and times only)."""

from __future__ import annotations

import uuid
from datetime import datetime

from his.kernel.events import Event, event


@event
class PractitionerRegistered(Event):
    """A practitioner profile was created."""

    type = "his.practitioners.practitioner.registered.v1"
    practitioner_id: uuid.UUID
    specialty: str
    #: The user account of the practitioner, if linked (lets other services check ownership).
    account_id: uuid.UUID | None = None


@event
class ShiftScheduled(Event):
    """A practitioner was given a shift."""

    type = "his.practitioners.shift.scheduled.v1"
    shift_id: uuid.UUID
    practitioner_id: uuid.UUID
    start: datetime
    end: datetime


@event
class LeaveApproved(Event):
    """Leave was approved: the practitioner is unavailable in that time."""

    type = "his.practitioners.leave.approved.v1"
    leave_id: uuid.UUID
    practitioner_id: uuid.UUID
    start: datetime
    end: datetime


@event
class LeaveCancelled(Event):
    """Approved leave was cancelled: the time is available again."""

    type = "his.practitioners.leave.cancelled.v1"
    leave_id: uuid.UUID
    practitioner_id: uuid.UUID
