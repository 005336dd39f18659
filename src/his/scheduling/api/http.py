"""Internal HTTP API of the scheduling service (reached through the gateway).

Every route re-verifies the caller's token and calls one use case of
``his.scheduling.handlers.Scheduling``, which decides through ``his.scheduling.policy``: a
patient books, reads, moves and cancels only their own appointments (another patient's id
answers 404); reception and ADMIN act for anyone; clinicians read, check in and complete only
for patients in their care or under an emergency grant (else 403, offering emergency access).
A practitioner's day list is staff work: reception and ADMIN read it whole, clinicians the
appointments of the patients in their care or under a grant, patients never. Every decision on
a patient's appointment, allowed or denied, is audited.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from his.kernel.json import JsonLike
from his.kernel.params import CalendarDate, Limit, one_of
from his.kernel.problems import ProblemError
from his.kernel.web import Caller, Moment, errors, provided, public
from his.scheduling import handlers
from his.scheduling.domain import SERVICE_TYPES, Action
from his.scheduling.handlers import Scheduling

router = APIRouter(tags=["scheduling"])
Calendar = Annotated[Scheduling, Depends(provided(Scheduling))]


class NewAppointment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    start: AwareDatetime
    end: AwareDatetime
    service: str = Field(min_length=1, max_length=64)


class NewTimes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: AwareDatetime
    end: AwareDatetime


class JoinWaitlist(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    service: str = Field(min_length=1, max_length=64)


class Booked(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    status: str


class ServiceType(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    code: str
    name: str
    minutes: int


class ServiceTypes(BaseModel):
    items: list[ServiceType]


class Appointment(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    service: str
    start: Moment
    end: Moment
    status: str
    version: int
    created_at: Moment
    updated_at: Moment


class Appointments(BaseModel):
    items: list[Appointment]


class Offer(BaseModel):
    """The slot offered to a waiting patient, until ``expires_at``."""

    model_config = ConfigDict(from_attributes=True)
    start: Moment
    end: Moment
    expires_at: Moment


class WaitlistEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    service: str
    status: str
    offer: Offer | None
    created_at: Moment


class Waitlist(BaseModel):
    items: list[WaitlistEntry]


class Withdrawn(BaseModel):
    id: uuid.UUID
    status: str


class Slot(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    start: Moment
    end: Moment


class Slots(BaseModel):
    date: date
    service: str
    #: The hospital's time zone, in which ``date`` is a day.
    timezone: str
    items: list[Slot]


class FreeSlot(BaseModel):
    """A free slot of one practitioner."""

    practitioner_id: uuid.UUID
    practitioner_name: str
    specialty: str
    start: Moment
    end: Moment

    @classmethod
    def of(cls, f: handlers.FreeSlot) -> FreeSlot:
        p = f.practitioner
        return cls(
            practitioner_id=p.practitioner_id,
            practitioner_name=p.full_name,
            specialty=p.specialty,
            start=f.during.start,
            end=f.during.end,
        )


class FirstAvailable(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    service: str
    specialty: str | None
    #: The first day searched (the one given, or today), in the hospital's time zone.
    first_day: date = Field(alias="from")
    days: int
    #: The hospital's time zone, in which the days are searched.
    timezone: str
    items: list[FreeSlot]


#: The most days one search for the first free slots spans, and the most slots it answers.
MAX_DAYS, MAX_FIRST = 31, 50


@router.get("/appointments/services", openapi_extra=public("/api/appointments/services"))
async def services(who: Caller) -> ServiceTypes:
    """Service types and how long each lasts (any signed-in user)."""
    return ServiceTypes(items=[ServiceType.model_validate(s) for s in SERVICE_TYPES.values()])


@router.get(
    "/appointments/first-available",
    responses=errors((422, "an unknown service or specialty (`valid` lists the known ones), or invalid values")),
    openapi_extra=public("/api/appointments/first-available"),
)
async def first_available(
    who: Caller,
    calendar: Calendar,
    *,
    service: Annotated[str, Query(max_length=64, description="a service type (`GET /api/appointments/services`)")] = (
        "consultation"
    ),
    specialty: Annotated[
        str | None,
        Query(max_length=64, description="only practitioners of this specialty (`GET /api/practitioners/specialties`)"),
    ] = None,
    first_day: Annotated[
        CalendarDate | None,
        Query(alias="from", description="the first day to search, in the hospital's time zone (default: today)"),
    ] = None,
    days: Annotated[int, Query(ge=1, le=MAX_DAYS, description=f"how many days to search, at most {MAX_DAYS}")] = 14,
    limit: Annotated[int, Query(ge=1, le=MAX_FIRST, description=f"how many slots to return, at most {MAX_FIRST}")] = 10,
) -> FirstAvailable:
    """The first free slots of a service type across practitioners (any signed-in user): every
    practitioner's, or those of one `specialty`, free as `GET /api/practitioners/{id}/slots`
    tells them (working time minus appointments, none already begun).

    Days are searched one by one in the hospital's time zone from `from` (today, by the
    hospital's clock, unless given) for at most `days` days (14 unless given, at most 31); the
    answer holds at most `limit` slots (10 unless given, at most 50), the earliest first, slots
    that start together in the order of the practitioners' names. Each item names its
    practitioner (`practitioner_id`, `practitioner_name`, `specialty`) and its `start` and `end`.
    An unknown `service` or `specialty` is a 422 whose `valid` lists the known ones."""
    one_of("service", service, SERVICE_TYPES)
    begin, found = await calendar.first_available(service, specialty, first_day, days, limit)
    return FirstAvailable(
        service=service,
        specialty=specialty,
        first_day=begin,
        days=days,
        timezone=calendar.zone.key,
        items=[FreeSlot.of(f) for f in found],
    )


@router.post(
    "/appointments", status_code=201, responses=errors(403, 404, 409), openapi_extra=public("/api/appointments")
)
async def book(body: NewAppointment, who: Caller, calendar: Calendar) -> Booked:
    """Book an appointment (a patient for themself, RECEPTIONIST, ADMIN). 409 if the practitioner
    or the patient is already booked then: reception learns which appointment it collides with,
    a patient only that the time is taken (or which of their own appointments it is)."""
    cmd = handlers.Booking(body.patient_id, body.practitioner_id, body.service, body.start, body.end)
    return Booked.model_validate(await calendar.book(who, cmd))


@router.get(
    "/appointments/{appointment_id}", responses=errors(403, 404), openapi_extra=public("/api/appointments/{id}")
)
async def one(appointment_id: uuid.UUID, who: Caller, calendar: Calendar) -> Appointment:
    """One appointment: its patient, reception, or clinicians in the patient's care."""
    return Appointment.model_validate(await calendar.appointment(who, appointment_id))


#: What ``GET /appointments`` lists by: one of these sets of query parameters, exactly.
LISTS = "patient_id alone, or practitioner_id or specialty together with date"


@router.get(
    "/appointments",
    summary="Of Patient, Practitioner's or Clinic's Day",
    responses=errors(
        403, 404, (422, "not patient_id alone, nor practitioner_id or specialty with date; or invalid values")
    ),
    openapi_extra=public("/api/appointments"),
)
async def of_patient(
    who: Caller,
    calendar: Calendar,
    *,
    patient_id: Annotated[uuid.UUID | None, Query(description="a patient's appointments")] = None,
    practitioner_id: Annotated[
        uuid.UUID | None, Query(description="a practitioner's day list, on `date` (required with it)")
    ] = None,
    specialty: Annotated[
        str | None,
        Query(max_length=64, description="a clinic's day list: every practitioner of this specialty, on `date`"),
    ] = None,
    day: Annotated[
        CalendarDate | None, Query(alias="date", description="the day of the day list, in the hospital's time zone")
    ] = None,
    limit: Limit = 50,
) -> Appointments:
    """Appointments, of one patient, one practitioner's day or one clinic's day: give
    `patient_id` alone, or `practitioner_id` or `specialty` together with `date` (any other
    combination is a 422).

    A patient's appointments, latest first: the patient, reception, or clinicians in the
    patient's care (others get a 403 that points to emergency access).

    A practitioner's day list: their appointments, in every state, that start on `date` in the
    hospital's time zone (from its midnight to the next; a day the clocks change is 23 or 25
    hours long), the earliest first, at most `limit` of them (50 unless given): RECEPTIONIST and
    ADMIN see all of them; a DOCTOR or NURSE those of patients in their care or under an
    emergency grant (the others are left out); other roles and patients get a 403. Every
    patient on it is recorded as read (and each left out as refused).

    A clinic's day list: the same, for every practitioner of `specialty` (a code of
    `GET /api/practitioners/specialties`; another is a 422 naming them), the earliest first."""
    if patient_id is not None and practitioner_id is None and specialty is None and day is None:
        found = await calendar.of_patient(who, patient_id, limit)
    elif patient_id is None and practitioner_id is not None and specialty is None and day is not None:
        found = await calendar.day_list(who, practitioner_id, day, limit)
    elif patient_id is None and practitioner_id is None and specialty is not None and day is not None:
        found = await calendar.clinic_day(who, specialty, day, limit)
    else:
        raise unlisted(patient_id, practitioner_id, day, specialty)
    return Appointments(items=[Appointment.model_validate(a) for a in found])


def unlisted(
    patient_id: uuid.UUID | None, practitioner_id: uuid.UUID | None, day: date | None, specialty: str | None = None
) -> ProblemError:
    """The 422 for a combination of ``GET /appointments``'s parameters it does not list by: what
    it lists by (``expected``), and each parameter missing or out of place (``errors``)."""
    given = [
        n
        for n, v in (
            ("patient_id", patient_id),
            ("practitioner_id", practitioner_id),
            ("specialty", specialty),
            ("date", day),
        )
        if v is not None
    ]
    if patient_id is not None:
        wrong = [(name, "not with patient_id") for name in given if name != "patient_id"]
    elif practitioner_id is not None and specialty is not None:
        wrong = [("specialty", "not with practitioner_id")]
    elif practitioner_id is not None:
        wrong = [("date", "required with practitioner_id")]
    elif specialty is not None:
        wrong = [("date", "required with specialty")]
    elif day is not None:
        wrong = [("practitioner_id", "required with date, or specialty")]
    else:
        wrong = [("patient_id", "required, unless practitioner_id or specialty and date are given")]
    errs: list[JsonLike] = [{"loc": [name], "msg": msg} for name, msg in wrong]
    return ProblemError(
        422,
        f"give {LISTS} (given: {', '.join(given) or 'none of them'})",
        errors=errs,
        expected=[["patient_id"], ["practitioner_id", "date"], ["specialty", "date"]],
    )


@router.post(
    "/appointments/{appointment_id}/reschedule",
    responses=errors(403, 404, 409),
    openapi_extra=public("/api/appointments/{id}/reschedule"),
)
async def move(appointment_id: uuid.UUID, body: NewTimes, who: Caller, calendar: Calendar) -> Appointment:
    """Move a booked appointment to new times (its patient, RECEPTIONIST, ADMIN); 409 on a collision."""
    return Appointment.model_validate(await calendar.reschedule(who, appointment_id, body.start, body.end))


@router.post(
    "/appointments/{appointment_id}/{action}",
    responses=errors(403, 404, 409),
    openapi_extra=public("/api/appointments/{id}/{action}"),
)
async def step(appointment_id: uuid.UUID, action: Action, who: Caller, calendar: Calendar) -> Appointment:
    """Check in (RECEPTIONIST, ADMIN, a NURSE caring for the patient), complete (ADMIN, a DOCTOR
    or NURSE caring for the patient), cancel (the patient, RECEPTIONIST, ADMIN) or mark a
    no-show (RECEPTIONIST, ADMIN). An invalid transition answers 409. Cancelling frees the
    time and offers it to the waitlist."""
    return Appointment.model_validate(await calendar.act(who, appointment_id, action))


@router.post("/waitlist", status_code=201, responses=errors(403, 404, 409), openapi_extra=public("/api/waitlist"))
async def join(body: JoinWaitlist, who: Caller, calendar: Calendar) -> WaitlistEntry:
    """Wait for a practitioner (a patient for themself, RECEPTIONIST, ADMIN): when one of their
    appointments is cancelled, the first patient waiting is offered the freed slot."""
    return WaitlistEntry.model_validate(await calendar.join(who, body.patient_id, body.practitioner_id, body.service))


@router.get("/waitlist", responses=errors(403, 404), openapi_extra=public("/api/waitlist"))
async def waiting(patient_id: uuid.UUID, who: Caller, calendar: Calendar) -> Waitlist:
    """A patient's waitlist entries and their offers (the patient, reception, ADMIN)."""
    return Waitlist(items=[WaitlistEntry.model_validate(e) for e in await calendar.waiting(who, patient_id)])


@router.post(
    "/waitlist/{entry_id}/accept",
    status_code=201,
    responses=errors(403, 404, 409),
    openapi_extra=public("/api/waitlist/{id}/accept"),
)
async def accept(entry_id: uuid.UUID, who: Caller, calendar: Calendar) -> Booked:
    """Take up the slot offered to this entry (the patient, RECEPTIONIST, ADMIN): books it (409 if the
    offer expired or the time was taken)."""
    return Booked.model_validate(await calendar.accept(who, entry_id))


@router.post(
    "/waitlist/{entry_id}/withdraw",
    responses=errors(403, 404, 409),
    openapi_extra=public("/api/waitlist/{id}/withdraw"),
)
async def withdraw(entry_id: uuid.UUID, who: Caller, calendar: Calendar) -> Withdrawn:
    """Leave the waitlist (the patient, reception, ADMIN)."""
    await calendar.withdraw(who, entry_id)
    return Withdrawn(id=entry_id, status="withdrawn")


@router.get("/slots/{practitioner_id}", responses=errors(404), openapi_extra=public("/api/practitioners/{id}/slots"))
async def free(
    practitioner_id: uuid.UUID,
    who: Caller,
    calendar: Calendar,
    day: Annotated[CalendarDate, Query(alias="date")],
    service: Annotated[str, Query(max_length=64)] = "consultation",
) -> Slots:
    """Free slots of one practitioner on a day (hospital time zone) for a service type (any signed-in)."""
    one_of("service", service, SERVICE_TYPES)
    zone = calendar.zone
    free = await calendar.slots(practitioner_id, handlers.local_day(day, zone), service)
    return Slots(date=day, service=service, timezone=zone.key, items=[Slot.model_validate(s) for s in free])
