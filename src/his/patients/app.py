"""Composition root of the patients service."""

from fastapi import APIRouter

from his.kernel.consumer import Subscription
from his.kernel.crypto import FieldCipher, parse_key
from his.kernel.service import ServiceContext, ServiceDefinition
from his.patients import handlers
from his.patients.api import grpc
from his.patients.api.http import router
from his.patients.settings import PatientsSettings


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.events.audit import batch_accesses

    settings = PatientsSettings()

    cipher = None
    if settings.records_keys:
        cipher = FieldCipher([parse_key(k) for k in settings.records_keys.split(",") if k.strip()])

    def routes(ctx: ServiceContext) -> APIRouter:
        return router(ctx, emergency_minutes=settings.emergency_access_minutes, cipher=cipher)

    return ServiceDefinition(
        name="patients",
        subscriptions=(
            Subscription("patients_user_registered", "his.identity.user.registered.v1", handlers.on_user_registered),
            Subscription(
                "patients_lab_order_resulted", "his.laboratory.order.resulted.v1", handlers.on_lab_order_resulted
            ),
        ),
        routes=routes,
        grpc_services=grpc.services,
        combine_reads=batch_accesses,
        description="Patient master data; the only home of personal data.",
    )
