"""Real adapter of inventory's patient look-up: patients' directory over gRPC.

It holds one channel (mutual TLS with this service's workload identity) and an ``RpcClient`` with
deadlines, bounded in-flight calls, retries of this idempotent read and a circuit breaker.
NOT_FOUND is an answer (False); no answer is ``DependencyUnavailableError`` (a 503).
"""

from __future__ import annotations

import uuid

import grpc

from his.kernel import rpc
from his.kernel.pki import WorkloadIdentity
from his.kernel.resilience import DependencyUnavailableError
from his.proto.patients.v1 import patients_pb2 as patients_pb
from his.proto.patients.v1 import patients_pb2_grpc as patients_grpc


class GrpcPatients:
    def __init__(self, target: str, identity: WorkloadIdentity) -> None:
        self.client = rpc.RpcClient("patients", rpc.channel(target, identity))
        self.stub = patients_grpc.PatientDirectoryStub(self.client.channel)

    async def exists(self, patient_id: uuid.UUID) -> bool:
        req = patients_pb.GetPatientRequest(patient_id=str(patient_id))
        try:
            await self.client.call(self.stub.GetPatient, req, idempotent=True)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return False
            # It answered, but not about the patient (refused us, say): no answer to give either.
            raise DependencyUnavailableError("patients", exc.code().name) from exc
        return True
