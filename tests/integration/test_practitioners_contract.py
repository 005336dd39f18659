"""One contract for the practitioners' ports, run against PostgreSQL (``his.practitioners.store``)
and the in-memory fakes (``his.testing.practitioners``) alike: what the use cases' unit tests
assume of the fake holds of the database, its exclusion constraint and unique key included.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import pytest

from his.events.practitioners import LeaveCancelled
from his.kernel import migrations
from his.kernel.clock import FakeClock
from his.kernel.db import Database
from his.kernel.intervals import Interval
from his.practitioners.domain import AccountLinkedError, Calendar, LeaveRequest, LeaveStatus, Shift, ShiftOverlapError
from his.practitioners.ports import PractitionersUnits
from his.practitioners.store import PractitionersStore
from his.testing.practitioners import FakePractitioners
from tests.support.calendar import HARD_DATES

NEW_YEAR, DST_AUTUMN = HARD_DATES[0], HARD_DATES[4]
#: Half a minute before the new year: the moment every unit of work here says it is.
NOW = NEW_YEAR.at(23, 59, days=-1, second=30)
H = timedelta(hours=1)


@dataclass
class Side:
    units: PractitionersUnits
    #: The types of the events committed so far, in commit order.
    published: Callable[[], Awaitable[list[str]]]


@pytest.fixture(params=["memory", "postgres"])
async def side(request: pytest.FixtureRequest, admin_dsn: str) -> AsyncIterator[Side]:
    clock = FakeClock(NOW)
    if request.param == "memory":
        fake = FakePractitioners(clock)

        async def in_memory() -> list[str]:
            return [e.type for e in fake.published]

        yield Side(fake, in_memory)
        return
    dsn = await migrations.provision(admin_dsn, "practitioners", "pw-practitioners-contract")
    await migrations.upgrade(admin_dsn, "practitioners")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(
            "TRUNCATE practitioners.shift, practitioners.leave_request, practitioners.booked_time, "
            "practitioners.practitioner, practitioners.outbox CASCADE"
        )
    finally:
        await conn.close()
    db = Database(dsn, schema="practitioners", max_size=4, clock=clock)
    await db.open()

    async def in_outbox() -> list[str]:
        return [r[0] for r in await db.pool.fetch("SELECT subject FROM outbox ORDER BY id")]

    try:
        yield Side(PractitionersStore(db), in_outbox)
    finally:
        await db.close()


async def _register(
    side: Side, name: str = "Dr. Elif Şahin", specialty: str = "cardiology", user: uuid.UUID | None = None
) -> uuid.UUID:
    async with side.units.uow() as u:
        added = await u.profiles.add(full_name=name, specialty=specialty, user_id=user, at=NOW)
    assert (added.full_name, added.specialty, added.user_id, added.created_at) == (name, specialty, user, NOW)
    return added.id


def hours(start: float, end: float, base: datetime = NOW) -> Interval:
    return Interval(base + start * H, base + end * H)


async def test_a_practitioner_is_kept_as_registered(side: Side) -> None:
    user = uuid.uuid4()
    pid = await _register(side, user=user)
    async with side.units.read() as u:
        got = await u.profiles.get(pid)
        assert await u.profiles.get(uuid.uuid4()) is None
    assert got is not None
    assert (got.id, got.full_name, got.specialty, got.user_id, got.created_at) == (
        pid,
        "Dr. Elif Şahin",
        "cardiology",
        user,
        NOW,
    )


async def test_a_user_account_is_linked_to_one_practitioner_at_most(side: Side) -> None:
    user = uuid.uuid4()
    first = await _register(side, "Dr. A", user=user)
    with pytest.raises(AccountLinkedError):
        async with side.units.uow() as u:
            await u.profiles.add(full_name="Dr. B", specialty="neurology", user_id=user, at=NOW)
    await _register(side, "Dr. C")
    await _register(side, "Dr. D")  # without an account, any number
    async with side.units.read() as u:
        everyone = await u.profiles.find(specialty=None, limit=10)
    assert [(p.full_name, p.user_id) for p in everyone] == [("Dr. A", user), ("Dr. C", None), ("Dr. D", None)]
    assert everyone[0].id == first


async def test_the_directory_lists_by_name_then_id_and_by_specialty(side: Side) -> None:
    twins = sorted([await _register(side, "Dr. Ada"), await _register(side, "Dr. Ada")])
    zeki = await _register(side, "Dr. Zeki", "neurology")
    bora = await _register(side, "Dr. Bora")
    lower = await _register(side, "dr. ece")  # the database's collation is C: lowercase after every capital
    async with side.units.read() as u:
        assert [p.id for p in await u.profiles.find(specialty=None, limit=10)] == [*twins, bora, zeki, lower]
        assert [p.id for p in await u.profiles.find(specialty=None, limit=2)] == twins
        assert [p.id for p in await u.profiles.find(specialty="neurology", limit=10)] == [zeki]
        assert await u.profiles.find(specialty="dermatology", limit=10) == []


async def test_what_the_tables_refuse_the_fake_refuses(side: Side) -> None:
    """Shifts and leave only of a practitioner there is; a name of 1 to 200 characters."""
    nobody, actor = uuid.uuid4(), uuid.uuid4()
    refused = (ValueError, asyncpg.IntegrityConstraintViolationError)
    with pytest.raises(refused):
        async with side.units.uow() as u:
            await u.shifts.add(nobody, hours(8, 16), actor)
    with pytest.raises(refused):
        async with side.units.uow() as u:
            await u.leave.add(nobody, hours(8, 16), actor, NOW)
    for name in ("", "x" * 201):
        with pytest.raises(refused):
            async with side.units.uow() as u:
                await u.profiles.add(full_name=name, specialty="cardiology", user_id=None, at=NOW)
    async with side.units.read() as u:
        assert await u.profiles.find(specialty=None, limit=10) == []


async def test_one_persons_shifts_never_overlap_and_a_refusal_names_the_earliest_hit(side: Side) -> None:
    pid, other = await _register(side), await _register(side)
    actor = uuid.uuid4()
    async with side.units.uow() as u:
        morning = await u.shifts.add(pid, hours(8, 12), actor)
        afternoon = await u.shifts.add(pid, hours(12, 16), actor)  # back to back is fine
        night = await u.shifts.add(pid, hours(20, 28), actor)  # overnight too
    assert (morning.during, afternoon.during, night.during) == (hours(8, 12), hours(12, 16), hours(20, 28))
    async with side.units.uow() as u:
        with pytest.raises(ShiftOverlapError) as refused:
            await u.shifts.add(pid, hours(11, 21), actor)  # overlaps all three
        assert refused.value.other == morning
        with pytest.raises(ShiftOverlapError) as refused:
            await u.shifts.add(pid, hours(27, 30), actor)
        assert refused.value.other == night
        # The unit goes on after a refusal: what it does next commits.
        late = await u.shifts.add(pid, hours(28, 30), actor)
        theirs = await u.shifts.add(other, hours(11, 21), actor)  # another person may work those hours
    async with side.units.read() as u:
        assert await u.shifts.overlapping(pid, hours(0, 48)) == [morning, afternoon, night, late]
        assert await u.shifts.overlapping(pid, hours(12, 20)) == [afternoon]  # half-open: touching is not overlapping
        assert await u.shifts.overlapping(pid, hours(15, 21)) == [afternoon, night]
        assert await u.shifts.overlapping(pid, hours(0, 8)) == []
        assert await u.shifts.overlapping(other, hours(0, 48)) == [Shift(theirs.id, hours(11, 21))]


async def test_a_leave_request_is_kept_as_requested_and_decided(side: Side) -> None:
    pid, other = await _register(side), await _register(side)
    actor, admin = uuid.uuid4(), uuid.uuid4()
    async with side.units.uow() as u:
        first = await u.leave.add(pid, hours(24, 72), actor, NOW)
        later = await u.leave.add(pid, hours(100, 120), actor, NOW + H)
        earlier = await u.leave.add(pid, hours(-2, 10), actor, NOW)
    assert (first.status, first.during, first.created_at, first.decided_at) == (
        LeaveStatus.REQUESTED,
        hours(24, 72),
        NOW,
        None,
    )
    decided_at = NOW + 2 * H
    async with side.units.uow() as u:
        assert await u.leave.get(other, first.id, lock=True) is None  # another's
        assert await u.leave.get(pid, uuid.uuid4(), lock=True) is None
        locked = await u.leave.get(pid, first.id, lock=True)
        assert locked == first
        approved = await u.leave.decide(first, LeaveStatus.APPROVED, admin, decided_at)
    assert approved == LeaveRequest(first.id, LeaveStatus.APPROVED, hours(24, 72), NOW, decided_at)
    async with side.units.read() as u:
        assert await u.leave.get(pid, first.id) == approved
        assert await u.leave.of(pid) == [later, approved, earlier]  # the latest start first
        assert await u.leave.of(pid, limit=1) == [later]
        assert await u.leave.of(other) == []


async def test_booked_time_is_held_once_per_appointment_moved_and_released(side: Side) -> None:
    pid, other = await _register(side), await _register(side)
    appointment, second = uuid.uuid4(), uuid.uuid4()
    window = hours(0, 24)
    async with side.units.uow() as u:
        await u.booked.hold(appointment, pid, hours(9, 10))
        await u.booked.hold(appointment, pid, hours(9, 10))  # a redelivery
        await u.booked.hold(second, pid, hours(13, 14))
    async with side.units.read() as u:
        cal = await u.calendars.of(pid, window, booked=True)
    assert cal is not None and sorted(cal.booked) == [hours(9, 10), hours(13, 14)]
    async with side.units.uow() as u:
        await u.booked.hold(appointment, pid, hours(11, 12))  # moved
        # Moved again, naming another practitioner: only the time moves (the table's upsert).
        await u.booked.hold(second, other, hours(15, 16))
        await u.booked.release(uuid.uuid4())  # nothing to release
    async with side.units.read() as u:
        cal = await u.calendars.of(pid, window, booked=True)
        theirs = await u.calendars.of(other, window, booked=True)
    assert cal is not None and sorted(cal.booked) == [hours(11, 12), hours(15, 16)]
    assert theirs == Calendar([], [], [])
    async with side.units.uow() as u:
        await u.booked.release(appointment)
    async with side.units.read() as u:
        cal = await u.calendars.of(pid, window, booked=True)
    assert cal is not None and cal.booked == [hours(15, 16)]


async def test_a_calendar_is_the_shifts_approved_leave_and_booked_time_overlapping_a_25_hour_day(
    side: Side,
) -> None:
    """On the day the clocks go back, from its local midnight to the next: whole intervals (not
    clipped) of those that overlap it, none of those that only touch it."""
    day = Interval(DST_AUTUMN.midnight(), DST_AUTUMN.midnight(days=1))
    assert day.end - day.start == 25 * H
    pid, other = await _register(side), await _register(side)
    actor = uuid.uuid4()

    def at(start: float, end: float) -> Interval:
        return hours(start, end, day.start)

    async with side.units.uow() as u:
        for span in (at(-2, 6), at(14, 22), at(23, 25), at(25, 30)):
            await u.shifts.add(pid, span, actor)
        await u.shifts.add(other, at(8, 12), actor)
        requested = await u.leave.add(pid, at(1, 2), actor, NOW)
        approved = await u.leave.add(pid, at(3, 16), actor, NOW)
        rejected = await u.leave.add(pid, at(18, 19), actor, NOW)
        cancelled = await u.leave.add(pid, at(20, 21), actor, NOW)
        outside = await u.leave.add(pid, at(25, 48), actor, NOW)
        for leave, status in (
            (approved, LeaveStatus.APPROVED),
            (rejected, LeaveStatus.REJECTED),
            (cancelled, LeaveStatus.CANCELLED),
            (outside, LeaveStatus.APPROVED),
        ):
            await u.leave.decide(leave, status, actor, NOW)
        await u.leave.add(other, at(0, 24), actor, NOW)
        await u.booked.hold(uuid.uuid4(), pid, at(15, 16))
        await u.booked.hold(uuid.uuid4(), pid, at(24.5, 25.5))
        await u.booked.hold(uuid.uuid4(), pid, at(-1, 0))
        await u.booked.hold(uuid.uuid4(), other, at(15, 16))
    assert requested.status is LeaveStatus.REQUESTED
    async with side.units.read() as u:
        full = await u.calendars.of(pid, day, booked=True)
        without = await u.calendars.of(pid, day, booked=False)
        assert await u.calendars.of(uuid.uuid4(), day, booked=True) is None
    assert full is not None and without is not None
    shifts = [at(-2, 6), at(14, 22), at(23, 25)]
    assert (sorted(full.shifts), sorted(full.leave), sorted(full.booked)) == (
        shifts,
        [at(3, 16)],
        [at(15, 16), at(24.5, 25.5)],
    )
    assert (sorted(without.shifts), without.leave, without.booked) == (shifts, [at(3, 16)], [])


async def test_a_unit_that_fails_leaves_nothing_and_publishes_nothing(side: Side) -> None:
    actor = uuid.uuid4()
    pid = await _register(side, "Dr. Kept")
    appointment = uuid.uuid4()
    with pytest.raises(RuntimeError):
        async with side.units.uow() as u:
            added = await u.profiles.add(full_name="Dr. Gone", specialty="nursing", user_id=uuid.uuid4(), at=NOW)
            await u.shifts.add(pid, hours(8, 16), actor)
            leave = await u.leave.add(pid, hours(24, 48), actor, NOW)
            await u.leave.decide(leave, LeaveStatus.APPROVED, actor, NOW)
            await u.booked.hold(appointment, pid, hours(9, 10))
            u.add(LeaveCancelled(leave_id=leave.id, practitioner_id=pid), aggregate_id=pid)
            raise RuntimeError("the use case fails after writing")
    async with side.units.read() as u:
        assert await u.profiles.get(added.id) is None
        assert [p.id for p in await u.profiles.find(specialty=None, limit=10)] == [pid]
        assert await u.shifts.overlapping(pid, hours(0, 48)) == []
        assert await u.leave.of(pid) == []
        assert await u.calendars.of(pid, hours(0, 48), booked=True) == Calendar([], [], [])
    assert await side.published() == []
    async with side.units.uow() as u:
        u.add(LeaveCancelled(leave_id=uuid.uuid4(), practitioner_id=pid), aggregate_id=pid)
        assert u.clock() == NOW
    assert await side.published() == [LeaveCancelled.type]
