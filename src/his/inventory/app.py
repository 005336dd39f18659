"""Composition root of the inventory service."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from fastapi import APIRouter

from his.kernel.config import ServiceSettings
from his.kernel.consumer import Subscription
from his.kernel.service import ServiceContext, ServiceDefinition


def routes(ctx: ServiceContext) -> APIRouter:
    from his.clients.patients import GrpcPatients
    from his.inventory.api.http import router

    identity = ctx.settings.workload()
    if identity is None:
        raise SystemExit("inventory needs a workload identity (HIS_TLS_*) to reach patients")
    patients = GrpcPatients(ctx.settings.grpc_target("patients"), identity)
    return router(ctx, patients, timezone=ctx.settings.timezone)


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.events.laboratory import LabOrderResulted
    from his.inventory import handlers

    zone = ZoneInfo(ServiceSettings().timezone)
    return ServiceDefinition(
        name="inventory",
        subscriptions=(
            # Reagents are used when an order is resulted: once per order, short stock back-ordered.
            Subscription.of(
                "inventory_lab_reagents",
                LabOrderResulted,
                handlers.make_on_lab_order_resulted(zone),
            ),
        ),
        routes=routes,
        description="Items, stock per location and lot, consumption, low-stock alerts.",
    )
