"""Composition root of the inventory service."""

from __future__ import annotations

from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from his.kernel.config import ServiceSettings
from his.kernel.consumer import Subscription
from his.kernel.service import ServiceContext, ServiceDefinition
from his.kernel.web import Routes

if TYPE_CHECKING:
    from his.clients.patients import PatientLookup
    from his.kernel.db import Database


def http(db: Database, patients: PatientLookup, timezone: str = "UTC") -> Routes:
    """The inventory routes and their use cases; "today" is the hospital's (``timezone``)."""
    from his.inventory.api.http import router
    from his.inventory.handlers import Inventory

    return Routes(router, provides=[Inventory(db, patients, ZoneInfo(timezone))])


def routes(ctx: ServiceContext) -> Routes:
    from his.clients.patients import GrpcPatients

    identity = ctx.settings.workload()
    if identity is None:
        raise SystemExit("inventory needs a workload identity (HIS_TLS_*) to reach patients")
    patients = GrpcPatients(ctx.settings.grpc_target("patients"), identity)
    return http(ctx.db, patients, ctx.settings.timezone)


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
