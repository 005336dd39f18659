"""Composition root of the notifications service."""

from his.kernel.consumer import Subscription
from his.kernel.service import ServiceDefinition
from his.notifications import handlers


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.notifications.api.http import router

    return ServiceDefinition(
        name="notifications",
        subscriptions=(
            Subscription(
                "notifications_patient_registered", "his.patients.patient.registered.v1", handlers.on_patient_registered
            ),
            Subscription(
                "notifications_emergency_access_granted",
                "his.patients.emergency_access.granted.v1",
                handlers.on_emergency_access_granted,
            ),
        ),
        routes=router,
        description="Templates, channels and the delivery history of every message.",
    )
