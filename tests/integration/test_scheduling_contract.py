"""One contract for scheduling's ports, run against PostgreSQL (``his.scheduling.store``) and the
in-memory fakes (``his.testing.scheduling``) alike: what the use cases' unit tests assume of the
fake holds of the database, above all what the exclusion constraints and the unique index refuse
(no two appointments holding one practitioner's or one patient's time; back to back is fine;
cancelled and missed ones hold none) and that a refusal ends the unit of work.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from his.events.scheduling import AppointmentCancelled
from his.kernel import migrations
from his.kernel.clock import FakeClock
from his.kernel.db import Database
from his.kernel.intervals import Interval
from his.scheduling.domain import (
    Appointment,
    CollisionError,
    NewAppointment,
    Offer,
    Status,
    WaitlistDuplicateError,
    WaitlistEntry,
    WaitlistStatus,
)
from his.scheduling.ports import SchedulingUnits, SchedulingWork
from his.scheduling.store import SchedulingStore
from his.testing.scheduling import FakeScheduling

#: Half a minute before the new year: the moment every unit of work here says it is.
NOW = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC)


def at(hours: float) -> datetime:
    """``hours`` after midnight of the new year's day (UTC)."""
    return datetime(2027, 1, 1, tzinfo=UTC) + timedelta(hours=hours)


def span(start: float, minutes: float = 20) -> Interval:
    return Interval(at(start), at(start) + timedelta(minutes=minutes))


@dataclass
class Side:
    units: SchedulingUnits
    clock: FakeClock
    #: The types of the events committed so far, in commit order.
    published: Callable[[], Awaitable[list[str]]]


@pytest.fixture(params=["memory", "postgres"])
async def side(request: pytest.FixtureRequest, admin_dsn: str) -> AsyncIterator[Side]:
    clock = FakeClock(NOW)
    if request.param == "memory":
        fake = FakeScheduling(clock)

        async def in_memory() -> list[str]:
            return [e.type for e in fake.published]

        yield Side(fake, clock, in_memory)
        return
    dsn = await migrations.provision(admin_dsn, "scheduling", "pw-scheduling-contract")
    await migrations.upgrade(admin_dsn, "scheduling")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(
            "TRUNCATE scheduling.appointment, scheduling.waitlist_entry, scheduling.known_patient, scheduling.outbox"
        )
    finally:
        await conn.close()
    db = Database(dsn, schema="scheduling", max_size=4, clock=clock)
    await db.open()

    async def in_outbox() -> list[str]:
        return [r[0] for r in await db.pool.fetch("SELECT subject FROM outbox ORDER BY id")]

    try:
        yield Side(SchedulingStore(db), clock, in_outbox)
    finally:
        await db.close()


def new(during: Interval, *, practitioner: uuid.UUID | None = None, patient: uuid.UUID | None = None) -> NewAppointment:
    return NewAppointment(
        uuid.uuid4(), patient or uuid.uuid4(), practitioner or uuid.uuid4(), "consultation", during, uuid.uuid4()
    )


async def _book(side: Side, wanted: NewAppointment) -> Appointment:
    async with side.units.uow() as u:
        return await u.appointments.add(wanted, u.clock())


async def _refused(side: Side, wanted: NewAppointment) -> CollisionError:
    """The collision a booking of ``wanted`` ends in; nothing of it is kept."""
    with pytest.raises(CollisionError) as refused:
        await _book(side, wanted)
    async with side.units.read() as u:
        assert await u.appointments.get(wanted.id) is None
    return refused.value


async def _set(side: Side, a: Appointment, status: Status) -> Appointment:
    async with side.units.uow() as u:
        return await u.appointments.set_status(a, status, u.clock())


async def test_an_appointment_is_kept_as_booked(side: Side) -> None:
    wanted = new(span(9))
    booked = await _book(side, wanted)
    assert (booked.id, booked.patient_id, booked.practitioner_id, booked.service, booked.booked_by) == (
        wanted.id,
        wanted.patient_id,
        wanted.practitioner_id,
        "consultation",
        wanted.booked_by,
    )
    assert (booked.during, booked.status, booked.version) == (span(9), Status.BOOKED, 1)
    assert booked.created_at == booked.updated_at == NOW  # the unit's clock, not the server's
    async with side.units.read() as u:
        assert await u.appointments.get(wanted.id) == booked
        assert await u.appointments.get(uuid.uuid4()) is None


async def test_a_status_change_or_a_move_counts_a_version_and_stamps_it(side: Side) -> None:
    booked = await _book(side, new(span(9)))
    side.clock.advance(timedelta(minutes=5))
    async with side.units.uow() as u:
        locked = await u.appointments.get(booked.id, lock=True)
        assert locked == booked
        moved = await u.appointments.move(booked, span(11), u.clock())
    assert (moved.during, moved.version, moved.status) == (span(11), 2, Status.BOOKED)
    assert (moved.created_at, moved.updated_at) == (NOW, NOW + timedelta(minutes=5))
    side.clock.advance(timedelta(minutes=5))
    checked_in = await _set(side, moved, Status.CHECKED_IN)
    assert (checked_in.status, checked_in.version, checked_in.during) == (Status.CHECKED_IN, 3, span(11))
    assert (checked_in.created_at, checked_in.updated_at) == (NOW, NOW + timedelta(minutes=10))
    async with side.units.read() as u:
        assert await u.appointments.get(booked.id) == checked_in


async def test_one_practitioners_appointments_never_overlap_but_may_touch(side: Side) -> None:
    doctor = uuid.uuid4()
    first = await _book(side, new(span(9), practitioner=doctor))  # 09:00–09:20
    for clash in (span(9), span(8.9), span(9 + 1 / 6), span(8.5, 60), span(9.1, 5)):
        refused = await _refused(side, new(clash, practitioner=doctor))
        assert (refused.who, refused.other) == ("practitioner", None)  # named later: colliding()
    # Half-open ranges: back to back, before and after, is fine; so is another practitioner.
    await _book(side, new(span(9 - 1 / 3), practitioner=doctor))
    await _book(side, new(span(9 + 1 / 3), practitioner=doctor))
    await _book(side, new(span(9)))
    async with side.units.read() as u:
        assert sorted(await u.appointments.busy(doctor, span(8, 120))) == [span(h) for h in (8 + 2 / 3, 9, 9 + 1 / 3)]
        assert (await u.appointments.get(first.id)) == first


async def test_one_patients_appointments_never_overlap_but_may_touch(side: Side) -> None:
    patient = uuid.uuid4()
    await _book(side, new(span(10), patient=patient))
    refused = await _refused(side, new(span(10.25), patient=patient))  # another practitioner
    assert (refused.who, refused.other) == ("patient", None)
    await _book(side, new(span(10 + 1 / 3), patient=patient))
    await _book(side, new(span(10), practitioner=uuid.uuid4()))  # another patient at the same time


async def test_when_both_collide_the_practitioners_time_is_named(side: Side) -> None:
    doctor, patient = uuid.uuid4(), uuid.uuid4()
    await _book(side, new(span(9), practitioner=doctor, patient=patient))
    refused = await _refused(side, new(span(9.1), practitioner=doctor, patient=patient))
    assert refused.who == "practitioner"


async def test_only_appointments_that_hold_time_count(side: Side) -> None:
    """Booked, checked-in and completed appointments hold time; cancelled and missed ones do not,
    and one cannot come back to holding time over another (as a booking could not)."""
    doctor = uuid.uuid4()
    cancelled = await _set(side, await _book(side, new(span(9), practitioner=doctor)), Status.CANCELLED)
    missed = await _set(side, await _book(side, new(span(10), practitioner=doctor)), Status.NO_SHOW)
    again = [await _book(side, new(span(h), practitioner=doctor)) for h in (9, 10)]
    checked_in = await _set(side, again[0], Status.CHECKED_IN)
    completed = await _set(side, await _set(side, again[1], Status.CHECKED_IN), Status.COMPLETED)
    for taken in (checked_in, completed):
        assert (await _refused(side, new(taken.during, practitioner=doctor))).who == "practitioner"
    for freed in (cancelled, missed):
        with pytest.raises(CollisionError) as back:
            await _set(side, freed, Status.BOOKED)
        assert back.value.who == "practitioner"
    async with side.units.read() as u:
        assert sorted(await u.appointments.busy(doctor, span(0, 24 * 60))) == [span(9), span(10)]
        assert (await u.appointments.get(cancelled.id)) == cancelled


async def test_a_move_is_held_to_the_same_constraints_but_not_against_itself(side: Side) -> None:
    doctor, patient = uuid.uuid4(), uuid.uuid4()
    mine = await _book(side, new(span(9), practitioner=doctor, patient=patient))
    await _book(side, new(span(10), practitioner=doctor))
    await _book(side, new(span(12), patient=patient))
    for onto, who in ((span(10.1), "practitioner"), (span(12.1), "patient")):
        with pytest.raises(CollisionError) as refused:
            async with side.units.uow() as u:
                await u.appointments.move(mine, onto, u.clock())
        assert (refused.value.who, refused.value.other) == (who, None)
    async with side.units.uow() as u:
        moved = await u.appointments.move(mine, span(9.1), u.clock())  # over its own old time
    assert moved.during == span(9.1) and moved.version == 2
    async with side.units.read() as u:
        assert await u.appointments.colliding("practitioner", moved) is None


async def test_colliding_names_the_earliest_appointment_still_holding_the_time(side: Side) -> None:
    doctor, patient = uuid.uuid4(), uuid.uuid4()
    early = await _book(side, new(span(9), practitioner=doctor))
    late = await _book(side, new(span(9 + 1 / 3), practitioner=doctor))
    theirs = await _book(side, new(span(11), patient=patient))
    wanted = new(span(9.25), practitioner=doctor, patient=patient)  # 09:15–09:35: both of the doctor's
    async with side.units.read() as u:
        assert await u.appointments.colliding("practitioner", wanted) == early
        assert await u.appointments.colliding("patient", wanted) is None
        assert await u.appointments.colliding("patient", new(span(10.9), patient=patient)) == theirs
    await _set(side, early, Status.CANCELLED)
    async with side.units.read() as u:
        assert await u.appointments.colliding("practitioner", wanted) == late
        assert await u.appointments.colliding("practitioner", late) is None  # not itself


async def test_busy_is_the_time_held_in_a_window(side: Side) -> None:
    doctor = uuid.uuid4()
    for h in (8 + 2 / 3, 9, 10, 11):
        await _book(side, new(span(h), practitioner=doctor))
    await _set(side, await _book(side, new(span(9.5), practitioner=doctor)), Status.CANCELLED)
    await _book(side, new(span(9.5)))  # another practitioner's
    async with side.units.read() as u:
        held = await u.appointments.busy(doctor, Interval(at(9), at(11)))  # touches 08:40–09:00 and 11:00
        assert await u.appointments.busy(uuid.uuid4(), Interval(at(0), at(24))) == []
    assert sorted(held) == [span(9), span(10)]


async def test_a_patients_appointments_in_every_state_the_latest_first(side: Side) -> None:
    patient = uuid.uuid4()
    booked = [await _book(side, new(span(h), patient=patient)) for h in (9, 14, 11)]
    cancelled = await _set(side, booked[1], Status.CANCELLED)
    await _book(side, new(span(14)))  # another patient's
    async with side.units.read() as u:
        found = await u.appointments.of_patient(patient, 10)
        assert await u.appointments.of_patient(patient, 2) == found[:2]
        assert await u.appointments.of_patient(uuid.uuid4(), 10) == []
    assert found == [cancelled, booked[2], booked[0]]


async def test_a_practitioners_appointments_that_start_in_a_window_earliest_first_then_by_id(side: Side) -> None:
    """Every state; those that start from the window's start up to its end: not one that started
    before and runs into it, nor one that starts at its end. At one start, by id. Written out of
    order (a cancelled appointment and the one booked in its place with a lower id among them),
    so that only the query's own order gives the answer."""
    doctor = uuid.uuid4()
    day = Interval(at(0), at(24))
    last = await _book(side, new(span(23 + 2 / 3), practitioner=doctor))  # until the window's end
    before = await _set(side, await _book(side, new(span(-1 / 6), practitioner=doctor)), Status.CANCELLED)
    after = await _book(side, new(span(24), practitioner=doctor))
    first = await _book(side, new(span(0), practitioner=doctor))
    low, high = sorted(uuid.uuid4() for _ in range(2))
    replaced = await _set(
        side, await _book(side, replace(new(span(9), practitioner=doctor), id=high)), Status.CANCELLED
    )
    in_its_place = await _book(side, replace(new(span(9), practitioner=doctor), id=low))
    noon = await _book(side, new(span(12), practitioner=doctor))
    await _book(side, new(span(10)))  # another practitioner's
    async with side.units.read() as u:
        found = await u.appointments.of_practitioner(doctor, day, 10)
        assert await u.appointments.of_practitioner(doctor, day, 2) == found[:2]
        assert await u.appointments.of_practitioner(doctor, Interval(at(-24), at(0)), 10) == [before]
        assert await u.appointments.of_practitioner(doctor, Interval(at(24), at(48)), 10) == [after]
        assert await u.appointments.of_practitioner(uuid.uuid4(), day, 10) == []
    assert found == [first, in_its_place, replaced, noon, last]


async def _join(
    side: Side, patient: uuid.UUID, practitioner: uuid.UUID, service: str = "consultation"
) -> WaitlistEntry:
    async with side.units.uow() as u:
        return await u.waitlist.add(
            entry_id=uuid.uuid4(),
            patient_id=patient,
            practitioner_id=practitioner,
            service=service,
            created_by=uuid.uuid4(),
            at=u.clock(),
        )


async def _mark(side: Side, entry: WaitlistEntry, status: WaitlistStatus, offer: Offer | None = None) -> None:
    async with side.units.uow() as u:
        await u.waitlist.set_status(entry.id, status, offer)


async def test_a_waitlist_entry_is_kept_as_added(side: Side) -> None:
    patient, doctor = uuid.uuid4(), uuid.uuid4()
    entry = await _join(side, patient, doctor, "checkup")
    assert (entry.patient_id, entry.practitioner_id, entry.service) == (patient, doctor, "checkup")
    assert (entry.status, entry.offer, entry.created_at) == (WaitlistStatus.WAITING, None, NOW)
    async with side.units.uow() as u:
        assert await u.waitlist.get(entry.id, lock=True) == entry
        assert await u.waitlist.get(uuid.uuid4()) is None


async def test_an_entry_holds_an_offer_exactly_while_it_is_offered(side: Side) -> None:
    entry = await _join(side, uuid.uuid4(), uuid.uuid4())
    offer = Offer(span(9), NOW + timedelta(minutes=30))
    await _mark(side, entry, WaitlistStatus.OFFERED, offer)
    async with side.units.read() as u:
        offered = await u.waitlist.get(entry.id)
    assert offered is not None and (offered.status, offered.offer) == (WaitlistStatus.OFFERED, offer)
    await _mark(side, entry, WaitlistStatus.BOOKED)
    async with side.units.read() as u:
        booked = await u.waitlist.get(entry.id)
    assert booked is not None and (booked.status, booked.offer) == (WaitlistStatus.BOOKED, None)
    other = await _join(side, uuid.uuid4(), uuid.uuid4())
    for status, with_offer in ((WaitlistStatus.OFFERED, None), (WaitlistStatus.WAITING, offer)):
        with pytest.raises(asyncpg.CheckViolationError):
            await _mark(side, other, status, with_offer)
    async with side.units.read() as u:
        assert await u.waitlist.get(other.id) == other
    await _mark(side, other, WaitlistStatus.WITHDRAWN)
    async with side.units.uow() as u:
        await u.waitlist.set_status(uuid.uuid4(), WaitlistStatus.WITHDRAWN)  # no such entry: nothing happens


async def test_a_patient_has_one_open_entry_per_practitioner_and_service(side: Side) -> None:
    patient, doctor = uuid.uuid4(), uuid.uuid4()
    first = await _join(side, patient, doctor)
    for status in (None, WaitlistStatus.OFFERED):  # waiting, then offered: both open
        if status is not None:
            await _mark(side, first, status, Offer(span(9), NOW + timedelta(minutes=30)))
        with pytest.raises(WaitlistDuplicateError):
            await _join(side, patient, doctor)
    # Another service, another practitioner, another patient: other entries.
    others = [await _join(side, patient, doctor, "checkup"), await _join(side, patient, uuid.uuid4())]
    others.append(await _join(side, uuid.uuid4(), doctor))
    await _mark(side, first, WaitlistStatus.WITHDRAWN)
    second = await _join(side, patient, doctor)  # once the first is closed
    await _mark(side, second, WaitlistStatus.BOOKED)
    third = await _join(side, patient, doctor)
    with pytest.raises(asyncpg.UniqueViolationError):  # reopening one while another is open
        await _mark(side, first, WaitlistStatus.WAITING)
    async with side.units.read() as u:
        mine = await u.waitlist.of_patient(patient)
    assert {e.id for e in mine} == {first.id, second.id, third.id, others[0].id, others[1].id}


async def test_the_waiting_come_first_come_first_served(side: Side) -> None:
    doctor = uuid.uuid4()
    early = await _join(side, uuid.uuid4(), doctor)
    side.clock.advance(timedelta(seconds=1))
    twins = sorted([await _join(side, uuid.uuid4(), doctor) for _ in range(3)], key=lambda e: e.id)  # one moment
    side.clock.advance(timedelta(seconds=1))
    late = await _join(side, uuid.uuid4(), doctor)
    offered, withdrawn = await _join(side, uuid.uuid4(), doctor), await _join(side, uuid.uuid4(), doctor)
    await _mark(side, offered, WaitlistStatus.OFFERED, Offer(span(9), NOW + timedelta(minutes=30)))
    await _mark(side, withdrawn, WaitlistStatus.WITHDRAWN)
    await _join(side, uuid.uuid4(), uuid.uuid4())  # another practitioner's
    async with side.units.uow() as u:
        waiting = await u.waitlist.waiting_for(doctor)
    assert [e.id for e in waiting] == [early.id, *(t.id for t in twins), late.id]
    side.clock.advance(timedelta(seconds=1))
    for _ in range(50):
        await _join(side, uuid.uuid4(), doctor)
    async with side.units.uow() as u:
        assert [e.id for e in await u.waitlist.waiting_for(doctor)][:5] == [e.id for e in waiting]
        assert len(await u.waitlist.waiting_for(doctor)) == 50


async def test_a_patients_entries_in_every_state_the_newest_first(side: Side) -> None:
    patient = uuid.uuid4()
    entries = []
    for _ in range(3):
        entries.append(await _join(side, patient, uuid.uuid4()))
        side.clock.advance(timedelta(minutes=1))
    await _mark(side, entries[1], WaitlistStatus.WITHDRAWN)
    await _join(side, uuid.uuid4(), uuid.uuid4())  # another patient's
    async with side.units.read() as u:
        found = await u.waitlist.of_patient(patient)
        assert await u.waitlist.of_patient(uuid.uuid4()) == []
    assert [e.id for e in found] == [e.id for e in reversed(entries)]
    assert found[1].status is WaitlistStatus.WITHDRAWN
    for _ in range(100):
        await _join(side, patient, uuid.uuid4())
    async with side.units.read() as u:
        assert len(await u.waitlist.of_patient(patient)) == 100


async def test_a_refused_write_ends_the_unit_of_work(side: Side) -> None:
    """After a refusal the unit can do nothing more (PostgreSQL has aborted its transaction),
    and a unit that swallows the error and ends fails instead of committing what came before."""
    doctor, patient = uuid.uuid4(), uuid.uuid4()
    taken = await _book(side, new(span(9), practitioner=doctor))
    entry = await _join(side, patient, doctor)

    async def clash(u: SchedulingWork) -> None:
        await u.appointments.add(new(span(9.1), practitioner=doctor), u.clock())

    async def twice(u: SchedulingWork) -> None:
        await u.waitlist.add(
            entry_id=uuid.uuid4(),
            patient_id=patient,
            practitioner_id=doctor,
            service="consultation",
            created_by=uuid.uuid4(),
            at=u.clock(),
        )

    refusals: list[tuple[Callable[[SchedulingWork], Awaitable[None]], type[Exception]]] = [
        (clash, CollisionError),
        (twice, WaitlistDuplicateError),
    ]
    for refused, error in refusals:
        before = new(span(14))
        with pytest.raises(asyncpg.InFailedSQLTransactionError):
            async with side.units.uow() as u:
                await u.appointments.add(before, u.clock())
                u.add(AppointmentCancelled(**_fields(taken)), aggregate_id=taken.id)
                with pytest.raises(error):
                    await refused(u)
                with pytest.raises(asyncpg.InFailedSQLTransactionError):
                    await u.appointments.get(taken.id)
        async with side.units.read() as u:
            assert await u.appointments.get(before.id) is None
            assert await u.waitlist.of_patient(patient) == [entry]
    assert await side.published() == []


async def test_an_appointments_times_are_never_empty_nor_backwards(side: Side) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await _book(side, new(Interval(at(9), at(9))))
    with pytest.raises(asyncpg.DataError):  # no range at all
        await _book(side, new(Interval(at(9), at(8))))
    entry = await _join(side, uuid.uuid4(), uuid.uuid4())
    with pytest.raises(asyncpg.DataError):
        await _mark(side, entry, WaitlistStatus.OFFERED, Offer(Interval(at(9), at(8)), NOW))


def _fields(a: Appointment) -> dict[str, object]:
    return {
        "appointment_id": a.id,
        "patient_id": a.patient_id,
        "practitioner_id": a.practitioner_id,
        "service": a.service,
        "start": a.start,
        "end": a.end,
    }


async def test_a_unit_that_fails_leaves_nothing_and_publishes_nothing(side: Side) -> None:
    patient, doctor = uuid.uuid4(), uuid.uuid4()
    wanted = new(span(9), patient=patient, practitioner=doctor)
    with pytest.raises(RuntimeError):
        async with side.units.uow() as u:
            booked = await u.appointments.add(wanted, u.clock())
            await u.waitlist.add(
                entry_id=uuid.uuid4(),
                patient_id=patient,
                practitioner_id=doctor,
                service="consultation",
                created_by=uuid.uuid4(),
                at=u.clock(),
            )
            await u.patients.remember(patient, None)
            u.add(AppointmentCancelled(**_fields(booked)), aggregate_id=booked.id)
            raise RuntimeError("the use case fails after writing")
    async with side.units.read() as u:
        assert await u.appointments.get(wanted.id) is None
        assert await u.appointments.of_patient(patient, 10) == []
        assert await u.waitlist.of_patient(patient) == []
        assert await u.patients.find(patient) is None
    assert await side.published() == []
    await _book(side, wanted)  # its time is free
    async with side.units.uow() as u:
        u.add(AppointmentCancelled(**_fields(booked)), aggregate_id=booked.id)
        assert u.clock() == NOW
    assert await side.published() == [AppointmentCancelled.type]


async def test_the_replica_keeps_an_account_once_known(side: Side) -> None:
    patient, account = uuid.uuid4(), uuid.uuid4()
    async with side.units.uow() as u:
        await u.patients.remember(patient, None)
        first = await u.patients.find(patient)
        await u.patients.remember(patient, account)
        await u.patients.remember(patient, None)  # a later event without it
    async with side.units.read() as u:
        found = await u.patients.find(patient)
    assert first is not None and first.account_id is None
    assert found is not None and (found.patient_id, found.account_id) == (patient, account)
