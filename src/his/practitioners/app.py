"""Composition root of the practitioners service."""

from his.kernel.consumer import Subscription
from his.kernel.service import ServiceDefinition
from his.practitioners import handlers
from his.practitioners.api import grpc
from his.practitioners.api.http import router


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
        routes=router,
        grpc_services=grpc.services,
        description="Practitioner profiles, shifts, leave, availability.",
    )
