"""What scheduling needs from other services, as ports: a Protocol, and an in-memory fake.

The real adapters call practitioners and patients over gRPC (mutual TLS, deadlines, retries,
circuit breaker); the fakes serve tests and `his bench` baselines. The patient directory's port,
adapter and fake are shared by every service that asks patients (``his.clients.patients``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol

from his.clients.patients import FakePatients, PatientLookup, PatientRef
from his.kernel.intervals import Interval

__all__ = ["Calendar", "FakeCalendar", "FakePatients", "PatientLookup", "PatientRef"]


class Calendar(Protocol):
    async def working_time(self, practitioner_id: uuid.UUID, window: Interval) -> list[Interval] | None:
        """Shifts minus approved leave inside ``window``; None if there is no such practitioner."""
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
