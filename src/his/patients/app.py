"""Composition root of the patients service."""

from his.kernel.service import ServiceDefinition
from his.patients.api import grpc
from his.patients.api.http import router


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models

    return ServiceDefinition(
        name="patients",
        routes=router,
        grpc_services=grpc.services,
        description="Patient master data; the only home of personal data.",
    )
