"""What scheduling needs from other services, as ports: a practitioner's working time and the
patient directory. Their Protocols, gRPC adapters and in-memory fakes live with every other
service client in ``his.clients``; the fakes serve tests and `his bench` baselines.
"""

from __future__ import annotations

from his.clients.patients import FakePatients, PatientLookup, PatientRef
from his.clients.practitioners import Calendar, FakeCalendar

__all__ = ["Calendar", "FakeCalendar", "FakePatients", "PatientLookup", "PatientRef"]
