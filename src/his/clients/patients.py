"""Client of patients' directory (``his.patients.v1.PatientDirectory``): a patient, a user's
care basis, contact details, a portal invitation's code.

Which services may call which method is patients' allowlist (``src/his/patients/api/grpc.py``).
The real adapter holds one channel (mutual TLS with the caller's workload identity) and an
``RpcClient`` with deadlines, bounded in-flight calls, retries of these idempotent reads and a
circuit breaker. NOT_FOUND is an answer (None); a refusal is ``DependencyRefusedError`` and no
answer ``DependencyUnavailableError`` (both a 503 to the user, never a 404 or an empty success).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from his.access import NONE, Decision, Relationship, Rule, refusal
from his.kernel.pki import WorkloadIdentity
from his.kernel.problems import ProblemError
from his.kernel.resilience import DependencyUnavailableError
from his.kernel.security import Principal


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


class PatientLookup(Protocol):
    async def find(self, patient_id: uuid.UUID) -> PatientRef | None:
        """The patient, or None if there is no such patient; ``DependencyUnavailableError`` if
        patients cannot answer."""
        ...

    async def relationship(self, patient_id: uuid.UUID, user_id: uuid.UUID) -> Relationship | None:
        """What the user ``user_id`` is to the patient now (their own record, in care, under an
        emergency grant), or None if there is no such patient; ``DependencyUnavailableError`` if
        patients cannot answer."""
        ...


#: A service's own knowledge of a patient (a replica learnt from patients' events), if it has one.
Known = Callable[[uuid.UUID], Awaitable[PatientRef | None]]


async def relationship_for(
    lookup: PatientLookup, rule: Rule, patient_id: uuid.UUID, who: Principal, known: Known | None = None
) -> Relationship | None:
    """The caller's relationship to the patient, when ``rule`` needs it for the caller's roles
    (``NONE`` otherwise, without asking); None if there is no such patient.

    A clinician's care and emergency grants are asked of patients (``GetCareBasis``); whether the
    caller is the patient themself is read from ``known`` when given (no call), else asked too.
    """
    if not rule.needs_relationship(who.roles):
        return NONE
    user = uuid.UUID(who.subject)
    if who.roles & rule.with_care or known is None:
        return await lookup.relationship(patient_id, user)
    ref = await known(patient_id)
    return None if ref is None else Relationship(owner=ref.account_id == user)


def refused(decision: Decision, patient_id: uuid.UUID | None, what: str = "patient") -> ProblemError:
    """A refusal as the error a route raises (after the denial's audit record committed)."""
    p = refusal(decision, patient_id, what=what)
    return ProblemError(p.status, p.detail, **p.members)


@dataclass(frozen=True)
class ContactDetails:
    """How to reach a patient (personal data: fetched when a message goes out, never stored)."""

    email: str | None
    phone: str | None
    #: The name to greet them by.
    name: str


class GrpcPatients:
    """The real adapter. grpcio is imported here, so only processes that call patients load it.
    Every call is an idempotent read through ``RpcClient.ask`` (one error policy: NOT_FOUND is
    None, any other refusal ``DependencyRefusedError``, no answer ``DependencyUnavailableError``)."""

    def __init__(self, target: str, identity: WorkloadIdentity, *, timeout: float = 2.0) -> None:
        from his.kernel import rpc
        from his.proto.patients.v1 import patients_pb2_grpc

        self.client = rpc.RpcClient("patients", rpc.channel(target, identity), timeout=timeout)
        self.stub = patients_pb2_grpc.PatientDirectoryStub(self.client.channel)

    async def find(self, patient_id: uuid.UUID) -> PatientRef | None:
        from his.proto.patients.v1 import patients_pb2

        req = patients_pb2.GetPatientRequest(patient_id=str(patient_id))
        answer = await self.client.ask(self.stub.GetPatient, req)
        if answer is None:
            return None
        account = uuid.UUID(answer.user_id) if answer.HasField("user_id") else None
        return PatientRef(patient_id, account)

    async def relationship(self, patient_id: uuid.UUID, user_id: uuid.UUID) -> Relationship | None:
        from his.proto.patients.v1 import patients_pb2

        req = patients_pb2.GetCareBasisRequest(patient_id=str(patient_id), user_id=str(user_id))
        answer = await self.client.ask(self.stub.GetCareBasis, req)
        if answer is None:
            return None
        return Relationship(owner=answer.owner, in_care=answer.in_care, emergency=answer.emergency)

    async def contact(self, patient_id: uuid.UUID) -> ContactDetails | None:
        """The patient's contact details; None if there is no such patient."""
        from his.proto.patients.v1 import patients_pb2

        req = patients_pb2.GetContactDetailsRequest(patient_id=str(patient_id))
        answer = await self.client.ask(self.stub.GetContactDetails, req)
        if answer is None:
            return None
        return ContactDetails(
            email=answer.email if answer.HasField("email") else None,
            phone=answer.phone if answer.HasField("phone") else None,
            name=answer.preferred_name,
        )

    async def invitation_code(self, invitation_id: uuid.UUID) -> str | None:
        """A portal invitation's code; None if it can no longer be redeemed (or does not exist)."""
        import grpc

        from his.proto.patients.v1 import patients_pb2

        req = patients_pb2.GetInvitationRequest(invitation_id=str(invitation_id))
        gone = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)
        answer = await self.client.ask(self.stub.GetInvitation, req, absent=gone)
        return None if answer is None else answer.code


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

    async def relationship(self, patient_id: uuid.UUID, user_id: uuid.UUID) -> Relationship | None:
        if self.down:
            raise DependencyUnavailableError("patients", "down (fake)")
        ref = self.patients.get(patient_id)
        if ref is None:
            return None
        care = self.care.get((patient_id, user_id), CareBasis(in_care=False, emergency=False))
        return Relationship(owner=ref.account_id == user_id, in_care=care.in_care, emergency=care.emergency)
