"""Composition root of the scheduling service."""

from __future__ import annotations

from fastapi import APIRouter

from his.kernel.consumer import Subscription
from his.kernel.service import ServiceContext, ServiceDefinition


def routes(ctx: ServiceContext) -> APIRouter:
    from his.clients.patients import GrpcPatients
    from his.clients.practitioners import GrpcCalendar
    from his.scheduling.api.http import router

    identity = ctx.settings.workload()
    if identity is None:
        raise SystemExit("scheduling needs a workload identity (HIS_TLS_*) to reach practitioners and patients")
    calendar = GrpcCalendar(ctx.settings.grpc_target("practitioners"), identity)
    patients = GrpcPatients(ctx.settings.grpc_target("patients"), identity)
    return router(ctx, calendar, patients, timezone=ctx.settings.timezone)


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.clients import replica
    from his.events.audit import batch_accesses
    from his.events.scheduling import AppointmentCancelled, AppointmentRescheduled
    from his.scheduling import handlers

    return ServiceDefinition(
        name="scheduling",
        combine_reads=batch_accesses,
        subscriptions=(
            *replica.subscriptions("scheduling"),  # the patient directory\'s replica (his.clients.replica)
            # Freed time goes to the waitlist: the service consumes its own events, so an offer is
            # made once per freed slot even across crashes (inbox), never inside the cancel request.
            Subscription.of("scheduling_offer_cancelled", AppointmentCancelled, handlers.on_slot_freed),
            Subscription.of("scheduling_offer_rescheduled", AppointmentRescheduled, handlers.on_slot_freed),
        ),
        routes=routes,
        description="Slots, appointments that never collide, and the waitlist.",
    )
