"""Composition root of the scheduling service."""

from __future__ import annotations

from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from his.kernel.consumer import Subscription
from his.kernel.service import ServiceContext, ServiceDefinition
from his.kernel.web import Routes

if TYPE_CHECKING:
    from his.kernel.clock import Clock
    from his.kernel.db import Database
    from his.scheduling.ports import Calendar, PatientLookup, PractitionerRoster, SchedulingUnits


def http(
    db: Database,
    calendar: Calendar,
    patients: PatientLookup,
    timezone: str = "UTC",
    *,
    practitioners: PractitionerRoster,
) -> Routes:
    """The scheduling routes and their use cases, over a database, the practitioners' calendar and
    directory and the patient directory (the gRPC adapters here, the in-memory fakes in tests);
    days are the hospital's (``timezone``)."""
    from his.scheduling.store import SchedulingStore

    store = SchedulingStore(db)
    return http_over(store, calendar, patients, timezone, clock=store.clock, practitioners=practitioners)


def http_over(
    units: SchedulingUnits,
    calendar: Calendar,
    patients: PatientLookup,
    timezone: str = "UTC",
    *,
    clock: Clock,
    practitioners: PractitionerRoster,
) -> Routes:
    """The same routes over any units of work: the database's, or the in-memory ones of
    ``his.testing.scheduling`` in unit tests. ``clock`` is the one the units run by: a booking's
    times, the slots still ahead and "today" are told by it outside a unit."""
    from his.scheduling.api.http import router
    from his.scheduling.handlers import Scheduling

    zone = ZoneInfo(timezone)
    return Routes(router, provides=[Scheduling(units, calendar, patients, zone, clock, practitioners=practitioners)])


def routes(ctx: ServiceContext) -> Routes:
    from his.clients.patients import GrpcPatients
    from his.clients.practitioners import GrpcCalendar, GrpcPractitioners

    identity = ctx.settings.workload()
    if identity is None:
        raise SystemExit("scheduling needs a workload identity (HIS_TLS_*) to reach practitioners and patients")
    calendar = GrpcCalendar(ctx.settings.grpc_target("practitioners"), identity)
    directory = GrpcPractitioners(ctx.settings.grpc_target("practitioners"), identity)
    patients = GrpcPatients(ctx.settings.grpc_target("patients"), identity)
    return http(ctx.db, calendar, patients, ctx.settings.timezone, practitioners=directory)


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
