"""Care that follows from appointments and admissions, on the real patients database.

A practitioner with an appointment is in the patient's care from the booking until a day after
the appointment's end; a cancellation ends it; a move carries it to the new end. An admitting
practitioner is in the patient's care until a day after the discharge. The events come from
three services on separate consumers, so every order of arrival must give the same answer.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from his.events.admissions import PatientAdmitted, PatientDischarged
from his.events.practitioners import PractitionerRegistered
from his.events.scheduling import AppointmentBooked, AppointmentCancelled, AppointmentRescheduled
from his.kernel import migrations
from his.kernel.consumer import Handler
from his.kernel.db import Database
from his.kernel.events import Envelope, Event
from his.patients import handlers
from his.patients.domain import CareRelationship, NewPatient, Sex
from his.patients.store import PatientsStore

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
async def patients_dsn(admin_dsn: str) -> str:
    dsn = await migrations.provision(admin_dsn, "patients", "pw-patients-care-events")
    await migrations.upgrade(admin_dsn, "patients")
    return dsn


@pytest.fixture
async def db(patients_dsn: str) -> AsyncIterator[Database]:
    database = Database(patients_dsn, schema="patients", min_size=1, max_size=4)
    await database.open()
    yield database
    await database.close()


async def a_patient(db: Database) -> uuid.UUID:
    async with PatientsStore(db).uow() as unit:
        added = await handlers.register(unit, NewPatient("Elif", "Kaya", date(1975, 6, 1), Sex.FEMALE))
    return added.id


def envelope(ev: Event, at: datetime, version: int = 1) -> Envelope:
    return replace(Envelope.wrap(ev, aggregate_id=uuid.uuid4(), aggregate_version=version), time=at)


async def deliver(db: Database, ev: Event, at: datetime, version: int = 1) -> None:
    handler: Handler = {  # type: ignore[assignment]  # each handler takes the event it is keyed by
        PractitionerRegistered: handlers.on_practitioner_registered,
        AppointmentBooked: handlers.on_appointment,
        AppointmentRescheduled: handlers.on_appointment,
        AppointmentCancelled: handlers.on_appointment,
        PatientAdmitted: handlers.on_admission,
        PatientDischarged: handlers.on_admission,
    }[type(ev)]
    async with db.uow() as uow:
        await handler(uow, envelope(ev, at, version), ev)


async def in_care(db: Database, patient: uuid.UUID, user: uuid.UUID, at: datetime) -> bool:
    async with PatientsStore(db).uow() as unit:
        care, _ = await unit.care.basis(patient, user, at)
    return care


async def care_team(db: Database, patient: uuid.UUID, at: datetime) -> list[CareRelationship]:
    async with PatientsStore(db).uow() as unit:
        return await unit.care.team(patient, at)


async def test_an_appointment_puts_its_practitioner_in_care_in_any_order_of_events(db: Database) -> None:
    start, end = T0 + 3 * DAY, T0 + 3 * DAY + timedelta(minutes=20)
    moved_end = T0 + 10 * DAY + timedelta(minutes=20)
    for order in itertools.permutations(("registered", "booked", "moved")):
        patient, practitioner, account = await a_patient(db), uuid.uuid4(), uuid.uuid4()
        appointment = uuid.uuid4()
        fields = {
            "appointment_id": appointment,
            "patient_id": patient,
            "practitioner_id": practitioner,
            "service": "consultation",
        }
        events = {
            "registered": (
                PractitionerRegistered(practitioner_id=practitioner, specialty="cardiology", account_id=account),
                T0,
                1,
            ),
            "booked": (AppointmentBooked(**fields, start=start, end=end), T0, 1),
            "moved": (
                AppointmentRescheduled(
                    **fields,
                    start=moved_end - timedelta(minutes=20),
                    end=moved_end,
                    previous_start=start,
                    previous_end=end,
                ),
                T0 + DAY,
                2,
            ),
        }
        for name in order:
            await deliver(db, *events[name])
        assert not await in_care(db, patient, account, T0 - timedelta(seconds=1)), order
        assert await in_care(db, patient, account, T0 + timedelta(seconds=1)), order
        # The move (the later version) sets the end, whichever came first.
        assert await in_care(db, patient, account, end + 2 * DAY), order
        assert await in_care(db, patient, account, moved_end + DAY - timedelta(seconds=1)), order
        assert not await in_care(db, patient, account, moved_end + DAY), order
        assert not await in_care(db, patient, uuid.uuid4(), T0 + timedelta(seconds=1)), "only that practitioner"
        team = await care_team(db, patient, T0 + timedelta(hours=1))
        assert [(m.id, m.user_id, m.source) for m in team] == [(appointment, account, "appointment")]


async def test_a_cancellation_ends_the_care_even_when_it_arrives_first(db: Database) -> None:
    start, end = T0 + 3 * DAY, T0 + 3 * DAY + timedelta(minutes=20)
    cancelled_at = T0 + DAY
    for cancel_first in (True, False):
        patient, practitioner, account = await a_patient(db), uuid.uuid4(), uuid.uuid4()
        await deliver(db, PractitionerRegistered(practitioner_id=practitioner, specialty="x", account_id=account), T0)
        fields = {
            "appointment_id": uuid.uuid4(),
            "patient_id": patient,
            "practitioner_id": practitioner,
            "service": "consultation",
            "start": start,
            "end": end,
        }
        booked = (AppointmentBooked(**fields), T0, 1)
        cancelled = (AppointmentCancelled(**fields), cancelled_at, 2)
        for ev in (cancelled, booked) if cancel_first else (booked, cancelled):
            await deliver(db, *ev)
        if not cancel_first:  # booked first: in care until the cancellation
            assert await in_care(db, patient, account, cancelled_at - timedelta(seconds=1))
        assert not await in_care(db, patient, account, cancelled_at), cancel_first
        assert not await in_care(db, patient, account, start), cancel_first


async def test_an_admission_puts_its_practitioner_in_care_until_a_day_after_discharge(db: Database) -> None:
    admitted_at, discharged_at = T0, T0 + 4 * DAY
    for discharge_first in (False, True):
        patient, practitioner, account = await a_patient(db), uuid.uuid4(), uuid.uuid4()
        await deliver(db, PractitionerRegistered(practitioner_id=practitioner, specialty="x", account_id=account), T0)
        ids = {"admission_id": uuid.uuid4(), "patient_id": patient}
        ward, bed = uuid.uuid4(), uuid.uuid4()
        admitted = PatientAdmitted(
            **ids, practitioner_id=practitioner, ward_id=ward, bed_id=bed, admitted_at=admitted_at
        )
        discharged = PatientDischarged(
            **ids, ward_id=ward, bed_id=bed, admitted_at=admitted_at, discharged_at=discharged_at, nights=4
        )
        if not discharge_first:
            await deliver(db, admitted, admitted_at)
            assert await in_care(db, patient, account, T0 + 30 * DAY), "admitted: in care until the discharge"
        await deliver(db, discharged, discharged_at)
        if discharge_first:
            assert not await in_care(db, patient, account, T0 + DAY), "no practitioner known yet"
            await deliver(db, admitted, admitted_at)
        assert await in_care(db, patient, account, discharged_at + DAY - timedelta(seconds=1)), discharge_first
        assert not await in_care(db, patient, account, discharged_at + DAY), discharge_first


async def test_a_practitioner_without_an_account_puts_no_one_in_care(db: Database) -> None:
    patient, practitioner = await a_patient(db), uuid.uuid4()
    await deliver(db, PractitionerRegistered(practitioner_id=practitioner, specialty="x"), T0)
    await deliver(
        db,
        AppointmentBooked(
            appointment_id=uuid.uuid4(),
            patient_id=patient,
            practitioner_id=practitioner,
            service="consultation",
            start=T0 + DAY,
            end=T0 + DAY + timedelta(minutes=20),
        ),
        T0,
    )
    assert await care_team(db, patient, T0 + timedelta(hours=1)) == []
