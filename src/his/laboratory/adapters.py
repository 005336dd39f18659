"""Real adapter of the laboratory's port: patients' directory over gRPC.

It holds one channel (mutual TLS with this service's workload identity) and an ``RpcClient``
with deadlines, bounded in-flight calls, retries of this idempotent read and a circuit breaker.
NOT_FOUND is an answer (None); no answer is ``DependencyUnavailableError`` (a 503).
"""

from __future__ import annotations

import uuid

import grpc

from his.kernel import rpc
from his.kernel.pki import WorkloadIdentity
from his.laboratory.ports import PatientRef
from his.proto.patients.v1 import patients_pb2 as patients_pb
from his.proto.patients.v1 import patients_pb2_grpc as patients_grpc


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
