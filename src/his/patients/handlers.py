"""Use cases of the patients service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from his.events.patients import PatientRegistered
from his.kernel.db import UnitOfWork
from his.patients import store
from his.patients.domain import NewPatient


async def register_patient(
    uow: UnitOfWork, cmd: NewPatient, *, actor: uuid.UUID | None = None
) -> tuple[uuid.UUID, str]:
    """Register a patient and announce it (ids only) in the same transaction."""
    patient = cmd.validated(datetime.now(UTC).date())
    patient_id, mrn = await store.insert_patient(uow.conn, patient)
    uow.add(
        PatientRegistered(patient_id=patient_id, registered_by=actor, account_id=patient.user_id),
        aggregate_id=patient_id,
    )
    return patient_id, mrn
