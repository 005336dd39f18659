"""What inventory needs from other services, as ports: a Protocol, and an in-memory fake.

The real adapter asks patients over gRPC (mutual TLS, deadlines, retries, circuit breaker); the
fake serves tests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol

from his.kernel.resilience import DependencyUnavailableError


class PatientLookup(Protocol):
    async def exists(self, patient_id: uuid.UUID) -> bool:
        """Whether there is such a patient; ``DependencyUnavailableError`` if patients cannot say."""
        ...


@dataclass
class FakePatients:
    patients: set[uuid.UUID] = field(default_factory=set)
    #: When set, every look-up fails as an outage would.
    down: bool = False

    def add(self) -> uuid.UUID:
        pid = uuid.uuid4()
        self.patients.add(pid)
        return pid

    async def exists(self, patient_id: uuid.UUID) -> bool:
        if self.down:
            raise DependencyUnavailableError("patients", "down (fake)")
        return patient_id in self.patients
