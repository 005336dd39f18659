"""Client of practitioners' directory (``his.practitioners.v1.PractitionerDirectory``).

Which services may call it is practitioners' allowlist (``src/his/practitioners/api/grpc.py``).
NOT_FOUND is an answer (None); any other failure is ``DependencyUnavailableError`` (a 503).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol

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


class GrpcPractitioners:
    """The real adapter. grpcio is imported here, so only processes that call it load it."""

    def __init__(self, target: str, identity: WorkloadIdentity) -> None:
        from his.kernel import rpc
        from his.proto.practitioners.v1 import practitioners_pb2_grpc

        self.client = rpc.RpcClient("practitioners", rpc.channel(target, identity))
        self.stub = practitioners_pb2_grpc.PractitionerDirectoryStub(self.client.channel)

    async def find(self, practitioner_id: uuid.UUID) -> PractitionerRef | None:
        import grpc

        from his.proto.practitioners.v1 import practitioners_pb2

        req = practitioners_pb2.GetPractitionerRequest(practitioner_id=str(practitioner_id))
        try:
            answer = await self.client.call(self.stub.GetPractitioner, req, idempotent=True)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise DependencyUnavailableError("practitioners", exc.code().name) from exc
        account = uuid.UUID(answer.user_id) if answer.HasField("user_id") else None
        return PractitionerRef(practitioner_id, answer.specialty, account)


@dataclass
class FakePractitioners:
    """In-memory directory for tests. ``known_by_default`` makes any id a practitioner, for
    tests that are not about the look-up."""

    practitioners: dict[uuid.UUID, PractitionerRef] = field(default_factory=dict)
    known_by_default: bool = False
    #: When set, every look-up fails as an outage would.
    down: bool = False

    def add(self, specialty: str = "internal_medicine", account: uuid.UUID | None = None) -> uuid.UUID:
        pid = uuid.uuid4()
        self.practitioners[pid] = PractitionerRef(pid, specialty, account)
        return pid

    async def find(self, practitioner_id: uuid.UUID) -> PractitionerRef | None:
        if self.down:
            raise DependencyUnavailableError("practitioners", "down (fake)")
        if practitioner_id not in self.practitioners and self.known_by_default:
            return PractitionerRef(practitioner_id, "internal_medicine")
        return self.practitioners.get(practitioner_id)
