"""Composition root of the laboratory service."""

from __future__ import annotations

from fastapi import APIRouter

from his.kernel.service import ServiceContext, ServiceDefinition


def routes(ctx: ServiceContext) -> APIRouter:
    from his.clients.patients import GrpcPatients
    from his.laboratory.api.http import router

    identity = ctx.settings.workload()
    if identity is None:
        raise SystemExit("laboratory needs a workload identity (HIS_TLS_*) to reach patients")
    return router(ctx, GrpcPatients(ctx.settings.grpc_target("patients"), identity))


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.clients import replica
    from his.events.audit import batch_accesses

    return ServiceDefinition(
        name="laboratory",
        combine_reads=batch_accesses,
        subscriptions=(
            *replica.subscriptions("laboratory"),  # the patient directory\'s replica (his.clients.replica)
        ),
        routes=routes,
        description="Test catalogue with prices, lab orders and their results.",
    )
