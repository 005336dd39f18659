"""gRPC API of the billing service: ``his.billing.v1.BillingTerms``, what the hospital can bill.

Patients checks a coverage's payer against it, admissions a ward's currency: each method admits
only the services listed in ``ALLOW`` (the kernel's interceptor enforces it). The answer holds no
personal data, so it leaves no access record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from his.billing.domain import billable_currencies
from his.billing.store import PgPrices
from his.kernel import rpc
from his.kernel.db import Database
from his.kernel.pki import spiffe_id
from his.kernel.service import ServiceContext
from his.proto.billing.v1 import billing_pb2 as pb
from his.proto.billing.v1 import billing_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    import grpc

    Context: TypeAlias = grpc.aio.ServicerContext[object, object]

#: Who may ask: the services that take a payer or a price billing will bill.
ALLOW = {"GetTerms": frozenset({spiffe_id("patients"), spiffe_id("admissions")})}


class BillingTerms(pb_grpc.BillingTermsServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def GetTerms(self, request: pb.GetTermsRequest, context: Context) -> pb.Terms:
        """Every payer plan (code, title, currency) and the currencies billing invoices in."""
        async with self.db.pool.acquire() as conn:
            payers = await PgPrices(conn).payers()
        return pb.Terms(
            payers=[pb.PayerPlan(code=p.code, title=p.title, currency=p.currency) for p in payers],
            currencies=billable_currencies({p.code: p.plan for p in payers}),
        )


def services(ctx: ServiceContext) -> list[rpc.RpcService]:
    """What the billing process serves over gRPC, and to whom."""
    return [
        rpc.RpcService(
            descriptor=pb.DESCRIPTOR.services_by_name["BillingTerms"],
            servicer=BillingTerms(ctx.db),
            register=pb_grpc.add_BillingTermsServicer_to_server,
            allow=ALLOW,
        )
    ]
