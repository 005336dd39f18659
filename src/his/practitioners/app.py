"""Composition root of the practitioners service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from his.kernel.consumer import Subscription
from his.kernel.service import ServiceContext, ServiceDefinition
from his.kernel.web import Routes
from his.practitioners import handlers
from his.practitioners.api import grpc

if TYPE_CHECKING:
    from his.kernel.db import Database
    from his.practitioners.ports import PractitionersUnits


def http(db: Database) -> Routes:
    """The practitioners routes and their use cases over a database."""
    from his.practitioners.store import PractitionersStore

    return http_over(PractitionersStore(db))


def http_over(units: PractitionersUnits) -> Routes:
    """The same routes over any units of work: the database's, or the in-memory ones of
    ``his.testing.practitioners`` in unit tests."""
    from his.practitioners.api.http import router

    return Routes(router, provides=[handlers.Practitioners(units)])


def routes(ctx: ServiceContext) -> Routes:
    return http(ctx.db)


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.events.scheduling import AppointmentBooked, AppointmentCancelled, AppointmentRescheduled

    return ServiceDefinition(
        name="practitioners",
        subscriptions=(
            Subscription.of("practitioners_booked", AppointmentBooked, handlers.on_appointment_changed),
            Subscription.of("practitioners_cancelled", AppointmentCancelled, handlers.on_appointment_changed),
            Subscription.of("practitioners_rescheduled", AppointmentRescheduled, handlers.on_appointment_changed),
        ),
        routes=routes,
        grpc_services=grpc.services,
        description="Practitioner profiles, shifts, leave, availability.",
    )
