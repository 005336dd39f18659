"""What the laboratory needs from other services, as ports: a Protocol, and an in-memory fake.

The real adapter asks patients over gRPC (mutual TLS, deadlines, retries, circuit breaker); the
fake serves tests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol

from his.kernel.resilience import DependencyUnavailableError


@dataclass(frozen=True)
class PatientRef:
    patient_id: uuid.UUID
    #: The user account linked to the patient, if any (the patient reads their own orders).
    account_id: uuid.UUID | None


class PatientLookup(Protocol):
    async def find(self, patient_id: uuid.UUID) -> PatientRef | None:
        """The patient, or None if there is no such patient; ``DependencyUnavailableError`` if
        patients cannot answer."""
        ...


@dataclass
class FakePatients:
    patients: dict[uuid.UUID, PatientRef] = field(default_factory=dict)
    #: Answer as an unreachable patients service would.
    down: bool = False

    async def find(self, patient_id: uuid.UUID) -> PatientRef | None:
        if self.down:
            raise DependencyUnavailableError("patients", "down (fake)")
        return self.patients.get(patient_id)
