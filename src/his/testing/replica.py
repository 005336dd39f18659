"""The patient directory's replica (``his.clients.replica.Known``) in memory."""

from __future__ import annotations

import uuid

from his.clients.patients import PatientRef


class FakeKnown:
    """Patients by id, with their account (None until one is linked)."""

    def __init__(self, known: dict[uuid.UUID, uuid.UUID | None]) -> None:
        self.known = known

    async def find(self, patient_id: uuid.UUID) -> PatientRef | None:
        if patient_id not in self.known:
            return None
        return PatientRef(patient_id, self.known[patient_id])

    async def remember(self, patient_id: uuid.UUID, account_id: uuid.UUID | None) -> None:
        """An account once known is kept when a later event has none (as the table's upsert)."""
        self.known[patient_id] = account_id or self.known.get(patient_id)
