"""Composition root of the audit service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from his.kernel.consumer import Subscription
from his.kernel.service import ServiceContext, ServiceDefinition
from his.kernel.web import Routes

if TYPE_CHECKING:
    from his.audit.ports import AuditUnits, StaffDirectory
    from his.kernel.db import Database


def http(db: Database, directory: StaffDirectory | None = None) -> Routes:
    """The audit trail's route and its use case over a database, naming staff through ``directory``."""
    from his.audit.store import AuditStore

    return http_over(AuditStore(db), directory)


def http_over(units: AuditUnits, directory: StaffDirectory | None = None) -> Routes:
    """The same route over any units of work: the database's, or the in-memory ones of
    ``his.testing.audit`` in unit tests."""
    from his.audit.api.http import router
    from his.audit.handlers import AuditTrail

    return Routes(router, provides=[AuditTrail(units, directory)])


def routes(ctx: ServiceContext) -> Routes:
    from his.audit.directory import HttpStaffDirectory

    return http(ctx.db, HttpStaffDirectory.from_env())


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.audit import handlers
    from his.events.audit import (
        BATCHED,
        AdmissionsRecordAccessed,
        BillingRecordAccessed,
        IdentityRecordAccessed,
        InventoryRecordAccessed,
        LaboratoryRecordAccessed,
        NotificationsRecordAccessed,
        PatientsRecordAccessed,
        RecordAccessed,
        SchedulingRecordAccessed,
    )
    from his.events.patients import InvitationRedeemed, PatientRegistered

    accessed: tuple[type[RecordAccessed], ...] = (
        PatientsRecordAccessed,
        NotificationsRecordAccessed,
        SchedulingRecordAccessed,
        AdmissionsRecordAccessed,
        LaboratoryRecordAccessed,
        InventoryRecordAccessed,
        BillingRecordAccessed,
        IdentityRecordAccessed,
    )
    batched = tuple(BATCHED[e.type] for e in accessed if e.type in BATCHED)
    return ServiceDefinition(
        name="audit",
        subscriptions=(
            *(
                Subscription.of(
                    f"audit_{e.type.split('.')[1]}_record_accessed", e, handlers.on_record_accessed, max_deliver=20
                )
                for e in accessed
            ),
            *(
                Subscription.of(
                    f"audit_{e.type.split('.')[1]}_records_accessed", e, handlers.on_records_accessed, max_deliver=20
                )
                for e in batched
            ),
            Subscription.of("audit_patient_registered", PatientRegistered, handlers.on_patient_registered),
            Subscription.of("audit_invitation_redeemed", InvitationRedeemed, handlers.on_patient_registered),
        ),
        routes=routes,
        description="Append-only, hash-chained log of PHI access and security events.",
    )
