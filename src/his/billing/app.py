"""Composition root of the billing service.

Billing learns everything from events: patients and their coverage, admissions, and the charges
of completed appointments, bed nights, resulted lab orders and chargeable stock; cancellations
void charges. It calls no other service; it tells patients and admissions over gRPC which payers
and currencies it can bill (``his.billing.v1.BillingTerms``). Patients pay online through a
payment provider (the embedded TEST provider by default, ``his.billing.testmode``) whose signed
confirmation records the payment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import APIRouter

from his.kernel.consumer import Subscription
from his.kernel.db import Database
from his.kernel.service import Background, ServiceContext, ServiceDefinition
from his.kernel.web import Routes

if TYPE_CHECKING:
    from his.billing.payments import PaymentProvider
    from his.billing.ports import BillingUnits
    from his.billing.testmode import TestModeProvider
    from his.kernel.rpc import RpcService

log = logging.getLogger("his.billing")


def payment_provider(ctx: ServiceContext) -> TestModeProvider | None:
    """The embedded TEST payment provider, when `his up` gave billing its webhook secret and URL."""
    from his.billing.settings import BillingSettings
    from his.billing.testmode import TestModeProvider, http_delivery

    s = BillingSettings()
    if not s.payment_webhook_secret or not s.payment_webhook_url:
        log.warning("no payment provider: HIS_PAYMENT_WEBHOOK_SECRET and HIS_PAYMENT_WEBHOOK_URL are not both set")
        return None
    return TestModeProvider(ctx.db, s.payment_webhook_secret.encode(), http_delivery(s.payment_webhook_url))


def http(
    db: Database,
    provider: PaymentProvider | None = None,
    *,
    clock: Callable[[], float] = time.time,
    timezone: str | None = None,
) -> Routes:
    """Billing's routes and their use cases; with a payment provider, its checkout page too (the
    embedded TEST provider's). ``clock`` judges the age of the provider's signatures; today is
    the hospital's (``timezone``, the process settings' when not given)."""
    from his.billing.store import BillingStore

    return http_over(BillingStore(db), provider, clock=clock, timezone=timezone)


def http_over(
    units: BillingUnits,
    provider: PaymentProvider | None = None,
    *,
    clock: Callable[[], float] = time.time,
    timezone: str | None = None,
) -> Routes:
    """The same routes over any units of work: the database's, or the in-memory ones of
    ``his.testing.billing`` in unit tests."""
    from zoneinfo import ZoneInfo

    from his.billing.accounts import Accounts
    from his.billing.api.http import router
    from his.billing.testmode import TestModeProvider, checkout_router

    api = APIRouter()
    api.include_router(router)
    if isinstance(provider, TestModeProvider):
        api.include_router(checkout_router(provider))
    return Routes(api, provides=[Accounts(units, provider, clock=clock, zone=ZoneInfo(timezone) if timezone else None)])


def routes(ctx: ServiceContext) -> Routes:
    return http(ctx.db, payment_provider(ctx), timezone=ctx.settings.timezone)


def background(ctx: ServiceContext) -> dict[str, Background]:
    """The TEST provider's retries of confirmations billing did not take yet."""
    provider = payment_provider(ctx)
    return {"test-payment-provider": provider.run()} if provider is not None else {}


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.billing import handlers as h
    from his.clients import replica
    from his.events.admissions import BedChargePosted, PatientAdmitted, PatientDischarged, WardUpdated
    from his.events.audit import batch_accesses
    from his.events.inventory import StockConsumed
    from his.events.laboratory import OLDER_RESULTED, LabOrderCancelled, LabOrderResulted, lab_seal, opening
    from his.events.patients import CoverageChanged
    from his.events.scheduling import AppointmentCancelled, AppointmentCompleted

    subscriptions = (
        *replica.subscriptions("billing"),  # the patient directory\'s replica (his.clients.replica)
        Subscription.of("billing_coverage_changed", CoverageChanged, h.on_coverage_changed),
        Subscription.of("billing_admitted", PatientAdmitted, h.on_admitted),
        Subscription.of("billing_bed_charge_posted", BedChargePosted, h.on_bed_charge_posted),
        Subscription.of("billing_ward_updated", WardUpdated, h.on_ward_updated),
        # Same stream as the bed nights, after all of them: the admission's invoice is complete.
        Subscription.of("billing_discharged", PatientDischarged, h.on_discharged),
        Subscription.of("billing_appointment_completed", AppointmentCompleted, h.on_appointment_completed),
        Subscription.of("billing_appointment_cancelled", AppointmentCancelled, h.on_appointment_cancelled),
        Subscription.of(  # the charges travel sealed (ADR 0032)
            "billing_lab_order_resulted",
            LabOrderResulted,
            opening(lab_seal(), h.on_lab_order_resulted),
            older=OLDER_RESULTED,
        ),
        Subscription.of("billing_lab_order_cancelled", LabOrderCancelled, h.on_lab_order_cancelled),
        Subscription.of("billing_stock_consumed", StockConsumed, h.on_stock_consumed),
    )
    return ServiceDefinition(
        name="billing",
        requires=lambda: lab_seal().require("billing"),  # results' content is sealed (ADR 0032)
        combine_reads=batch_accesses,
        subscriptions=subscriptions,
        routes=routes,
        background=background,
        grpc_services=grpc_services,
        description="Price list, payer plans, charges, invoices, claims, payments.",
    )


def grpc_services(ctx: ServiceContext) -> list[RpcService]:
    from his.billing.api import grpc

    return grpc.services(ctx)
