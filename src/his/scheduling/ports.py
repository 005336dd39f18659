"""What scheduling needs from other services, as ports: a Protocol, and an in-memory fake.

The real adapters call practitioners and patients over gRPC (mutual TLS, deadlines, retries,
circuit breaker); the fakes serve tests and `his bench` baselines.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol

from his.kernel.intervals import Interval


@dataclass(frozen=True)
class PatientRef:
    patient_id: uuid.UUID
    #: The user account linked to the patient, if any (the patient themself may book).
    account_id: uuid.UUID | None


class Calendar(Protocol):
    async def working_time(self, practitioner_id: uuid.UUID, window: Interval) -> list[Interval] | None:
        """Shifts minus approved leave inside ``window``; None if there is no such practitioner."""
        ...


class PatientLookup(Protocol):
    async def find(self, patient_id: uuid.UUID) -> PatientRef | None:
        """The patient, or None if there is no such patient."""
        ...


@dataclass
class FakeCalendar:
    working: dict[uuid.UUID, list[Interval]] = field(default_factory=dict)

    async def working_time(self, practitioner_id: uuid.UUID, window: Interval) -> list[Interval] | None:
        if practitioner_id not in self.working:
            return None
        return [
            Interval(max(w.start, window.start), min(w.end, window.end))
            for w in self.working[practitioner_id]
            if w.overlaps(window)
        ]


@dataclass
class FakePatients:
    patients: dict[uuid.UUID, PatientRef] = field(default_factory=dict)

    async def find(self, patient_id: uuid.UUID) -> PatientRef | None:
        return self.patients.get(patient_id)
