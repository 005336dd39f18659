"""Composition root of the notifications service."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from his.kernel.consumer import Subscription
from his.kernel.service import ServiceContext, ServiceDefinition
from his.notifications import handlers


def background(ctx: ServiceContext) -> dict[str, Coroutine[Any, Any, None]]:
    """The dispatcher, with the real contact directory (patients over gRPC) and channels."""
    from his.notifications.channels import Channel, MaildirChannel, SmtpChannel, SpoolSmsChannel
    from his.notifications.contacts import GrpcContacts
    from his.notifications.dispatcher import Dispatcher
    from his.notifications.settings import NotificationsSettings
    from his.notifications.templates import Renderer

    s, data = NotificationsSettings(), ctx.settings.data_path
    identity = ctx.settings.workload()
    if identity is None:
        raise SystemExit("notifications needs a workload identity (HIS_TLS_*) to ask patients for contact details")
    email: Channel = (
        SmtpChannel(
            s.smtp_host,
            s.smtp_port,
            sender=s.mail_from,
            user=s.smtp_user,
            password=s.smtp_password,
            starttls=s.smtp_starttls,
        )
        if s.smtp_host
        else MaildirChannel(data / "mail" / "maildir", sender=s.mail_from)
    )
    contacts = GrpcContacts(ctx.settings.grpc_target("patients"), identity, ttl=s.contact_cache_seconds)
    channels: dict[str, Channel] = {"email": email, "sms": SpoolSmsChannel(data / "mail" / "sms-outbox.jsonl")}
    dispatcher = Dispatcher(ctx.db, contacts, channels, Renderer(ctx.settings.timezone))
    return {"dispatcher": dispatcher.run()}


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.events.audit import batch_accesses
    from his.notifications.api.http import router

    def sub(name: str, event_type: str, handler: Any) -> Subscription:
        return Subscription(f"notifications_{name}", event_type, handler)

    return ServiceDefinition(
        name="notifications",
        combine_reads=batch_accesses,
        subscriptions=(
            sub("patient_registered", "his.patients.patient.registered.v1", handlers.on_patient_registered),
            sub(
                "emergency_access_granted",
                "his.patients.emergency_access.granted.v1",
                handlers.on_emergency_access_granted,
            ),
            sub("invitation_issued", "his.patients.invitation.issued.v1", handlers.on_invitation_issued),
            sub("invitation_redeemed", "his.patients.invitation.redeemed.v1", handlers.on_invitation_redeemed),
            sub("appointment_booked", "his.scheduling.appointment.booked.v1", handlers.on_appointment_booked),
            sub("appointment_cancelled", "his.scheduling.appointment.cancelled.v1", handlers.on_appointment_cancelled),
            sub(
                "appointment_rescheduled",
                "his.scheduling.appointment.rescheduled.v1",
                handlers.on_appointment_rescheduled,
            ),
            sub("waitlist_offered", "his.scheduling.waitlist.offered.v1", handlers.on_waitlist_offered),
            sub("lab_order_resulted", "his.laboratory.order.resulted.v1", handlers.on_lab_order_resulted),
        ),
        routes=router,
        background=background,
        description="Templates, channels and the delivery history of every message.",
    )
