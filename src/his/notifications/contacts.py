"""How to reach a patient: asked of patients over gRPC, remembered briefly.

Contact details are personal data, so they never travel on the bus and are not stored here:
they are fetched when a message is sent, through a short-lived cache (a minute by default), with
a deadline, retries and a circuit breaker. When patients does not answer, the delivery waits and
is tried again later; an address is never guessed. A portal invitation's code is asked the same
way when its message goes out, and is neither cached nor stored.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from his.kernel import rpc
from his.kernel.pki import WorkloadIdentity
from his.notifications.domain import Contact
from his.proto.patients.v1 import patients_pb2 as pb
from his.proto.patients.v1 import patients_pb2_grpc as pb_grpc


class ContactDirectory(Protocol):
    async def contact(self, patient_id: uuid.UUID) -> Contact | None:
        """The patient's contact details; None if there is no such patient.
        Raises ``DependencyUnavailableError`` when the directory does not answer."""
        ...

    async def invitation_code(self, invitation_id: uuid.UUID) -> str | None:
        """A portal invitation's code, to send it now; None if it can no longer be redeemed (or
        does not exist). Never cached: the code is secret and one invitation is sent once.
        Raises ``DependencyUnavailableError`` when the directory does not answer."""
        ...


class GrpcContacts:
    def __init__(self, target: str, identity: WorkloadIdentity, *, ttl: float = 60.0, size: int = 10_000) -> None:
        self.client = rpc.RpcClient("patients", rpc.channel(target, identity), timeout=2.0)
        self.stub = pb_grpc.PatientDirectoryStub(self.client.channel)
        self.ttl, self.size = ttl, size
        self._cache: dict[uuid.UUID, tuple[float, Contact | None]] = {}

    async def contact(self, patient_id: uuid.UUID) -> Contact | None:
        now = time.monotonic()
        hit = self._cache.get(patient_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            answer = await self.client.call(
                self.stub.GetContactDetails, pb.GetContactDetailsRequest(patient_id=str(patient_id)), idempotent=True
            )
            found: Contact | None = Contact(
                email=answer.email if answer.HasField("email") else None,
                phone=answer.phone if answer.HasField("phone") else None,
                name=answer.preferred_name,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            found = None
        if len(self._cache) >= self.size:
            self._cache.clear()
        self._cache[patient_id] = (now + self.ttl, found)
        return found

    async def invitation_code(self, invitation_id: uuid.UUID) -> str | None:
        try:
            answer = await self.client.call(
                self.stub.GetInvitation, pb.GetInvitationRequest(invitation_id=str(invitation_id)), idempotent=True
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                return None
            raise
        return answer.code


@dataclass
class FakeContacts:
    contacts: dict[uuid.UUID, Contact] = field(default_factory=dict)
    #: Codes of the invitations that can still be redeemed.
    invitations: dict[uuid.UUID, str] = field(default_factory=dict)
    down: bool = False

    def _answer(self) -> None:
        if self.down:
            from his.kernel.resilience import DependencyUnavailableError

            raise DependencyUnavailableError("patients", "told to be down")

    async def contact(self, patient_id: uuid.UUID) -> Contact | None:
        self._answer()
        return self.contacts.get(patient_id)

    async def invitation_code(self, invitation_id: uuid.UUID) -> str | None:
        self._answer()
        return self.invitations.get(invitation_id)
