"""Composition root of the patients service."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from his.kernel.clock import Clock, utc_now
from his.kernel.consumer import Subscription
from his.kernel.crypto import FieldCipher, parse_key
from his.kernel.rpc import RpcService
from his.kernel.service import ServiceContext, ServiceDefinition
from his.kernel.web import Routes
from his.patients import handlers
from his.patients.api import grpc
from his.patients.domain import EmergencyLimit, InvitationCodes
from his.patients.settings import PatientsSettings

#: Delays before each new delivery of a lab result while laboratory does not answer (seconds): 12
#: deliveries over about half an hour.
LAB_BACKOFF = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 300.0, 300.0, 300.0, 300.0)

if TYPE_CHECKING:
    from his.clients.billing import BillingTermsLookup
    from his.kernel.db import Database
    from his.patients.ports import PatientsUnits


def http(
    db: Database,
    *,
    clock: Clock | None = None,
    emergency_minutes: float = 60.0,
    emergency_limit: EmergencyLimit | None = None,
    cipher: FieldCipher | None = None,
    payers: BillingTermsLookup | None = None,
    invitation_codes: InvitationCodes | None = None,
    invitation_minutes: float = 3 * 24 * 60,
    timezone: str = "UTC",
) -> Routes:
    """Patients' routes and their use cases over a database, by its clock or ``clock``; "today"
    for a birth date is the hospital's (``timezone``)."""
    from his.patients.store import PatientsStore

    return http_over(
        PatientsStore(db, clock),
        clock=clock or _clock_of(db),
        emergency_minutes=emergency_minutes,
        emergency_limit=emergency_limit,
        cipher=cipher,
        payers=payers,
        invitation_codes=invitation_codes,
        invitation_minutes=invitation_minutes,
        timezone=timezone,
    )


def _clock_of(db: Database) -> Clock:
    """The database's clock (none where the routes are built only for their OpenAPI document)."""
    found: Clock = getattr(db, "clock", utc_now)
    return found


def http_over(
    units: PatientsUnits,
    *,
    clock: Clock = utc_now,
    emergency_minutes: float = 60.0,
    emergency_limit: EmergencyLimit | None = None,
    cipher: FieldCipher | None = None,
    payers: BillingTermsLookup | None = None,
    invitation_codes: InvitationCodes | None = None,
    invitation_minutes: float = 3 * 24 * 60,
    timezone: str = "UTC",
) -> Routes:
    """The same routes over any units of work: the database's, or the in-memory ones of
    ``his.testing.patients`` in unit tests (``clock``: the units' clock)."""
    from his.patients.api.http import router
    from his.patients.chart import Chart

    chart = Chart(
        units,
        clock=clock,
        emergency_minutes=emergency_minutes,
        emergency_limit=emergency_limit,
        cipher=cipher,
        payers=payers,
        invitation_codes=invitation_codes,
        invitation_minutes=invitation_minutes,
        zone=ZoneInfo(timezone),
    )
    return Routes(router, provides=[chart])


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.clients.laboratory import LaboratoryFromEnv
    from his.events.admissions import PatientAdmitted, PatientDischarged
    from his.events.audit import batch_accesses
    from his.events.identity import UserRegistered
    from his.events.laboratory import OLDER_RESULTED, LabOrderResulted
    from his.events.practitioners import PractitionerRegistered
    from his.events.scheduling import AppointmentBooked, AppointmentCancelled, AppointmentRescheduled

    settings = PatientsSettings()

    cipher, codes = None, None
    if settings.records_keys:
        keys = [parse_key(k) for k in settings.records_keys.split(",") if k.strip()]
        # Invitation codes are derived with a key of their own, made from the records key(s).
        cipher, codes = FieldCipher(keys), InvitationCodes(keys)

    def routes(ctx: ServiceContext) -> Routes:
        from his.clients.billing import GrpcBillingTerms

        identity = ctx.settings.workload()
        if identity is None:
            raise SystemExit("patients needs a workload identity (HIS_TLS_*) to check payers with billing")
        payers = GrpcBillingTerms(ctx.settings.grpc_target("billing"), identity)
        return http(
            ctx.db,
            emergency_minutes=settings.emergency_access_minutes,
            emergency_limit=EmergencyLimit(
                settings.emergency_access_limit, timedelta(hours=settings.emergency_access_window_hours)
            ),
            cipher=cipher,
            payers=payers,
            invitation_codes=codes,
            invitation_minutes=settings.invitation_minutes,
            timezone=ctx.settings.timezone,
        )

    def grpc_services(ctx: ServiceContext) -> list[RpcService]:
        return grpc.services(ctx, codes)

    return ServiceDefinition(
        name="patients",
        subscriptions=(
            Subscription.of("patients_user_registered", UserRegistered, handlers.on_user_registered),
            # The values are asked of laboratory (ADR 0032), before the batch's transaction opens:
            # while it is down the event comes back, for about half an hour before it is
            # dead-lettered (and replayable from there).
            Subscription.prepared(
                "patients_lab_order_resulted",
                LabOrderResulted,
                handlers.released_by(LaboratoryFromEnv()),
                handlers.on_lab_order_resulted,
                older=OLDER_RESULTED,  # its ids only: patients holds no key to the sealed content
                batch=16,
                max_deliver=12,
                backoff=LAB_BACKOFF,
            ),
            # Care that follows from appointments and admissions, and whose account a practitioner is.
            Subscription.of(
                "patients_practitioner_registered",
                PractitionerRegistered,
                handlers.on_practitioner_registered,
            ),
            Subscription.of("patients_appointment_booked", AppointmentBooked, handlers.on_appointment),
            Subscription.of("patients_appointment_rescheduled", AppointmentRescheduled, handlers.on_appointment),
            Subscription.of("patients_appointment_cancelled", AppointmentCancelled, handlers.on_appointment),
            Subscription.of("patients_admission_admitted", PatientAdmitted, handlers.on_admission),
            Subscription.of("patients_admission_discharged", PatientDischarged, handlers.on_admission),
        ),
        routes=routes,
        grpc_services=grpc_services,
        combine_reads=batch_accesses,
        description="Patient master data; the only home of personal data.",
    )
