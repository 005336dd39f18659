"""One contract for the admissions service's ports, run against PostgreSQL (``his.admissions.store``)
and the in-memory fakes (``his.testing.admissions``) alike: what the use cases' unit tests assume
of the fake holds of the database.

Both sides start empty. Every unit of work runs half an hour after midnight of a new year's day
in Berlin (the UTC date is still the old year's); the moments given to the repositories are
that one and others around it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import cast

import asyncpg
import pytest
from asyncpg.exceptions import CharacterNotInRepertoireError

from his.admissions.domain import (
    Admission,
    AdmissionStatus,
    AlreadyAdmittedError,
    Bed,
    BedState,
    BedStay,
    BedTakenError,
    Ward,
    WardChanges,
    bed_labels,
)
from his.admissions.ports import AdmissionsUnits
from his.admissions.store import AdmissionsStore
from his.events.admissions import WardUpdated
from his.kernel import migrations
from his.kernel.clock import FakeClock
from his.kernel.db import Database
from his.testing.admissions import FakeAdmissions
from tests.support.calendar import HARD_DATES

HARD = HARD_DATES[0]
#: The moment every unit of work here says it is.
NOW = HARD.at(0, 30)
TABLES = "bed_charge, bed_stay, admission, bed, room, ward, outbox, inbox"
STAFF = uuid.uuid4()


@dataclass
class Side:
    units: AdmissionsUnits
    #: The types of the events committed so far, in commit order.
    published: Callable[[], Awaitable[list[str]]]
    #: What a CHECK and a foreign key refuse with.
    check: type[Exception]
    foreign_key: type[Exception]


@pytest.fixture(params=["memory", "postgres"])
async def side(request: pytest.FixtureRequest, admin_dsn: str) -> AsyncIterator[Side]:
    clock = FakeClock(NOW)
    if request.param == "memory":
        fake = FakeAdmissions(clock)

        async def in_memory() -> list[str]:
            return [e.type for e in fake.published]

        yield Side(fake, in_memory, ValueError, ValueError)
        return
    dsn = await migrations.provision(admin_dsn, "admissions", "pw-admissions-contract")
    await migrations.upgrade(admin_dsn, "admissions")
    await _empty(admin_dsn)
    db = Database(dsn, schema="admissions", max_size=4, clock=clock)
    await db.open()

    async def in_outbox() -> list[str]:
        return [r[0] for r in await db.pool.fetch("SELECT subject FROM outbox ORDER BY id")]

    try:
        yield Side(AdmissionsStore(db), in_outbox, asyncpg.CheckViolationError, asyncpg.ForeignKeyViolationError)
    finally:
        await db.close()
        await _empty(admin_dsn)  # the next file's tests find the schema as a fresh one


async def _empty(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"TRUNCATE {', '.join(f'admissions.{t.strip()}' for t in TABLES.split(','))}")
    finally:
        await conn.close()


async def _ward(
    side: Side,
    beds: int = 2,
    rooms: int | None = None,
    *,
    name: str = "Ward",
    kind: str = "general",
    rate: str = "1000.00",
    at: datetime = NOW,
) -> Ward:
    async with side.units.uow() as u:
        return await u.wards.add(
            ward_id=uuid.uuid4(),
            name=name,
            ward_type=kind,
            daily_rate=Decimal(rate),
            currency="TRY",
            created_by=STAFF,
            beds=bed_labels(beds, rooms),
            at=at,
        )


async def _beds(side: Side, ward: Ward) -> list[Bed]:
    async with side.units.read() as u:
        return await u.beds.find(ward.id, None, 500)


async def _admit(
    side: Side, ward: Ward, bed: Bed, *, patient: uuid.UUID | None = None, at: datetime = NOW
) -> Admission:
    async with side.units.uow() as u:
        return await u.admissions.add(
            admission_id=uuid.uuid4(),
            patient_id=patient or uuid.uuid4(),
            practitioner_id=uuid.uuid4(),
            ward_id=ward.id,
            bed_id=bed.id,
            admitted_at=at,
            admitted_by=STAFF,
        )


async def _discharge(side: Side, admission: Admission, at: datetime = NOW) -> Admission:
    async with side.units.uow() as u:
        return await u.admissions.discharge(admission.id, at, STAFF)


async def _charge(side: Side, admission: Admission, night: date, amount: str = "1000.00") -> bool:
    async with side.units.uow() as u:
        charge = await u.charges.add(
            charge_id=uuid.uuid4(),
            admission_id=admission.id,
            night=night,
            ward_id=admission.ward_id,
            ward_type="general",
            amount=Decimal(amount),
            currency="TRY",
            at=NOW,
        )
    return charge is not None


# --- wards ---------------------------------------------------------------------------------------


async def test_a_ward_is_kept_with_its_rooms_and_beds_all_available(side: Side) -> None:
    ward = await _ward(side, 12, 12, name="Surgery", kind="surgery", rate="950.5")
    assert ward == Ward(ward.id, "Surgery", "surgery", Decimal("950.50"), "TRY", NOW, 1, None)
    async with side.units.read() as u:
        assert await u.wards.get(ward.id) == ward
        assert await u.wards.get(uuid.uuid4()) is None
        # Shortest first, then alphabetically: R2 before R10.
        assert await u.wards.rooms(ward.id) == [f"R{n}" for n in range(1, 13)]
        assert await u.wards.rooms(uuid.uuid4()) == []
        beds = await u.beds.find(ward.id, None, 500)
        counts = await u.beds.counts([ward.id])
    assert [(b.room, b.label) for b in beds] == [(f"R{n}", f"R{n}-B1") for n in range(1, 13)]
    assert {(b.ward_id, b.state, b.version, b.updated_at) for b in beds} == {(ward.id, BedState.AVAILABLE, 1, NOW)}
    assert len({b.room_id for b in beds}) == 12
    assert counts == {ward.id: {"available": 12, "occupied": 0, "cleaning": 0, "closed": 0, "isolation": 0}}


async def test_wards_are_listed_by_name_then_id(side: Side) -> None:
    small = await _ward(side, 1, name="a ward")
    twins = sorted([await _ward(side, 3, name="B ward"), await _ward(side, 3, name="B ward")], key=lambda w: w.id)
    first = await _ward(side, name="A ward")
    nowhere = uuid.uuid4()
    async with side.units.read() as u:
        listed = await u.wards.all()
        few = await u.wards.all(limit=2)
        counts = await u.beds.counts([twins[1].id, small.id, nowhere])
    assert listed == [first, *twins, small]  # by code point (the database's collation is C): B before a
    assert few == [first, twins[0]]
    none = {"available": 0, "occupied": 0, "cleaning": 0, "closed": 0, "isolation": 0}
    assert counts == {twins[1].id: {**none, "available": 3}, small.id: {**none, "available": 1}, nowhere: none}


async def test_a_ward_is_corrected_field_by_field_and_counts_a_version(side: Side) -> None:
    ward = await _ward(side, rate="1000.00")
    later, actor = NOW + timedelta(hours=3), uuid.uuid4()
    async with side.units.uow() as u:
        locked = await u.wards.get(ward.id, lock=True)
        assert locked == ward
        renamed = await u.wards.update(ward.id, WardChanges(name="Surgery"), actor, later)
    assert renamed == Ward(ward.id, "Surgery", "general", Decimal("1000.00"), "TRY", NOW, 2, later)
    async with side.units.uow() as u:
        repriced = await u.wards.update(
            ward.id, WardChanges(ward_type="icu", daily_rate=Decimal("12.34"), currency="EUR"), actor, later
        )
    assert repriced == Ward(ward.id, "Surgery", "icu", Decimal("12.34"), "EUR", NOW, 3, later)
    async with side.units.read() as u:
        assert await u.wards.get(ward.id) == repriced


@pytest.mark.parametrize(
    "changes",
    [
        WardChanges(name=""),
        WardChanges(name="x" * 201),
        WardChanges(ward_type="General Ward"),
        WardChanges(daily_rate=Decimal(-1)),
        WardChanges(currency="try"),
    ],
    ids=["empty name", "long name", "type", "negative rate", "currency"],
)
async def test_what_a_ward_checks_is_refused(side: Side, changes: WardChanges) -> None:
    """A ward's CHECKs, on a new ward and on a correction alike; nothing is kept."""
    ward = await _ward(side)
    with pytest.raises(side.check):
        async with side.units.uow() as u:
            await u.wards.update(ward.id, changes, STAFF, NOW)
    with pytest.raises(side.check):
        async with side.units.uow() as u:
            await u.wards.add(
                ward_id=uuid.uuid4(),
                name=changes.name if changes.name is not None else "Ward",
                ward_type=changes.ward_type or "general",
                daily_rate=changes.daily_rate if changes.daily_rate is not None else Decimal(1),
                currency=changes.currency or "TRY",
                created_by=STAFF,
                beds=bed_labels(1, None),
                at=NOW,
            )
    async with side.units.read() as u:
        assert await u.wards.all() == [ward]


async def test_text_with_a_nul_character_is_refused_as_the_database_refuses_it(side: Side) -> None:
    """PostgreSQL cannot store a NUL character: both sides raise its error (an ``asyncpg.DataError``,
    which the services answer 422)."""
    ward = await _ward(side)
    with pytest.raises(CharacterNotInRepertoireError):
        await _ward(side, name="nul\x00byte")
    with pytest.raises(CharacterNotInRepertoireError):
        async with side.units.uow() as u:
            await u.wards.update(ward.id, WardChanges(name="nul\x00byte"), STAFF, NOW)
    async with side.units.read() as u:
        assert await u.wards.all() == [ward]


# --- beds ----------------------------------------------------------------------------------------


async def test_beds_change_state_and_are_found_by_ward_and_state(side: Side) -> None:
    ward, other = await _ward(side, 12), await _ward(side, 1, kind="icu")
    beds, [icu_bed] = await _beds(side, ward), await _beds(side, other)
    assert [b.label for b in beds] == [f"R1-B{n}" for n in range(1, 13)]  # R1-B2 before R1-B10
    later = NOW + timedelta(minutes=5)
    async with side.units.uow() as u:
        closed = await u.beds.set_state(beds[0].id, BedState.CLOSED, later)
        await u.beds.set_state(beds[2].id, BedState.ISOLATION, later)
        locked = await u.beds.get(beds[0].id, lock=True)
    assert closed == Bed(beds[0].id, ward.id, beds[0].room_id, "R1", "R1-B1", BedState.CLOSED, 2, later)
    assert locked == closed
    async with side.units.read() as u:
        assert await u.beds.get(beds[0].id) == closed
        assert await u.beds.get(uuid.uuid4()) is None
        available = await u.beds.find(ward.id, BedState.AVAILABLE, 500)
        first_two = await u.beds.find(ward.id, BedState.AVAILABLE, 2)
        assert [b.id for b in await u.beds.find(None, BedState.CLOSED, 500)] == [closed.id]
        everywhere = await u.beds.find(None, None, 500)
        counts = await u.beds.counts([ward.id, other.id])
    assert [b.label for b in available] == [b.label for b in beds if b.label not in ("R1-B1", "R1-B3")]
    assert [b.label for b in first_two] == ["R1-B2", "R1-B4"]
    by_ward = {ward.id: [b.id for b in beds], other.id: [icu_bed.id]}
    assert [b.id for b in everywhere] == [b for w in sorted(by_ward) for b in by_ward[w]]  # by ward, then label
    assert counts[ward.id] == {"available": 10, "occupied": 0, "cleaning": 0, "closed": 1, "isolation": 1}
    assert counts[other.id]["available"] == 1


async def test_a_free_bed_is_claimed_first_by_label(side: Side) -> None:
    ward, full = await _ward(side, 12), await _ward(side, 1)
    beds, [cleaning] = await _beds(side, ward), await _beds(side, full)
    async with side.units.uow() as u:
        await u.beds.set_state(beds[0].id, BedState.OCCUPIED, NOW)
        await u.beds.set_state(cleaning.id, BedState.CLEANING, NOW)
    async with side.units.uow() as u:
        assert await u.beds.claim_free(ward.id) == beds[1].id  # R1-B2, not R1-B10
        assert await u.beds.claim_free(full.id) is None
        assert await u.beds.claim_free(uuid.uuid4()) is None


async def test_a_bed_state_outside_the_five_is_refused(side: Side) -> None:
    ward = await _ward(side, 1)
    [bed] = await _beds(side, ward)
    with pytest.raises(side.check):
        async with side.units.uow() as u:
            await u.beds.set_state(bed.id, cast(BedState, "broken"), NOW)
    assert await _beds(side, ward) == [bed]


# --- admissions ----------------------------------------------------------------------------------


async def test_an_admission_is_kept_with_its_first_stay(side: Side) -> None:
    ward = await _ward(side)
    bed = (await _beds(side, ward))[1]
    patient, at = uuid.uuid4(), NOW - timedelta(days=2)
    admission = await _admit(side, ward, bed, patient=patient, at=at)
    assert (admission.patient_id, admission.ward_id, admission.bed_id, admission.status) == (
        patient,
        ward.id,
        bed.id,
        AdmissionStatus.ACTIVE,
    )
    assert (admission.admitted_at, admission.admitted_by, admission.version) == (at, STAFF, 1)
    assert (admission.discharged_at, admission.discharged_by) == (None, None)
    async with side.units.uow() as u:
        assert await u.admissions.get(admission.id, lock=True) == admission
    async with side.units.read() as u:
        assert await u.admissions.get(admission.id) == admission
        assert await u.admissions.get(uuid.uuid4()) is None
        assert await u.admissions.active_of(patient) == admission.id
        assert await u.admissions.active_of(uuid.uuid4()) is None
        assert await u.admissions.stays(admission.id) == [BedStay(ward.id, bed.id, bed.label, at, None)]
        assert await u.admissions.stays(uuid.uuid4()) == []


async def test_a_patient_is_admitted_once_at_a_time(side: Side) -> None:
    ward = await _ward(side, 3)
    first, second, third = await _beds(side, ward)
    patient = uuid.uuid4()
    admission = await _admit(side, ward, first, patient=patient)
    with pytest.raises(AlreadyAdmittedError):
        await _admit(side, ward, second, patient=patient)
    async with side.units.read() as u:
        assert [a.id for a in await u.admissions.find(patient, None, 10)] == [admission.id]
    await _discharge(side, admission)
    again = await _admit(side, ward, third, patient=patient)  # once discharged, the patient comes back
    async with side.units.read() as u:
        assert await u.admissions.active_of(patient) == again.id


async def test_a_bed_holds_one_active_admission(side: Side) -> None:
    ward = await _ward(side, 2)
    held, free = await _beds(side, ward)
    holder = await _admit(side, ward, held)
    with pytest.raises(BedTakenError):
        await _admit(side, ward, held)
    other = await _admit(side, ward, free)
    with pytest.raises(BedTakenError):
        async with side.units.uow() as u:
            await u.admissions.move(other.id, ward.id, held.id, NOW)
    async with side.units.read() as u:
        assert await u.admissions.get(other.id) == other  # not moved
        assert [s.bed_id for s in await u.admissions.stays(other.id)] == [free.id]
        assert {a.id for a in await u.admissions.find(None, None, 10)} == {holder.id, other.id}
    await _discharge(side, holder)
    async with side.units.uow() as u:  # the bed's last admission is over: it takes another
        moved = await u.admissions.move(other.id, ward.id, held.id, NOW)
    assert moved.bed_id == held.id


async def test_a_move_ends_the_open_stay_and_begins_another(side: Side) -> None:
    general, icu = await _ward(side, 2), await _ward(side, 1, kind="icu")
    [bed] = await _beds(side, icu)
    start = NOW - timedelta(days=1)
    admission = await _admit(side, general, (await _beds(side, general))[0], at=start)
    later = NOW + timedelta(hours=1)
    async with side.units.uow() as u:
        moved = await u.admissions.move(admission.id, icu.id, bed.id, later)
    assert moved == Admission(
        admission.id,
        admission.patient_id,
        admission.practitioner_id,
        icu.id,
        bed.id,
        AdmissionStatus.ACTIVE,
        start,
        None,
        STAFF,
        None,
        2,
    )
    async with side.units.read() as u:
        stays = await u.admissions.stays(admission.id)
        assert await u.admissions.get(admission.id) == moved
    assert stays == [
        BedStay(general.id, admission.bed_id, "R1-B1", start, later),
        BedStay(icu.id, bed.id, "R1-B1", later, None),
    ]


async def test_a_discharge_ends_the_admission_and_its_stay_never_before_they_began(side: Side) -> None:
    ward = await _ward(side, 2)
    admission = await _admit(side, ward, (await _beds(side, ward))[0])
    by = uuid.uuid4()
    async with side.units.uow() as u:
        done = await u.admissions.discharge(admission.id, NOW - timedelta(minutes=1), by)  # a clock gone back
    assert (done.status, done.discharged_at, done.discharged_by, done.version) == (
        AdmissionStatus.DISCHARGED,
        NOW,
        by,
        2,
    )
    async with side.units.read() as u:
        assert await u.admissions.get(admission.id) == done
        assert await u.admissions.active_of(admission.patient_id) is None
        [stay] = await u.admissions.stays(admission.id)
    assert (stay.started_at, stay.ended_at) == (NOW, NOW)
    later = await _admit(side, ward, (await _beds(side, ward))[1], at=NOW + timedelta(hours=1))
    async with side.units.uow() as u:
        gone = await u.admissions.discharge(later.id, NOW + timedelta(hours=5), by)
        [stay] = await u.admissions.stays(later.id)
    assert gone.discharged_at == NOW + timedelta(hours=5) == stay.ended_at


async def test_admissions_are_found_latest_first_and_due_earliest_first(side: Side) -> None:
    ward = await _ward(side, 6)
    beds = await _beds(side, ward)
    patient = uuid.uuid4()
    old = await _admit(side, ward, beds[0], patient=patient, at=NOW - timedelta(days=3))
    await _discharge(side, old, NOW - timedelta(days=2))
    mine = await _admit(side, ward, beds[1], patient=patient, at=NOW - timedelta(days=1))
    twins = sorted([await _admit(side, ward, beds[n], at=NOW - timedelta(hours=2)) for n in (2, 3)], key=lambda a: a.id)
    fresh = await _admit(side, ward, beds[4], at=NOW)
    async with side.units.read() as u:
        everyone = await u.admissions.find(None, None, 10)
        active = await u.admissions.find(None, True, 10)
        over = await u.admissions.find(None, False, 10)
        of_patient = await u.admissions.find(patient, None, 10)
        first = await u.admissions.find(None, None, 2)
        due = await u.admissions.due(NOW)
        due_earlier = await u.admissions.due(NOW - timedelta(hours=2))
    ids = [a.id for a in everyone]
    assert ids == [fresh.id, *[t.id for t in twins], mine.id, old.id]
    assert [a.id for a in active] == ids[:4]
    assert [a.id for a in over] == [old.id]
    assert [a.id for a in of_patient] == [mine.id, old.id]
    assert [a.id for a in first] == ids[:2]
    assert due == [mine.id, *[t.id for t in twins]]  # begun before NOW, not discharged; earliest first
    assert due_earlier == [mine.id]


# --- bed charges ---------------------------------------------------------------------------------


async def test_a_night_is_charged_once(side: Side) -> None:
    ward = await _ward(side, 2)
    admission = await _admit(side, ward, (await _beds(side, ward))[0], at=NOW - timedelta(days=3))
    other = await _admit(side, ward, (await _beds(side, ward))[1], at=NOW - timedelta(days=3))
    nights = [HARD.day - timedelta(days=n) for n in (3, 2, 1)]
    cid = uuid.uuid4()
    async with side.units.uow() as u:
        charge = await u.charges.add(
            charge_id=cid,
            admission_id=admission.id,
            night=nights[1],
            ward_id=ward.id,
            ward_type="general",
            amount=Decimal("1000.005"),
            currency="TRY",
            at=NOW,
        )
    assert charge is not None
    assert (charge.id, charge.admission_id, charge.night, charge.ward_id, charge.ward_type) == (
        cid,
        admission.id,
        nights[1],
        ward.id,
        "general",
    )
    assert (charge.amount, charge.currency, charge.posted_at) == (Decimal("1000.01"), "TRY", NOW)
    assert not await _charge(side, admission, nights[1], "5.00")  # the night is charged: nothing changes
    assert await _charge(side, admission, nights[2])
    assert await _charge(side, admission, nights[0])
    assert await _charge(side, other, nights[1])  # another admission's night
    async with side.units.read() as u:
        charged = await u.charges.of(admission.id)
        assert await u.charges.nights(admission.id) == set(nights)
        assert await u.charges.count(admission.id) == 3
        assert await u.charges.count(uuid.uuid4()) == 0
        assert await u.charges.of(uuid.uuid4()) == []
    assert [c.night for c in charged] == nights  # by night
    assert charged[1] == charge


async def test_a_charge_is_of_an_admission_and_a_ward_there_are_and_never_negative(side: Side) -> None:
    ward = await _ward(side, 1)
    admission = await _admit(side, ward, (await _beds(side, ward))[0])
    ghost = replace(admission, id=uuid.uuid4())
    with pytest.raises(side.foreign_key):
        await _charge(side, ghost, HARD.day)
    with pytest.raises(side.check):
        await _charge(side, admission, HARD.day, "-0.01")
    async with side.units.read() as u:
        assert await u.charges.count(admission.id) == 0


# --- units of work -------------------------------------------------------------------------------


async def test_a_unit_that_fails_leaves_nothing_and_publishes_nothing(side: Side) -> None:
    ward = await _ward(side, 2)
    beds = await _beds(side, ward)
    admission = await _admit(side, ward, beds[0], at=NOW - timedelta(days=1))
    patient, new_ward = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(RuntimeError):
        async with side.units.uow() as u:
            await u.wards.add(
                ward_id=new_ward,
                name="Never kept",
                ward_type="icu",
                daily_rate=Decimal(1),
                currency="TRY",
                created_by=STAFF,
                beds=bed_labels(1, None),
                at=NOW,
            )
            await u.wards.update(ward.id, WardChanges(name="Renamed"), STAFF, NOW)
            await u.beds.set_state(beds[1].id, BedState.OCCUPIED, NOW)
            await u.admissions.move(admission.id, ward.id, beds[1].id, NOW)
            [new_bed] = await u.beds.find(new_ward, None, 10)
            await u.admissions.add(
                admission_id=uuid.uuid4(),
                patient_id=patient,
                practitioner_id=uuid.uuid4(),
                ward_id=new_ward,
                bed_id=new_bed.id,
                admitted_at=NOW,
                admitted_by=STAFF,
            )
            await u.charges.add(
                charge_id=uuid.uuid4(),
                admission_id=admission.id,
                night=HARD.day - timedelta(days=1),
                ward_id=ward.id,
                ward_type="general",
                amount=Decimal(1),
                currency="TRY",
                at=NOW,
            )
            await u.admissions.discharge(admission.id, NOW, STAFF)
            u.add(
                WardUpdated(
                    ward_id=ward.id, fields=["name"], ward_type="general", daily_rate=Decimal(1), currency="TRY"
                ),
                aggregate_id=ward.id,
            )
            raise RuntimeError("the use case fails after writing")
    async with side.units.read() as u:
        assert await u.wards.get(new_ward) is None
        assert await u.wards.all() == [ward]
        assert await u.beds.find(ward.id, None, 10) == beds
        assert await u.admissions.get(admission.id) == admission
        assert await u.admissions.find(None, None, 10) == [admission]
        assert await u.admissions.active_of(patient) is None
        assert [s.ended_at for s in await u.admissions.stays(admission.id)] == [None]
        assert await u.charges.count(admission.id) == 0
    assert await side.published() == []
    async with side.units.uow() as u:
        u.add(
            WardUpdated(ward_id=ward.id, fields=["name"], ward_type="general", daily_rate=Decimal(1), currency="TRY"),
            aggregate_id=ward.id,
        )
        assert u.clock() == NOW
    assert await side.published() == [WardUpdated.type]


def test_the_hospitals_date_is_not_the_utc_date() -> None:
    assert NOW.date() == date(2027, 12, 31) and date(2028, 1, 1) == HARD.day
