"""Composition root of the audit service."""

from __future__ import annotations

from his.kernel.consumer import Subscription
from his.kernel.service import ServiceDefinition


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.audit import handlers
    from his.audit.api.http import router
    from his.events.audit import BATCHED

    accessed = (
        "his.patients.record.accessed.v1",
        "his.notifications.record.accessed.v1",
        "his.scheduling.record.accessed.v1",
        "his.admissions.record.accessed.v1",
        "his.laboratory.record.accessed.v1",
        "his.inventory.record.accessed.v1",
        "his.billing.record.accessed.v1",
    )
    batched = tuple(BATCHED[t].type for t in accessed if t in BATCHED)
    return ServiceDefinition(
        name="audit",
        subscriptions=(
            *(
                Subscription(f"audit_{t.split('.')[1]}_record_accessed", t, handlers.on_record_accessed, max_deliver=20)
                for t in accessed
            ),
            *(
                Subscription(
                    f"audit_{t.split('.')[1]}_records_accessed", t, handlers.on_records_accessed, max_deliver=20
                )
                for t in batched
            ),
            Subscription(
                "audit_patient_registered", "his.patients.patient.registered.v1", handlers.on_patient_registered
            ),
            Subscription(
                "audit_invitation_redeemed", "his.patients.invitation.redeemed.v1", handlers.on_patient_registered
            ),
        ),
        routes=router,
        description="Append-only, hash-chained log of PHI access and security events.",
    )
