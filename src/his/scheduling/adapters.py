"""Real adapter of scheduling's Calendar port: practitioners over gRPC (patients' directory is
``his.clients.patients``).

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
from his.proto.practitioners.v1 import practitioners_pb2 as calendar_pb
from his.proto.practitioners.v1 import practitioners_pb2_grpc as calendar_grpc


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
