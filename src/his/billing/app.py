"""Composition root of the billing service.

Billing learns everything from events: patients and their coverage, admissions, and the charges
of completed appointments, bed nights, resulted lab orders and chargeable stock; cancellations
void charges. It calls no other service.
"""

from __future__ import annotations

from fastapi import APIRouter

from his.kernel.consumer import Subscription
from his.kernel.service import ServiceContext, ServiceDefinition


def routes(ctx: ServiceContext) -> APIRouter:
    from his.billing.api.http import router

    return router(ctx)


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.billing import handlers as h
    from his.events.audit import batch_accesses

    consumed = (
        ("billing_patient_registered", "his.patients.patient.registered.v1", h.on_patient_registered),
        ("billing_invitation_redeemed", "his.patients.invitation.redeemed.v1", h.on_patient_registered),
        ("billing_coverage_changed", "his.patients.coverage.changed.v1", h.on_coverage_changed),
        ("billing_admitted", "his.admissions.admission.admitted.v1", h.on_admitted),
        ("billing_bed_charge_posted", "his.admissions.bed_charge.posted.v1", h.on_bed_charge_posted),
        # Same stream as the bed nights, after all of them: the admission's invoice is complete.
        ("billing_discharged", "his.admissions.admission.discharged.v1", h.on_discharged),
        ("billing_appointment_completed", "his.scheduling.appointment.completed.v1", h.on_appointment_completed),
        ("billing_appointment_cancelled", "his.scheduling.appointment.cancelled.v1", h.on_appointment_cancelled),
        ("billing_lab_order_resulted", "his.laboratory.order.resulted.v1", h.on_lab_order_resulted),
        ("billing_lab_order_cancelled", "his.laboratory.order.cancelled.v1", h.on_lab_order_cancelled),
        ("billing_stock_consumed", "his.inventory.stock.consumed.v1", h.on_stock_consumed),
    )
    return ServiceDefinition(
        name="billing",
        combine_reads=batch_accesses,
        subscriptions=tuple(Subscription(name, subject, handler) for name, subject, handler in consumed),
        routes=routes,
        description="Price list, payer plans, charges, invoices, claims, payments.",
    )
