"""gRPC API of the practitioners service: ``his.practitioners.v1.Calendar`` for the services that
book practitioners' time, ``PractitionerDirectory`` for those that record a practitioner or offer
the time of every practitioner (scheduling's first free slots)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, TypeAlias

import grpc

from his.kernel import rpc
from his.kernel.db import Database
from his.kernel.intervals import Interval
from his.kernel.pki import spiffe_id
from his.kernel.service import ServiceContext
from his.practitioners import handlers
from his.practitioners.domain import SPECIALTIES
from his.practitioners.ports import Calendars
from his.practitioners.store import PgCalendars, PgProfiles
from his.proto.practitioners.v1 import practitioners_pb2 as pb
from his.proto.practitioners.v1 import practitioners_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    Context: TypeAlias = grpc.aio.ServicerContext[object, object]

MAX_WINDOW = timedelta(days=31)
#: Who may ask when a practitioner works: the services that book their time.
BOOKERS = frozenset({spiffe_id("scheduling"), spiffe_id("admissions")})
ALLOW = {"GetWorkingTime": BOOKERS, "GetAvailability": BOOKERS}
#: Who may look a practitioner up: the services that record one against their own data; who may
#: list them all: scheduling, which offers the first free slots across practitioners.
DIRECTORY_ALLOW = {
    "GetPractitioner": frozenset({spiffe_id("admissions")}),
    "ListPractitioners": frozenset({spiffe_id("scheduling")}),
}
#: The most practitioners one listing answers (a hospital's directory is far smaller).
MAX_LISTED = 10_000


class Calendar(pb_grpc.CalendarServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def GetWorkingTime(self, request: pb.GetWorkingTimeRequest, context: Context) -> pb.WorkingTime:
        """Shifts minus approved leave inside the window (at most 31 days)."""
        return await self._answer(request, context, handlers.working_time)

    async def GetAvailability(self, request: pb.GetWorkingTimeRequest, context: Context) -> pb.WorkingTime:
        """Shifts minus approved leave minus booked time inside the window (at most 31 days)."""
        return await self._answer(request, context, handlers.free_time)

    async def _answer(
        self,
        request: pb.GetWorkingTimeRequest,
        context: Context,
        compute: Callable[[Calendars, uuid.UUID, Interval], Awaitable[list[Interval] | None]],
    ) -> pb.WorkingTime:
        try:
            pid = uuid.UUID(request.practitioner_id)
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "practitioner_id must be a UUID")
        window = Interval(request.start.ToDatetime(tzinfo=UTC), request.end.ToDatetime(tzinfo=UTC))
        if not timedelta(0) < window.end - window.start <= MAX_WINDOW:  # start + 31 days may pass year 9999
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the window must be non-empty and at most 31 days")
        async with self.db.pool.acquire() as conn:  # one statement: no transaction needed
            free = await compute(PgCalendars(conn), pid, window)
        if free is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "practitioner not found")
        out = pb.WorkingTime(practitioner_id=str(pid))
        for i in free:
            item = out.intervals.add()
            item.start.FromDatetime(i.start)
            item.end.FromDatetime(i.end)
        return out


class PractitionerDirectory(pb_grpc.PractitionerDirectoryServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def GetPractitioner(self, request: pb.GetPractitionerRequest, context: Context) -> pb.Practitioner:
        """One practitioner's specialty and linked account (no name: callers record ids)."""
        try:
            pid = uuid.UUID(request.practitioner_id)
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "practitioner_id must be a UUID")
        async with self.db.pool.acquire() as conn:
            row = await PgProfiles(conn).get(pid)
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "practitioner not found")
        out = pb.Practitioner(practitioner_id=str(pid), specialty=row.specialty)
        if row.user_id is not None:
            out.user_id = str(row.user_id)
        return out

    async def ListPractitioners(self, request: pb.ListPractitionersRequest, context: Context) -> pb.PractitionerList:
        """Every practitioner (or those of one specialty) by name, and every specialty code."""
        specialty = request.specialty if request.HasField("specialty") else None
        async with self.db.pool.acquire() as conn:  # one statement: no transaction needed
            found = await PgProfiles(conn).find(specialty=specialty, limit=MAX_LISTED)
        out = pb.PractitionerList(specialties=list(SPECIALTIES))
        for p in found:
            out.practitioners.add(practitioner_id=str(p.id), full_name=p.full_name, specialty=p.specialty)
        return out


def services(ctx: ServiceContext) -> list[rpc.RpcService]:
    return [
        rpc.RpcService(
            descriptor=pb.DESCRIPTOR.services_by_name["Calendar"],
            servicer=Calendar(ctx.db),
            register=pb_grpc.add_CalendarServicer_to_server,
            allow=ALLOW,
        ),
        rpc.RpcService(
            descriptor=pb.DESCRIPTOR.services_by_name["PractitionerDirectory"],
            servicer=PractitionerDirectory(ctx.db),
            register=pb_grpc.add_PractitionerDirectoryServicer_to_server,
            allow=DIRECTORY_ALLOW,
        ),
    ]
