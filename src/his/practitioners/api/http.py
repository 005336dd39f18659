"""Internal HTTP API of the practitioners service (reached through the gateway).

Every route re-verifies the caller's token. The directory (profiles, specialties) is open to any
signed-in user; shifts are given by ADMIN or the practitioner themself (the user account linked
to the profile); leave is requested by the practitioner or ADMIN and decided by ADMIN.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from his.access import Role
from his.kernel.auth import authenticate, jwks_verifier, require
from his.kernel.db import retry_aborted
from his.kernel.intervals import Interval
from his.kernel.params import CalendarDateTime, Limit, one_of
from his.kernel.problems import HTTPException, ProblemError
from his.kernel.security import Principal, TokenVerifier
from his.kernel.service import ServiceContext
from his.practitioners import handlers, store
from his.practitioners.domain import SPECIALTIES, InvalidScheduleError, InvalidTransitionError, LeaveAction

STAFF = (Role.ADMIN, Role.RECEPTIONIST, Role.DOCTOR, Role.NURSE, Role.LAB_TECH, Role.BILLING)
MAX_WINDOW = timedelta(days=31)


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
    status: str


def router(ctx: ServiceContext, verifier: TokenVerifier | None = None) -> APIRouter:
    r = APIRouter(prefix="/practitioners", tags=["practitioners"])
    tokens = verifier or jwks_verifier()

    async def practitioner(pid: uuid.UUID) -> dict[str, Any]:
        async with ctx.db.pool.acquire() as conn:
            row = await store.get_practitioner(conn, pid)
        if row is None:
            raise HTTPException(404, "practitioner not found")
        return row

    def is_self(who: Principal, row: dict[str, Any]) -> bool:
        return row["user_id"] is not None and str(row["user_id"]) == who.subject

    def window(start: datetime, end: datetime) -> Interval:
        if end <= start:
            raise HTTPException(422, "'to' must be after 'from'")
        if end - start > MAX_WINDOW:
            raise HTTPException(422, "a window spans at most 31 days")
        return Interval(start, end)

    @r.get("/specialties")
    async def specialties(request: Request) -> dict[str, Any]:
        """The specialties a practitioner can have (code and name)."""
        await authenticate(request, tokens)
        return {"items": [{"code": c, "name": n} for c, n in SPECIALTIES.items()]}

    @r.post("", status_code=201, response_model=Created)
    async def create(body: NewPractitioner, request: Request) -> Created:
        """Create a practitioner profile (ADMIN); publishes ``his.practitioners.practitioner.registered.v1``."""
        who = await authenticate(request, tokens)
        require(who, Role.ADMIN)
        try:
            async with ctx.db.uow() as uow:
                pid = await handlers.register(uow, body.full_name, body.specialty, body.user_id)
        except InvalidScheduleError as exc:
            raise HTTPException(422, str(exc)) from None
        except store.AccountLinkedError:
            raise HTTPException(409, "this user account is already linked to a practitioner") from None
        return Created(id=pid)

    @r.get("")
    async def directory(
        request: Request,
        specialty: str | None = Query(default=None, max_length=64),
        limit: Limit = 50,
    ) -> dict[str, Any]:
        """The practitioner directory, optionally by specialty (any signed-in user)."""
        await authenticate(request, tokens)
        if specialty is not None:
            one_of("specialty", specialty, SPECIALTIES)
        async with ctx.db.pool.acquire() as conn:
            rows = await store.list_practitioners(conn, specialty, limit)
        return {"items": [store.as_json(x) for x in rows]}

    @r.get("/{practitioner_id}")
    async def profile(practitioner_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """One practitioner's profile (any signed-in user)."""
        await authenticate(request, tokens)
        return store.as_json(await practitioner(practitioner_id))

    @r.post("/{practitioner_id}/shifts", status_code=201, response_model=Created)
    async def add_shift(practitioner_id: uuid.UUID, body: TimeSpan, request: Request) -> Created:
        """Give a shift (ADMIN, or the practitioner themself). Shifts of one person never overlap
        (409 names the shift it collides with); overnight shifts are fine, up to 24 hours."""
        who = await authenticate(request, tokens)
        row = await practitioner(practitioner_id)
        if not (who.has_any(Role.ADMIN) or is_self(who, row)):
            raise HTTPException(403, "only ADMIN or the practitioner may add shifts")

        async def attempt() -> uuid.UUID:
            async with ctx.db.uow() as uow:
                return await handlers.add_shift(uow, practitioner_id, body.start, body.end, uuid.UUID(who.subject))

        try:
            sid = await retry_aborted(attempt)  # overlapping shifts added at once can deadlock: see there
        except InvalidScheduleError as exc:
            raise HTTPException(422, str(exc)) from None
        except store.ShiftOverlapError as exc:
            raise ProblemError(
                409, "the shift overlaps another shift of this practitioner", conflict=exc.other
            ) from None
        return Created(id=sid)

    @r.get("/{practitioner_id}/shifts")
    async def list_shifts(
        practitioner_id: uuid.UUID,
        request: Request,
        start: Annotated[CalendarDateTime, Query(alias="from")],
        end: Annotated[CalendarDateTime, Query(alias="to")],
    ) -> dict[str, Any]:
        """Shifts overlapping a window of at most 31 days (staff, or the practitioner)."""
        who = await authenticate(request, tokens)
        row = await practitioner(practitioner_id)
        if not (who.has_any(*STAFF) or is_self(who, row)):
            raise HTTPException(403, "shifts are visible to staff only")
        span = window(_aware(start, "from"), _aware(end, "to"))
        async with ctx.db.pool.acquire() as conn:
            return {"items": await store.shifts(conn, practitioner_id, span)}

    @r.post("/{practitioner_id}/leave-requests", status_code=201, response_model=LeaveCreated)
    async def request_leave(practitioner_id: uuid.UUID, body: TimeSpan, request: Request) -> LeaveCreated:
        """Request leave (the practitioner, or ADMIN on their behalf); it starts as ``requested``."""
        who = await authenticate(request, tokens)
        row = await practitioner(practitioner_id)
        if not (who.has_any(Role.ADMIN) or is_self(who, row)):
            raise HTTPException(403, "only the practitioner or ADMIN may request leave")
        try:
            async with ctx.db.uow() as uow:
                lid = await handlers.request_leave(uow, practitioner_id, body.start, body.end, uuid.UUID(who.subject))
        except InvalidScheduleError as exc:
            raise HTTPException(422, str(exc)) from None
        return LeaveCreated(id=lid, status="requested")

    @r.get("/{practitioner_id}/leave-requests")
    async def list_leave(practitioner_id: uuid.UUID, request: Request) -> dict[str, Any]:
        """Leave requests of one practitioner, newest first (the practitioner, or ADMIN)."""
        who = await authenticate(request, tokens)
        row = await practitioner(practitioner_id)
        if not (who.has_any(Role.ADMIN) or is_self(who, row)):
            raise HTTPException(403, "leave requests are visible to the practitioner and ADMIN only")
        async with ctx.db.pool.acquire() as conn:
            return {"items": await store.leave_requests(conn, practitioner_id)}

    @r.post("/{practitioner_id}/leave-requests/{leave_id}/{action}")
    async def decide(
        practitioner_id: uuid.UUID, leave_id: uuid.UUID, action: LeaveAction, request: Request
    ) -> dict[str, Any]:
        """Approve or reject (ADMIN), or cancel (the practitioner or ADMIN) a leave request.
        Approved leave removes availability; an invalid transition answers 409."""
        who = await authenticate(request, tokens)
        row = await practitioner(practitioner_id)
        allowed = who.has_any(Role.ADMIN) or (action is LeaveAction.CANCEL and is_self(who, row))
        if not allowed:
            raise HTTPException(403, f"not allowed to {action.value} this leave request")
        try:
            async with ctx.db.uow() as uow:
                status = await handlers.decide_leave(uow, practitioner_id, leave_id, action, uuid.UUID(who.subject))
        except handlers.NotFoundError:
            raise HTTPException(404, "leave request not found") from None
        except InvalidTransitionError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"id": str(leave_id), "status": status.value}

    @r.get("/{practitioner_id}/availability")
    async def available(
        practitioner_id: uuid.UUID,
        request: Request,
        start: Annotated[CalendarDateTime, Query(alias="from")],
        end: Annotated[CalendarDateTime, Query(alias="to")],
    ) -> dict[str, Any]:
        """Free time in a window of at most 31 days: shifts minus approved leave minus booked time (staff)."""
        who = await authenticate(request, tokens)
        require(who, *STAFF)
        await practitioner(practitioner_id)
        span = window(_aware(start, "from"), _aware(end, "to"))
        async with ctx.db.pool.acquire() as conn:
            free = await handlers.free_time(conn, practitioner_id, span)
        if free is None:
            raise HTTPException(404, "practitioner not found")
        return {"items": [store.interval_json(i) for i in free]}

    return r


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise HTTPException(422, f"'{name}' needs a UTC offset (RFC 3339)")
    return moment
