"""Composition root of the practitioners service."""

from his.kernel.consumer import Subscription
from his.kernel.service import ServiceDefinition
from his.practitioners import handlers
from his.practitioners.api import grpc
from his.practitioners.api.http import router


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models

    return ServiceDefinition(
        name="practitioners",
        subscriptions=tuple(
            Subscription(
                f"practitioners_{event}", f"his.scheduling.appointment.{event}.v1", handlers.on_appointment_changed
            )
            for event in ("booked", "cancelled", "rescheduled")
        ),
        routes=router,
        grpc_services=grpc.services,
        description="Practitioner profiles, shifts, leave, availability.",
    )
