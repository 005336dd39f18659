"""Clients of practitioners (``his.practitioners.v1``): the directory (``PractitionerDirectory``:
one practitioner, ``PractitionerLookup``; all of them, ``PractitionerRoster``) and working time
(``Calendar``).

Which services may call them is practitioners' allowlist (``src/his/practitioners/api/grpc.py``).
NOT_FOUND is an answer (None); a refusal is ``DependencyRefusedError`` and no answer
``DependencyUnavailableError`` (both a 503).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC
from typing import Protocol

from his.kernel.intervals import Interval
from his.kernel.pki import WorkloadIdentity
from his.kernel.resilience import DependencyUnavailableError


@dataclass(frozen=True)
class PractitionerRef:
    practitioner_id: uuid.UUID
    specialty: str
    #: The practitioner's user account, when linked.
    account_id: uuid.UUID | None = None


class PractitionerLookup(Protocol):
    async def find(self, practitioner_id: uuid.UUID) -> PractitionerRef | None:
        """The practitioner, or None if there is none; ``DependencyUnavailableError`` if
        practitioners cannot answer."""
        ...


@dataclass(frozen=True)
class Listed:
    """A practitioner as the directory lists them."""

    practitioner_id: uuid.UUID
    full_name: str
    specialty: str


@dataclass(frozen=True)
class Roster:
    #: By full name, ties by id.
    practitioners: tuple[Listed, ...]
    #: Every specialty code there is (a specialty no one has lists no practitioner).
    specialties: tuple[str, ...]


class PractitionerRoster(Protocol):
    async def roster(self, specialty: str | None = None) -> Roster:
        """Every practitioner, or those of ``specialty``, with every specialty code there is (an
        unknown specialty lists no one and is not among them); ``DependencyUnavailableError`` if
        practitioners cannot answer."""
        ...


class GrpcPractitioners:
    """The real adapter of ``PractitionerDirectory`` (``PractitionerLookup`` and
    ``PractitionerRoster``). grpcio is imported here, so only processes that call it load it."""

    def __init__(self, target: str, identity: WorkloadIdentity) -> None:
        from his.kernel import rpc
        from his.proto.practitioners.v1 import practitioners_pb2_grpc

        self.client = rpc.RpcClient("practitioners", rpc.channel(target, identity))
        self.stub = practitioners_pb2_grpc.PractitionerDirectoryStub(self.client.channel)

    async def find(self, practitioner_id: uuid.UUID) -> PractitionerRef | None:
        from his.proto.practitioners.v1 import practitioners_pb2

        req = practitioners_pb2.GetPractitionerRequest(practitioner_id=str(practitioner_id))
        answer = await self.client.ask(self.stub.GetPractitioner, req)
        if answer is None:
            return None
        account = uuid.UUID(answer.user_id) if answer.HasField("user_id") else None
        return PractitionerRef(practitioner_id, answer.specialty, account)

    async def roster(self, specialty: str | None = None) -> Roster:
        from his.proto.practitioners.v1 import practitioners_pb2

        req = practitioners_pb2.ListPractitionersRequest(specialty=specialty)
        answer = await self.client.ask(self.stub.ListPractitioners, req, absent=())
        assert answer is not None  # no code is an absence here
        return Roster(
            tuple(Listed(uuid.UUID(p.practitioner_id), p.full_name, p.specialty) for p in answer.practitioners),
            tuple(answer.specialties),
        )


class Calendar(Protocol):
    async def working_time(self, practitioner_id: uuid.UUID, window: Interval) -> list[Interval] | None:
        """Shifts minus approved leave inside ``window``; None if there is no such practitioner;
        ``DependencyUnavailableError`` if practitioners cannot answer."""
        ...


class GrpcCalendar:
    """The real adapter of practitioners' ``Calendar.GetWorkingTime``."""

    def __init__(self, target: str, identity: WorkloadIdentity) -> None:
        from his.kernel import rpc
        from his.proto.practitioners.v1 import practitioners_pb2_grpc

        self.client = rpc.RpcClient("practitioners", rpc.channel(target, identity))
        self.stub = practitioners_pb2_grpc.CalendarStub(self.client.channel)

    async def working_time(self, practitioner_id: uuid.UUID, window: Interval) -> list[Interval] | None:
        from his.proto.practitioners.v1 import practitioners_pb2

        req = practitioners_pb2.GetWorkingTimeRequest(practitioner_id=str(practitioner_id))
        req.start.FromDatetime(window.start)
        req.end.FromDatetime(window.end)
        answer = await self.client.ask(self.stub.GetWorkingTime, req)
        if answer is None:
            return None
        return [Interval(i.start.ToDatetime(tzinfo=UTC), i.end.ToDatetime(tzinfo=UTC)) for i in answer.intervals]


@dataclass
class FakeCalendar:
    working: dict[uuid.UUID, list[Interval]] = field(default_factory=dict)
    #: Every question asked, in order: (practitioner, window).
    asked: list[tuple[uuid.UUID, Interval]] = field(default_factory=list)

    async def working_time(self, practitioner_id: uuid.UUID, window: Interval) -> list[Interval] | None:
        self.asked.append((practitioner_id, window))
        if practitioner_id not in self.working:
            return None
        return [
            Interval(max(w.start, window.start), min(w.end, window.end))
            for w in self.working[practitioner_id]
            if w.overlaps(window)
        ]


#: The specialty codes the fake directory knows unless told others (practitioners' own list is
#: longer; a fake need not be complete, only consistent).
FAKE_SPECIALTIES = ("general_practice", "internal_medicine", "cardiology", "pediatrics", "neurology")


@dataclass
class FakePractitioners:
    """In-memory directory for tests. ``known_by_default`` makes any id a practitioner, for
    tests that are not about the look-up."""

    practitioners: dict[uuid.UUID, PractitionerRef] = field(default_factory=dict)
    known_by_default: bool = False
    #: When set, every look-up fails as an outage would.
    down: bool = False
    #: Full names, by id (``add`` gives one to each).
    names: dict[uuid.UUID, str] = field(default_factory=dict)
    specialties: tuple[str, ...] = FAKE_SPECIALTIES
    #: How many times the roster was asked for.
    rosters: int = 0

    def add(
        self,
        specialty: str = "internal_medicine",
        account: uuid.UUID | None = None,
        *,
        name: str | None = None,
        practitioner_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        pid = practitioner_id or uuid.uuid4()
        self.practitioners[pid] = PractitionerRef(pid, specialty, account)
        self.names[pid] = name if name is not None else f"Dr. {pid.hex[:8]}"
        return pid

    async def roster(self, specialty: str | None = None) -> Roster:
        if self.down:
            raise DependencyUnavailableError("practitioners", "down (fake)")
        self.rosters += 1
        listed = [
            Listed(p.practitioner_id, self.names.get(p.practitioner_id, ""), p.specialty)
            for p in self.practitioners.values()
            if specialty is None or p.specialty == specialty
        ]
        return Roster(tuple(sorted(listed, key=lambda p: (p.full_name, p.practitioner_id))), self.specialties)

    async def find(self, practitioner_id: uuid.UUID) -> PractitionerRef | None:
        if self.down:
            raise DependencyUnavailableError("practitioners", "down (fake)")
        if practitioner_id not in self.practitioners and self.known_by_default:
            return PractitionerRef(practitioner_id, "internal_medicine")
        return self.practitioners.get(practitioner_id)
