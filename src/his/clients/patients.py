"""Client of patients' directory (``his.patients.v1.PatientDirectory.GetPatient``).

Which services may call it is patients' allowlist (``src/his/patients/api/grpc.py``). The real
adapter holds one channel (mutual TLS with the caller's workload identity) and an ``RpcClient``
with deadlines, bounded in-flight calls, retries of this idempotent read and a circuit breaker.
NOT_FOUND is an answer (None); any other failure is no answer: ``DependencyUnavailableError``
(a 503 to the user, never a 404 or an empty success).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol

from his.kernel.pki import WorkloadIdentity
from his.kernel.resilience import DependencyUnavailableError


@dataclass(frozen=True)
class PatientRef:
    patient_id: uuid.UUID
    #: The user account linked to the patient, if any (the patient themself may act on it).
    account_id: uuid.UUID | None


@dataclass(frozen=True)
class CareBasis:
    """On what a clinician's reach to a patient rests now: neither means no reach."""

    in_care: bool
    emergency: bool

    @property
    def reaches(self) -> bool:
        return self.in_care or self.emergency


#: Clinicians reach a patient's clinical data (lab orders, appointments) only with a basis:
#: a care relationship or an emergency grant, which patients decides (``GetCareBasis``).
CLINICIANS = ("DOCTOR", "NURSE")


def care_required(patient_id: uuid.UUID) -> str:
    """The 403 detail for a clinician without a basis: where emergency access is asked for."""
    return (
        "a care relationship with this patient is required; in an emergency, request emergency access"
        f" at /api/patients/{patient_id}/emergency-access"
    )


class PatientLookup(Protocol):
    async def find(self, patient_id: uuid.UUID) -> PatientRef | None:
        """The patient, or None if there is no such patient; ``DependencyUnavailableError`` if
        patients cannot answer."""
        ...

    async def care_basis(self, patient_id: uuid.UUID, user_id: uuid.UUID) -> CareBasis | None:
        """The clinician ``user_id``'s basis for reaching the patient, or None if there is no
        such patient; ``DependencyUnavailableError`` if patients cannot answer."""
        ...


async def clinician_purpose(lookup: PatientLookup, patient_id: uuid.UUID, user_id: uuid.UUID) -> str | None:
    """The audit purpose on which a clinician reads the patient's clinical data: ``care`` or
    ``emergency`` (flagged); None without a basis, or for no such patient."""
    basis = await lookup.care_basis(patient_id, user_id)
    if basis is None or not basis.reaches:
        return None
    return "care" if basis.in_care else "emergency"


class GrpcPatients:
    """The real adapter. grpcio is imported here, so only processes that call patients load it."""

    def __init__(self, target: str, identity: WorkloadIdentity) -> None:
        from his.kernel import rpc
        from his.proto.patients.v1 import patients_pb2_grpc

        self.client = rpc.RpcClient("patients", rpc.channel(target, identity))
        self.stub = patients_pb2_grpc.PatientDirectoryStub(self.client.channel)

    async def find(self, patient_id: uuid.UUID) -> PatientRef | None:
        import grpc

        from his.proto.patients.v1 import patients_pb2

        req = patients_pb2.GetPatientRequest(patient_id=str(patient_id))
        try:
            answer = await self.client.call(self.stub.GetPatient, req, idempotent=True)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            # It answered, but not about the patient (refused us, say): no answer to give either.
            raise DependencyUnavailableError("patients", exc.code().name) from exc
        account = uuid.UUID(answer.user_id) if answer.HasField("user_id") else None
        return PatientRef(patient_id, account)

    async def care_basis(self, patient_id: uuid.UUID, user_id: uuid.UUID) -> CareBasis | None:
        import grpc

        from his.proto.patients.v1 import patients_pb2

        req = patients_pb2.GetCareBasisRequest(patient_id=str(patient_id), user_id=str(user_id))
        try:
            answer = await self.client.call(self.stub.GetCareBasis, req, idempotent=True)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise DependencyUnavailableError("patients", exc.code().name) from exc
        return CareBasis(in_care=answer.in_care, emergency=answer.emergency)


@dataclass
class FakePatients:
    """In-memory directory for tests and benchmark baselines."""

    patients: dict[uuid.UUID, PatientRef] = field(default_factory=dict)
    #: (patient, clinician) → their basis; absent pairs have none.
    care: dict[tuple[uuid.UUID, uuid.UUID], CareBasis] = field(default_factory=dict)
    #: When set, every look-up fails as an outage would.
    down: bool = False

    def add(self, account: uuid.UUID | None = None) -> uuid.UUID:
        pid = uuid.uuid4()
        self.patients[pid] = PatientRef(pid, account)
        return pid

    async def find(self, patient_id: uuid.UUID) -> PatientRef | None:
        if self.down:
            raise DependencyUnavailableError("patients", "down (fake)")
        return self.patients.get(patient_id)

    async def care_basis(self, patient_id: uuid.UUID, user_id: uuid.UUID) -> CareBasis | None:
        if self.down:
            raise DependencyUnavailableError("patients", "down (fake)")
        if patient_id not in self.patients:
            return None
        return self.care.get((patient_id, user_id), CareBasis(in_care=False, emergency=False))
