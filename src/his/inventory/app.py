"""Composition root of the inventory service."""

from __future__ import annotations

from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from his.kernel.config import ServiceSettings
from his.kernel.consumer import Subscription
from his.kernel.service import ServiceContext, ServiceDefinition
from his.kernel.web import Routes

if TYPE_CHECKING:
    from datetime import datetime

    from his.clients.patients import PatientLookup
    from his.inventory.ports import InventoryUnits
    from his.kernel.clock import Clock
    from his.kernel.db import Database


def http(db: Database, patients: PatientLookup, timezone: str = "UTC") -> Routes:
    """The inventory routes and their use cases, over a database and a patient directory (the
    gRPC adapter here, the in-memory fake in tests); "today" is the hospital's (``timezone``)."""
    from his.inventory.store import InventoryStore

    def clock() -> datetime:
        """The database's clock, read when asked: the routes are built before the database is
        opened (and, for the API reference, without one)."""
        return db.clock()

    return http_over(InventoryStore(db), patients, timezone, clock=clock)


def http_over(units: InventoryUnits, patients: PatientLookup, timezone: str = "UTC", *, clock: Clock) -> Routes:
    """The same routes over any units of work: the database's, or the in-memory ones of
    ``his.testing.inventory`` in unit tests. ``clock`` is the one the units run by: the routes
    tell "today" by it outside a unit (``as_of``, the expiry report's horizon)."""
    from his.inventory.api.http import router
    from his.inventory.handlers import Inventory

    return Routes(router, provides=[Inventory(units, patients, ZoneInfo(timezone), clock)])


def routes(ctx: ServiceContext) -> Routes:
    from his.clients.patients import GrpcPatients

    identity = ctx.settings.workload()
    if identity is None:
        raise SystemExit("inventory needs a workload identity (HIS_TLS_*) to reach patients")
    patients = GrpcPatients(ctx.settings.grpc_target("patients"), identity)
    return http(ctx.db, patients, ctx.settings.timezone)


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.events.laboratory import OLDER_RESULTED, LabOrderResulted, lab_seal, opening
    from his.inventory import handlers

    zone = ZoneInfo(ServiceSettings().timezone)
    return ServiceDefinition(
        name="inventory",
        requires=lambda: lab_seal().require("inventory"),  # results' content is sealed (ADR 0032)
        subscriptions=(
            # Reagents are used when an order is resulted: once per order, short stock back-ordered.
            Subscription.of(
                "inventory_lab_reagents",
                LabOrderResulted,
                opening(lab_seal(), handlers.make_on_lab_order_resulted(zone)),  # codes travel sealed
                older=OLDER_RESULTED,
            ),
        ),
        routes=routes,
        description="Items, stock per location and lot, consumption, low-stock alerts.",
    )
