"""Events published by the patients service."""

from __future__ import annotations

import uuid

from his.kernel.events import Event, event


@event
class PatientRegistered(Event):
    """A patient was registered. Carries the surrogate id only: fetch details over the API."""

    type = "his.patients.patient.registered.v1"
    patient_id: uuid.UUID
    registered_by: uuid.UUID | None = None
    #: The user account linked to the patient, if any (lets other services check ownership).
    account_id: uuid.UUID | None = None
