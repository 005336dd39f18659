"""Composition root of the notifications service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from his.kernel.consumer import Subscription
from his.kernel.service import Background, ServiceContext, ServiceDefinition
from his.kernel.web import Routes
from his.notifications import handlers

if TYPE_CHECKING:
    from his.kernel.db import Database
    from his.notifications.ports import NotificationsUnits


def http(db: Database) -> Routes:
    """The notifications routes and their use cases over a database."""
    from his.notifications.store import NotificationsStore

    return http_over(NotificationsStore(db))


def http_over(units: NotificationsUnits) -> Routes:
    """The same routes over any units of work: the database's, or the in-memory ones of
    ``his.testing.notifications`` in unit tests."""
    from his.notifications.api.http import router

    return Routes(router, provides=[handlers.Notifications(units)])


def routes(ctx: ServiceContext) -> Routes:
    return http(ctx.db)


def background(ctx: ServiceContext) -> dict[str, Background]:
    """The dispatcher, with the real contact directory (patients over gRPC) and channels."""
    from his.kernel.mail import Channel, SpoolSmsChannel, email_channel
    from his.notifications.contacts import GrpcContacts
    from his.notifications.dispatcher import Dispatcher
    from his.notifications.settings import NotificationsSettings
    from his.notifications.store import NotificationsStore
    from his.notifications.templates import Renderer

    s, data = NotificationsSettings(), ctx.settings.data_path
    identity = ctx.settings.workload()
    if identity is None:
        raise SystemExit("notifications needs a workload identity (HIS_TLS_*) to ask patients for contact details")
    email = email_channel(s, data)
    contacts = GrpcContacts(ctx.settings.grpc_target("patients"), identity, ttl=s.contact_cache_seconds)
    channels: dict[str, Channel] = {"email": email, "sms": SpoolSmsChannel(data / "mail" / "sms-outbox.jsonl")}
    dispatcher = Dispatcher(NotificationsStore(ctx.db), contacts, channels, Renderer(ctx.settings.timezone))
    return {"dispatcher": dispatcher.run()}


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.events.audit import batch_accesses
    from his.events.laboratory import OLDER_RESULTED, LabOrderResulted, lab_seal, opening
    from his.events.patients import (
        EmergencyAccessGranted,
        EmergencyAccessOverLimit,
        InvitationIssued,
        InvitationRedeemed,
        PatientRegistered,
    )
    from his.events.scheduling import AppointmentBooked, AppointmentCancelled, AppointmentRescheduled, WaitlistOffered

    return ServiceDefinition(
        name="notifications",
        requires=lambda: lab_seal().require("notifications"),  # results' content is sealed (ADR 0032)
        combine_reads=batch_accesses,
        subscriptions=(
            Subscription.of("notifications_patient_registered", PatientRegistered, handlers.on_patient_registered),
            Subscription.of(
                "notifications_emergency_access_granted", EmergencyAccessGranted, handlers.on_emergency_access_granted
            ),
            Subscription.of(
                "notifications_break_glass_over_limit",
                EmergencyAccessOverLimit,
                handlers.on_emergency_access_over_limit,
            ),
            Subscription.of("notifications_invitation_issued", InvitationIssued, handlers.on_invitation_issued),
            Subscription.of("notifications_invitation_redeemed", InvitationRedeemed, handlers.on_invitation_redeemed),
            Subscription.of("notifications_appointment_booked", AppointmentBooked, handlers.on_appointment_booked),
            Subscription.of(
                "notifications_appointment_cancelled", AppointmentCancelled, handlers.on_appointment_cancelled
            ),
            Subscription.of(
                "notifications_appointment_rescheduled", AppointmentRescheduled, handlers.on_appointment_rescheduled
            ),
            Subscription.of("notifications_waitlist_offered", WaitlistOffered, handlers.on_waitlist_offered),
            Subscription.of(
                "notifications_lab_order_resulted",
                LabOrderResulted,
                opening(lab_seal(), handlers.on_lab_order_resulted),  # codes and flags travel sealed
                older=OLDER_RESULTED,
            ),
        ),
        routes=routes,
        background=background,
        description="Templates, channels and the delivery history of every message.",
    )
