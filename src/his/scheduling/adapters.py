"""Real adapters of scheduling's ports: practitioners' Calendar and patients' directory over gRPC.

Each holds one channel (mutual TLS with this service's workload identity) and an ``RpcClient``
with deadlines, bounded in-flight calls, retries of these idempotent reads and a circuit
breaker. NOT_FOUND is an answer (None); no answer is ``DependencyUnavailableError`` (a 503).
"""

from __future__ import annotations

import uuid
from datetime import UTC

import grpc

from his.kernel import rpc
from his.kernel.intervals import Interval
from his.kernel.pki import WorkloadIdentity
from his.proto.patients.v1 import patients_pb2 as patients_pb
from his.proto.patients.v1 import patients_pb2_grpc as patients_grpc
from his.proto.practitioners.v1 import practitioners_pb2 as calendar_pb
from his.proto.practitioners.v1 import practitioners_pb2_grpc as calendar_grpc
from his.scheduling.ports import PatientRef


class GrpcCalendar:
    def __init__(self, target: str, identity: WorkloadIdentity) -> None:
        self.client = rpc.RpcClient("practitioners", rpc.channel(target, identity))
        self.stub = calendar_grpc.CalendarStub(self.client.channel)

    async def working_time(self, practitioner_id: uuid.UUID, window: Interval) -> list[Interval] | None:
        req = calendar_pb.GetWorkingTimeRequest(practitioner_id=str(practitioner_id))
        req.start.FromDatetime(window.start)
        req.end.FromDatetime(window.end)
        try:
            answer = await self.client.call(self.stub.GetWorkingTime, req, idempotent=True)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return [Interval(i.start.ToDatetime(tzinfo=UTC), i.end.ToDatetime(tzinfo=UTC)) for i in answer.intervals]


class GrpcPatients:
    def __init__(self, target: str, identity: WorkloadIdentity) -> None:
        self.client = rpc.RpcClient("patients", rpc.channel(target, identity))
        self.stub = patients_grpc.PatientDirectoryStub(self.client.channel)

    async def find(self, patient_id: uuid.UUID) -> PatientRef | None:
        req = patients_pb.GetPatientRequest(patient_id=str(patient_id))
        try:
            answer = await self.client.call(self.stub.GetPatient, req, idempotent=True)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        account = uuid.UUID(answer.user_id) if answer.HasField("user_id") else None
        return PatientRef(patient_id, account)
