"""Events published by the scheduling service (ids, codes and times only)."""

from __future__ import annotations

import uuid
from datetime import datetime

from his.kernel.events import Event, event


class AppointmentEvent(Event):
    appointment_id: uuid.UUID
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    service: str
    start: datetime
    end: datetime


@event
class AppointmentBooked(AppointmentEvent):
    """An appointment was booked."""

    type = "his.scheduling.appointment.booked.v1"


@event
class AppointmentCancelled(AppointmentEvent):
    """An appointment was cancelled: its time is free again (charges for it are void)."""

    type = "his.scheduling.appointment.cancelled.v1"


@event
class AppointmentRescheduled(AppointmentEvent):
    """An appointment moved; ``start``/``end`` are the new times."""

    type = "his.scheduling.appointment.rescheduled.v1"
    previous_start: datetime
    previous_end: datetime


@event
class AppointmentCheckedIn(AppointmentEvent):
    """The patient arrived for the appointment."""

    type = "his.scheduling.appointment.checked_in.v1"


@event
class AppointmentCompleted(AppointmentEvent):
    """The appointment took place (billable)."""

    type = "his.scheduling.appointment.completed.v1"


@event
class AppointmentMissed(AppointmentEvent):
    """The patient did not come."""

    type = "his.scheduling.appointment.no_show.v1"


@event
class WaitlistOffered(Event):
    """A freed slot was offered to the next patient on the waitlist."""

    type = "his.scheduling.waitlist.offered.v1"
    entry_id: uuid.UUID
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    service: str
    start: datetime
    end: datetime
    expires_at: datetime
