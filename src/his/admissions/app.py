"""Composition root of the admissions service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from his.kernel.db import Database
from his.kernel.service import Background, ServiceContext, ServiceDefinition
from his.kernel.web import Routes

if TYPE_CHECKING:
    from his.admissions.handlers import Directories
    from his.admissions.ports import AdmissionsUnits
    from his.kernel.clock import Clock

log = logging.getLogger("his.admissions")

#: How long after local midnight the nightly bed-charge run starts.
NIGHTLY_DELAY = timedelta(minutes=5)
#: After a failed run, how long until it is tried again.
RETRY_AFTER = timedelta(minutes=10)


def http(db: Database, known: Directories, timezone: str = "UTC") -> Routes:
    """The admissions routes and their use cases, over a database and the directories (the gRPC
    adapters here, the in-memory fakes in tests); nights are the hospital's (``timezone``)."""
    from his.admissions.store import AdmissionsStore

    def clock() -> datetime:
        """The database's clock, read when asked: the routes are built before the database is
        opened (and, for the API reference, without one)."""
        return db.clock()

    return http_over(AdmissionsStore(db), known, timezone, clock=clock)


def http_over(units: AdmissionsUnits, known: Directories, timezone: str = "UTC", *, clock: Clock) -> Routes:
    """The same routes over any units of work: the database's, or the in-memory ones of
    ``his.testing.admissions`` in unit tests. ``clock`` is the one the units run by: the nightly
    run's "today" is told by it outside a unit."""
    from his.admissions.api.http import router
    from his.admissions.handlers import Admissions

    return Routes(router, provides=[Admissions(units, known, ZoneInfo(timezone), clock)])


def routes(ctx: ServiceContext) -> Routes:
    from his.admissions.handlers import Directories
    from his.clients.billing import GrpcBillingTerms
    from his.clients.patients import GrpcPatients
    from his.clients.practitioners import GrpcPractitioners

    identity = ctx.settings.workload()
    if identity is None:
        raise SystemExit(
            "admissions needs a workload identity (HIS_TLS_*) to reach patients, practitioners and billing"
        )
    known = Directories(
        GrpcPatients(ctx.settings.grpc_target("patients"), identity),
        GrpcPractitioners(ctx.settings.grpc_target("practitioners"), identity),
        GrpcBillingTerms(ctx.settings.grpc_target("billing"), identity),
    )
    return http(ctx.db, known, ctx.settings.timezone)


def until_next_run(moment: datetime, zone: ZoneInfo) -> timedelta:
    """Time from ``moment`` to the next nightly run: ``NIGHTLY_DELAY`` after local midnight."""
    local = moment.astimezone(zone)
    run = datetime.combine(local.date(), time(0), tzinfo=zone) + NIGHTLY_DELAY
    if run <= local:
        run = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone) + NIGHTLY_DELAY
    # Elapsed time, in UTC: between two readings of one zone Python subtracts wall clocks, an hour
    # off across a daylight-saving change.
    return run.astimezone(UTC) - local.astimezone(UTC)


async def nightly_charges(
    units: AdmissionsUnits,
    zone: ZoneInfo,
    *,
    clock: Callable[[], datetime],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Charge last night's beds once at start (catching up anything missed while down), then
    shortly after every local midnight, by ``clock`` (the units'). The job is idempotent, so
    overlapping runs are harmless."""
    from his.admissions import handlers

    now = clock
    while True:
        try:
            await handlers.run_charges(units, now().astimezone(zone).date() - timedelta(days=1), zone)
            wait = until_next_run(now(), zone)
        except Exception:  # the task must outlive a failed run (the database was down, say)
            log.exception("nightly bed charges failed; trying again in %s", RETRY_AFTER)
            wait = RETRY_AFTER
        await sleep(wait.total_seconds())


def background(ctx: ServiceContext) -> dict[str, Background]:
    from his.admissions.store import AdmissionsStore

    charges = nightly_charges(AdmissionsStore(ctx.db), ZoneInfo(ctx.settings.timezone), clock=ctx.db.clock)
    return {"nightly-bed-charges": charges}


def build() -> ServiceDefinition:
    import his.events  # noqa: F401 - registers the event models
    from his.events.audit import batch_accesses

    return ServiceDefinition(
        name="admissions",
        combine_reads=batch_accesses,
        routes=routes,
        background=background,
        description="Wards, rooms, beds, admissions, transfers, nightly bed charges.",
    )
