"""One contract for the laboratory's ports, run against PostgreSQL (``his.laboratory.store``)
and the in-memory fakes (``his.testing.laboratory``) alike: what the use cases' unit tests
assume of the fake holds of the database.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from his.events.laboratory import LabOrderCancelled
from his.kernel import migrations
from his.kernel.clock import FakeClock
from his.kernel.db import Database
from his.laboratory.domain import Flag, Priority, Result, Status
from his.laboratory.ports import LabUnits
from his.laboratory.store import LabStore
from his.testing.laboratory import FakeLab, seeded_catalogue

#: Half a minute before the new year: the moment every unit of work here says it is.
NOW = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC)


@dataclass
class Side:
    units: LabUnits
    #: The types of the events committed so far, in commit order.
    published: Callable[[], Awaitable[list[str]]]


@pytest.fixture(params=["memory", "postgres"])
async def side(request: pytest.FixtureRequest, admin_dsn: str) -> AsyncIterator[Side]:
    clock = FakeClock(NOW)
    if request.param == "memory":
        fake = FakeLab(clock)

        async def in_memory() -> list[str]:
            return [e.type for e in fake.published]

        yield Side(fake, in_memory)
        return
    dsn = await migrations.provision(admin_dsn, "laboratory", "pw-laboratory-contract")
    await migrations.upgrade(admin_dsn, "laboratory")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(
            "TRUNCATE laboratory.lab_result, laboratory.lab_order_test, laboratory.lab_order, "
            "laboratory.known_patient, laboratory.outbox"
        )
    finally:
        await conn.close()
    db = Database(dsn, schema="laboratory", max_size=4, clock=clock)
    await db.open()

    async def in_outbox() -> list[str]:
        return [r[0] for r in await db.pool.fetch("SELECT subject FROM outbox ORDER BY id")]

    try:
        yield Side(LabStore(db), in_outbox)
    finally:
        await db.close()


async def _place(side: Side, *tests: str, patient: uuid.UUID | None = None, at: datetime = NOW) -> uuid.UUID:
    oid = uuid.uuid4()
    async with side.units.uow() as u:
        order = await u.orders.add(
            order_id=oid,
            patient_id=patient or uuid.uuid4(),
            ordered_by=uuid.uuid4(),
            priority=Priority.URGENT,
            tests=tests,
            at=at,
        )
    assert order.id == oid
    return oid


async def test_the_catalogue_is_the_seeded_one(side: Side) -> None:
    async with side.units.read() as u:
        assert await u.orders.catalogue() == seeded_catalogue()


async def test_an_order_is_kept_as_placed(side: Side) -> None:
    patient = uuid.uuid4()
    oid = await _place(side, "K", "CRP", "HGB", patient=patient)
    async with side.units.read() as u:
        got = await u.orders.get(oid)
        assert await u.orders.get(uuid.uuid4()) is None
    assert got is not None
    assert (got.patient_id, got.priority, got.status, got.version) == (patient, Priority.URGENT, Status.PLACED, 1)
    assert got.tests == ("K", "CRP", "HGB")  # in the order they were asked for
    assert got.placed_at == NOW and got.collected_at is None and got.results == ()


async def test_a_status_change_stamps_it_and_counts_a_version(side: Side) -> None:
    oid = await _place(side, "K")
    actor, later = uuid.uuid4(), NOW + timedelta(minutes=5)
    async with side.units.uow() as u:
        order = await u.orders.get(oid, lock=True)
        assert order is not None
        collected = await u.orders.set_status(order, Status.COLLECTED, actor, later)
    assert (collected.status, collected.version, collected.collected_at) == (Status.COLLECTED, 2, later)
    async with side.units.read() as u:
        assert await u.orders.get(oid) == collected


async def test_results_come_back_in_the_order_of_the_tests_once_resulted(side: Side) -> None:
    oid = await _place(side, "K", "CRP")
    tech = uuid.uuid4()
    crp = Result("CRP", "2", "mg/L", None, None, Flag.NORMAL)
    k = Result("K", "4.2", "mmol/L", None, None, Flag.NORMAL)
    async with side.units.uow() as u:
        order = await u.orders.get(oid, lock=True)
        assert order is not None
        for step in (Status.COLLECTED, Status.IN_PROGRESS):
            order = await u.orders.set_status(order, step, tech, NOW)
        catalogue = await u.orders.catalogue()
        await u.orders.add_results(oid, [crp, k], catalogue, NOW)
        assert (await u.orders.with_results([order]))[0].results == ()  # not resulted yet
        await u.orders.set_status(order, Status.RESULTED, tech, NOW)
    async with side.units.read() as u:
        order = await u.orders.get(oid)
        assert order is not None and order.results == ()  # get: without results
        [full] = await u.orders.with_results([order])
    assert full.results == (k, crp)


async def test_find_filters_and_lists_the_newest_first(side: Side) -> None:
    patient = uuid.uuid4()
    older = await _place(side, "K", patient=patient, at=NOW - timedelta(days=1))
    newer = await _place(side, "CRP", patient=patient)
    twin = await _place(side, "HGB", patient=patient)  # placed at the same moment as newer
    elsewhere = await _place(side, "K")
    async with side.units.uow() as u:
        order = await u.orders.get(older, lock=True)
        assert order is not None
        await u.orders.set_status(order, Status.CANCELLED, uuid.uuid4(), NOW)
    async with side.units.read() as u:
        everything = await u.orders.find(patient_id=patient, status=None, limit=10)
        assert [o.id for o in everything] == [*sorted([newer, twin]), older]
        assert [o.id for o in await u.orders.find(patient_id=patient, status=None, limit=1)] == [min(newer, twin)]
        cancelled = await u.orders.find(patient_id=None, status=Status.CANCELLED, limit=10)
        assert [o.id for o in cancelled] == [older]
        mine = await u.orders.find(patient_id=None, status=None, limit=10, ordered_by=everything[0].ordered_by)
        assert [o.id for o in mine] == [everything[0].id]
        assert elsewhere in {o.id for o in await u.orders.find(patient_id=None, status=None, limit=10)}


async def test_a_unit_that_fails_leaves_nothing_and_publishes_nothing(side: Side) -> None:
    patient = uuid.uuid4()
    with pytest.raises(RuntimeError):
        async with side.units.uow() as u:
            await u.orders.add(
                order_id=uuid.uuid4(),
                patient_id=patient,
                ordered_by=uuid.uuid4(),
                priority=Priority.ROUTINE,
                tests=["K"],
                at=NOW,
            )
            await u.patients.remember(patient, None)
            u.add(LabOrderCancelled(order_id=uuid.uuid4(), patient_id=patient, cancelled_at=NOW), aggregate_id=patient)
            raise RuntimeError("the use case fails after writing")
    async with side.units.read() as u:
        assert await u.orders.find(patient_id=patient, status=None, limit=10) == []
        assert await u.patients.find(patient) is None
    assert await side.published() == []
    async with side.units.uow() as u:
        u.add(LabOrderCancelled(order_id=uuid.uuid4(), patient_id=patient, cancelled_at=NOW), aggregate_id=patient)
        assert u.clock() == NOW
    assert await side.published() == [LabOrderCancelled.type]


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
