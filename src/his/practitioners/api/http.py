"""Internal HTTP API of the practitioners service (reached through the gateway).

Every route re-verifies the caller's token and calls one use case of
``his.practitioners.handlers.Practitioners``, which decides through ``his.practitioners.policy``.
The directory (profiles, specialties) is open to any signed-in user; shifts are given by ADMIN
or the practitioner themself (the user account linked to the profile); leave is requested by
the practitioner or ADMIN and decided by ADMIN.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from his.kernel.intervals import Interval
from his.kernel.params import CalendarDateTime, Limit, one_of
from his.kernel.web import Caller, Moment, errors, provided, public
from his.practitioners import handlers
from his.practitioners.domain import SPECIALTIES, LeaveAction, LeaveStatus
from his.practitioners.handlers import Practitioners

router = APIRouter(prefix="/practitioners", tags=["practitioners"])
Staff = Annotated[Practitioners, Depends(provided(Practitioners))]
From = Annotated[CalendarDateTime, Query(alias="from")]
To = Annotated[CalendarDateTime, Query(alias="to")]


class NewPractitioner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    full_name: str = Field(min_length=1, max_length=200)
    specialty: str = Field(min_length=1, max_length=64)
    user_id: uuid.UUID | None = None


class TimeSpan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: AwareDatetime
    end: AwareDatetime


class Created(BaseModel):
    id: uuid.UUID


class LeaveCreated(BaseModel):
    id: uuid.UUID
    status: LeaveStatus


class Specialty(BaseModel):
    code: str
    name: str


class Specialties(BaseModel):
    items: list[Specialty]


class Profile(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    full_name: str
    specialty: str
    user_id: uuid.UUID | None
    created_at: Moment


class Directory(BaseModel):
    items: list[Profile]


class Span(BaseModel):
    start: Moment
    end: Moment

    @classmethod
    def of(cls, i: Interval) -> Span:
        return cls(start=i.start, end=i.end)


class Shift(Span):
    id: uuid.UUID


class Shifts(BaseModel):
    items: list[Shift]


class Leave(Span):
    id: uuid.UUID
    status: LeaveStatus
    created_at: Moment
    decided_at: Moment | None


class Leaves(BaseModel):
    items: list[Leave]


class LeaveDecided(BaseModel):
    id: uuid.UUID
    status: LeaveStatus


class Availability(BaseModel):
    items: list[Span]


@router.get("/specialties", openapi_extra=public("/api/practitioners/specialties"))
async def specialties(who: Caller) -> Specialties:
    """The specialties a practitioner can have (code and name)."""
    return Specialties(items=[Specialty(code=c, name=n) for c, n in SPECIALTIES.items()])


@router.post("", status_code=201, responses=errors(403, 409), openapi_extra=public("/api/practitioners"))
async def create(body: NewPractitioner, who: Caller, staff: Staff) -> Created:
    """Create a practitioner profile (ADMIN); publishes ``his.practitioners.practitioner.registered.v1``."""
    return Created(id=await staff.register(who, handlers.NewPractitioner(body.full_name, body.specialty, body.user_id)))


@router.get("", openapi_extra=public("/api/practitioners"))
async def directory(
    who: Caller, staff: Staff, specialty: Annotated[str | None, Query(max_length=64)] = None, limit: Limit = 50
) -> Directory:
    """The practitioner directory, optionally by specialty (any signed-in user)."""
    if specialty is not None:
        one_of("specialty", specialty, SPECIALTIES)
    return Directory(items=[Profile.model_validate(p) for p in await staff.directory(specialty, limit)])


@router.get("/{practitioner_id}", responses=errors(404), openapi_extra=public("/api/practitioners/{id}"))
async def profile(practitioner_id: uuid.UUID, who: Caller, staff: Staff) -> Profile:
    """One practitioner's profile (any signed-in user)."""
    return Profile.model_validate(await staff.profile(practitioner_id))


@router.post(
    "/{practitioner_id}/shifts",
    status_code=201,
    responses=errors(403, 404, 409),
    openapi_extra=public("/api/practitioners/{id}/shifts"),
)
async def add_shift(practitioner_id: uuid.UUID, body: TimeSpan, who: Caller, staff: Staff) -> Created:
    """Give a shift (ADMIN, or the practitioner themself). Shifts of one person never overlap
    (409 names the shift it collides with); overnight shifts are fine, up to 24 hours."""
    return Created(id=await staff.add_shift(who, practitioner_id, body.start, body.end))


@router.get(
    "/{practitioner_id}/shifts", responses=errors(403, 404), openapi_extra=public("/api/practitioners/{id}/shifts")
)
async def list_shifts(practitioner_id: uuid.UUID, who: Caller, staff: Staff, start: From, end: To) -> Shifts:
    """Shifts overlapping a window of at most 31 days (staff, or the practitioner)."""
    found = await staff.shifts(who, practitioner_id, start, end)
    return Shifts(items=[Shift(id=s.id, start=s.during.start, end=s.during.end) for s in found])


@router.post(
    "/{practitioner_id}/leave-requests",
    status_code=201,
    responses=errors(403, 404),
    openapi_extra=public("/api/practitioners/{id}/leave-requests"),
)
async def request_leave(practitioner_id: uuid.UUID, body: TimeSpan, who: Caller, staff: Staff) -> LeaveCreated:
    """Request leave (the practitioner, or ADMIN on their behalf); it starts as ``requested``."""
    lid = await staff.request_leave(who, practitioner_id, body.start, body.end)
    return LeaveCreated(id=lid, status=LeaveStatus.REQUESTED)


@router.get(
    "/{practitioner_id}/leave-requests",
    responses=errors(403, 404),
    openapi_extra=public("/api/practitioners/{id}/leave-requests"),
)
async def list_leave(practitioner_id: uuid.UUID, who: Caller, staff: Staff) -> Leaves:
    """Leave requests of one practitioner, newest first (the practitioner, or ADMIN)."""
    found = await staff.leave_requests(who, practitioner_id)
    return Leaves(
        items=[
            Leave(
                id=x.id,
                status=x.status,
                start=x.during.start,
                end=x.during.end,
                created_at=x.created_at,
                decided_at=x.decided_at,
            )
            for x in found
        ]
    )


@router.post(
    "/{practitioner_id}/leave-requests/{leave_id}/{action}",
    responses=errors(403, 404, 409),
    openapi_extra=public("/api/practitioners/{id}/leave-requests/{leave_id}/{action}"),
)
async def decide(
    practitioner_id: uuid.UUID, leave_id: uuid.UUID, action: LeaveAction, who: Caller, staff: Staff
) -> LeaveDecided:
    """Approve or reject (ADMIN), or cancel (the practitioner or ADMIN) a leave request.
    Approved leave removes availability; an invalid transition answers 409."""
    return LeaveDecided(id=leave_id, status=await staff.decide_leave(who, practitioner_id, leave_id, action))


@router.get(
    "/{practitioner_id}/availability",
    responses=errors(403, 404),
    openapi_extra=public("/api/practitioners/{id}/availability"),
)
async def available(practitioner_id: uuid.UUID, who: Caller, staff: Staff, start: From, end: To) -> Availability:
    """Free time in a window of at most 31 days: shifts minus approved leave minus booked time (staff)."""
    return Availability(items=[Span.of(i) for i in await staff.availability(who, practitioner_id, start, end)])
