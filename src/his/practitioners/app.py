"""Composition root of the practitioners service."""

from his.kernel.service import ServiceDefinition
from his.practitioners.api import grpc
from his.practitioners.api.http import router


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models

    return ServiceDefinition(
        name="practitioners",
        routes=router,
        grpc_services=grpc.services,
        description="Practitioner profiles, shifts, leave, availability.",
    )
