"""Composition root of the patients service."""

from fastapi import APIRouter

from his.kernel.consumer import Subscription
from his.kernel.service import ServiceContext, ServiceDefinition
from his.patients import handlers
from his.patients.api import grpc
from his.patients.api.http import router
from his.patients.settings import PatientsSettings


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models

    settings = PatientsSettings()

    def routes(ctx: ServiceContext) -> APIRouter:
        return router(ctx, emergency_minutes=settings.emergency_access_minutes)

    return ServiceDefinition(
        name="patients",
        subscriptions=(
            Subscription("patients_user_registered", "his.identity.user.registered.v1", handlers.on_user_registered),
        ),
        routes=routes,
        grpc_services=grpc.services,
        description="Patient master data; the only home of personal data.",
    )
