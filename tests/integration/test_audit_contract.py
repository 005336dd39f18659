"""One contract for the audit service's ports, run against PostgreSQL (``his.audit.store``) and
the in-memory fakes (``his.testing.audit``) alike: what the use cases' unit tests assume of the
fake holds of the database.

Both sides start with an empty chain; the chain they build is read whole, as the verifier reads
it (``PgChain.rows`` and ``AuditState.rows``), and walked by ``his.audit.domain.verify``. Every
unit of work runs half an hour after midnight of a new year's day in Berlin (the UTC date is
still the old year's). The PostgreSQL side empties the audit tables behind it, so the next
file's tests find a chain that starts at 1 and verifies.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import cast

import asyncpg
import pytest
from asyncpg.exceptions import CharacterNotInRepertoireError, UniqueViolationError

from his.audit.domain import GENESIS, ChainRow, Entry, NewRecord, link, verify
from his.audit.ports import AuditUnits
from his.audit.store import ROW, AuditStore, PgChain
from his.events.patients import InvitationRedeemed
from his.kernel import migrations
from his.kernel.clock import FakeClock
from his.kernel.db import Database
from his.testing.audit import FakeAudit
from tests.support.calendar import HARD_DATES
from tests.unit.test_audit_chain import PINNED_HASHES, pinned_rows

HARD = HARD_DATES[0]
#: The moment every unit of work here says it is.
NOW = HARD.at(0, 30)
TABLES = "audit.audit_log, audit.patient_account, audit.outbox, audit.inbox"
REDEEMED = "his.patients.invitation.redeemed.v1"


@dataclass
class Side:
    units: AuditUnits
    #: The whole chain in ``seq`` order, as the verifier reads it.
    rows: Callable[[], Awaitable[list[ChainRow]]]
    #: The types of the events committed so far, in commit order.
    published: Callable[[], Awaitable[list[str]]]
    #: Puts a row in the chain as it is, as a record written before ``flagged`` existed.
    put: Callable[[ChainRow], Awaitable[None]]


@pytest.fixture(params=["memory", "postgres"])
async def side(request: pytest.FixtureRequest, admin_dsn: str) -> AsyncIterator[Side]:
    clock = FakeClock(NOW)
    if request.param == "memory":
        fake = FakeAudit(clock)

        async def in_memory() -> list[ChainRow]:
            return fake.state.rows()

        async def published() -> list[str]:
            return [e.type for e in fake.published]

        async def put_in_memory(row: ChainRow) -> None:
            fake.state.chain.append(row)

        yield Side(fake, in_memory, published, put_in_memory)
        return
    dsn = await migrations.provision(admin_dsn, "audit", "pw-audit-test")
    await migrations.upgrade(admin_dsn, "audit")
    await _empty(admin_dsn)
    db = Database(dsn, schema="audit", max_size=4, clock=clock)
    await db.open()

    async def in_table() -> list[ChainRow]:
        async with db.pool.acquire() as conn:
            return [r async for r in PgChain(conn).rows()]

    async def in_outbox() -> list[str]:
        return [r[0] for r in await db.pool.fetch("SELECT subject FROM outbox ORDER BY id")]

    async def put_in_table(row: ChainRow) -> None:
        await db.pool.execute(
            f"INSERT INTO audit_log ({ROW}) VALUES ({', '.join(f'${i}' for i in range(1, ROW.count(',') + 2))})",
            *(row.get(k) for k in ROW.replace(",", " ").split()),
        )

    try:
        yield Side(AuditStore(db), in_table, in_outbox, put_in_table)
    finally:
        await db.close()
        await _empty(admin_dsn)


async def _empty(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"TRUNCATE {TABLES}")
    finally:
        await conn.close()


def _record(patient: uuid.UUID | None = None, **kw: object) -> NewRecord:
    made = NewRecord(
        event_id=uuid.uuid4(),
        at=NOW - timedelta(seconds=5),
        source="his.patients",
        actor_id=uuid.uuid4(),
        actor_roles=("DOCTOR", "NURSE"),
        patient_id=patient or uuid.uuid4(),
        action="read",
        resource="patient",
        purpose="care",
        outcome="allowed",
        trace_id="0af7651916cd43dd8448eb211c80319c",
    )
    return replace(made, **kw)  # type: ignore[arg-type]


async def _append(side: Side, *records: NewRecord) -> int:
    async with side.units.uow() as u:
        if len(records) == 1:
            return await u.chain.append(records[0])
        return await u.chain.append_many(records)


async def _trail(side: Side, patient: uuid.UUID, *, before: int | None = None, limit: int = 50) -> list[Entry]:
    async with side.units.read() as u:
        return await u.chain.trail(patient, before=before, limit=limit)


def _entry(seq: int, r: NewRecord) -> Entry:
    return Entry(seq, r.at, r.source, r.actor_id, r.actor_roles, r.action, r.resource, r.purpose, r.outcome, r.flagged)


# --- the chain -----------------------------------------------------------------------------------


async def test_appends_take_consecutive_seqs_from_the_head_each_linked_to_the_one_before(side: Side) -> None:
    first = _record()
    batch = [_record(producer_seq=1), _record(trace_id=None, patient_id=None), _record(actor_roles=())]
    batch[1] = replace(batch[1], account_id=uuid.uuid4())  # a change to an account: no patient
    last = _record(action="break_glass", purpose="emergency", flagged=True)
    assert await _append(side, first) == 1
    assert await _append(side, *batch) == 4
    async with side.units.uow() as u:
        assert await u.chain.append_many([]) == 4  # nothing appended: the head's seq
    assert await _append(side, last) == 5
    rows = await side.rows()
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["prev_hash"] == GENESIS
    for before, after in itertools.pairwise(rows):
        assert after["prev_hash"] == before["hash"]
    for row, record in zip(rows, [first, *batch, last], strict=True):
        assert row["hash"] == link(row["prev_hash"], record.content(row["seq"]))
        stored = {k: v for k, v in row.items() if k not in ("prev_hash", "hash")}
        assert stored == {"producer_seq": None, "account_id": None} | record.content(row["seq"])  # with or without
    verdict = verify(rows)
    assert verdict.ok and verdict.checked == 5, verdict


async def test_the_records_hash_to_the_bytes_the_chain_has_always_computed(side: Side) -> None:
    records = [
        NewRecord(**({k: v for k, v in row.items() if k != "seq"} | {"actor_roles": tuple(row["actor_roles"])}))
        for row in pinned_rows()
    ]
    await _append(side, records[0])
    await _append(side, *records[1:])
    rows = await side.rows()
    assert tuple(r["hash"].hex() for r in rows) == PINNED_HASHES
    assert verify(rows).ok


async def test_a_patients_trail_is_newest_first_and_pages_below_before(side: Side) -> None:
    patient, other = uuid.uuid4(), uuid.uuid4()
    mine: dict[int, NewRecord] = {}
    for i in range(7):
        r = _record(patient if i % 3 != 1 else other, at=NOW - timedelta(minutes=10 - i))
        seq = await _append(side, r)
        if r.patient_id == patient:
            mine[seq] = r
    assert sorted(mine) == [1, 3, 4, 6, 7]
    newest_first = [_entry(seq, mine[seq]) for seq in sorted(mine, reverse=True)]
    assert await _trail(side, patient) == newest_first
    assert await _trail(side, patient, limit=2) == newest_first[:2]
    assert await _trail(side, patient, before=6, limit=2) == newest_first[2:4]  # 6 itself is not below 6
    assert await _trail(side, patient, before=4, limit=2) == newest_first[3:]
    assert await _trail(side, patient, before=5, limit=50) == newest_first[2:]
    assert await _trail(side, patient, before=1) == []
    assert await _trail(side, uuid.uuid4()) == []
    assert [e.seq for e in await _trail(side, other)] == [5, 2]


async def test_an_accounts_trail_holds_the_records_that_name_it_newest_first(side: Side) -> None:
    account, other = uuid.uuid4(), uuid.uuid4()
    changes = [
        _record(patient_id=None, account_id=account, source="his.identity", resource="account/roles"),
        _record(patient_id=None, account_id=other, source="his.identity", resource="account/disabled"),
        _record(),  # a patient's record names no account
        _record(patient_id=None, account_id=account, source="his.identity", resource="account/unlocked"),
    ]
    for r in changes:
        await _append(side, r)

    async def trail(who: uuid.UUID, **page: int) -> list[tuple[int, str, uuid.UUID | None]]:
        async with side.units.read() as u:
            found = await u.chain.account_trail(who, before=page.get("before"), limit=page.get("limit", 50))
        return [(e.seq, e.resource, e.account_id) for e in found]

    assert await trail(account) == [(4, "account/unlocked", account), (1, "account/roles", account)]
    assert await trail(account, limit=1) == [(4, "account/unlocked", account)]
    assert await trail(account, before=4) == [(1, "account/roles", account)]
    assert await trail(other) == [(2, "account/disabled", other)]
    assert await trail(uuid.uuid4()) == []
    assert [e.account_id for e in await _trail(side, changes[2].patient_id or uuid.uuid4())] == [None]
    assert verify(await side.rows()).ok


async def test_flagged_records_show_flagged_and_records_from_before_the_flag_do_not(side: Side) -> None:
    patient = uuid.uuid4()
    old = _record(patient, action="break_glass", purpose="emergency").content(1)
    del old["flagged"]  # hashed as the code before the flag hashed it
    await side.put(cast(ChainRow, old | {"flagged": None, "prev_hash": GENESIS, "hash": link(GENESIS, old)}))
    await _append(side, _record(patient, action="break_glass", purpose="emergency", flagged=True))
    await _append(side, _record(patient, purpose="emergency", flagged=True), _record(patient))
    assert [(e.seq, e.flagged) for e in await _trail(side, patient)] == [(4, False), (3, True), (2, True), (1, False)]
    rows = await side.rows()
    assert [r["flagged"] for r in rows] == [None, True, True, False]
    assert verify(rows).ok


async def test_an_access_already_in_the_chain_is_refused_and_its_unit_leaves_nothing(side: Side) -> None:
    kept = _record()
    await _append(side, kept)
    with pytest.raises(UniqueViolationError):
        await _append(side, _record(), replace(kept, at=NOW))
    with pytest.raises(UniqueViolationError):
        await _append(side, _record(event_id=(twice := uuid.uuid4())), _record(event_id=twice))
    with pytest.raises(CharacterNotInRepertoireError):
        await _append(side, _record(resource="pat\x00ient"))
    with pytest.raises(CharacterNotInRepertoireError):
        await _append(side, _record(actor_roles=("DOC\x00TOR",)))
    rows = await side.rows()
    assert [r["event_id"] for r in rows] == [kept.event_id]
    assert await _append(side, _record()) == 2
    assert verify(await side.rows()).ok


# --- account links -------------------------------------------------------------------------------


async def test_an_account_owns_the_patients_it_is_linked_to_and_a_new_link_replaces_the_old(side: Side) -> None:
    patient, account, later = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with side.units.read() as u:
        assert not await u.accounts.owns(account, patient)
    async with side.units.uow() as u:
        await u.accounts.link(patient, account)
        await u.accounts.link(uuid.uuid4(), account)  # one account may hold several records
    async with side.units.read() as u:
        assert await u.accounts.owns(account, patient)
        assert not await u.accounts.owns(uuid.uuid4(), patient)
        assert not await u.accounts.owns(account, uuid.uuid4())
    async with side.units.uow() as u:
        await u.accounts.link(patient, later)
    async with side.units.read() as u:
        assert await u.accounts.owns(later, patient)
        assert not await u.accounts.owns(account, patient)


# --- units of work -------------------------------------------------------------------------------


async def test_a_unit_that_fails_leaves_nothing_and_publishes_nothing(side: Side) -> None:
    patient, account = uuid.uuid4(), uuid.uuid4()
    await _append(side, _record(patient))
    with pytest.raises(RuntimeError):
        async with side.units.uow() as u:
            await u.chain.append(_record(patient))
            await u.chain.append_many([_record(patient), _record()])
            await u.accounts.link(patient, account)
            u.add(
                InvitationRedeemed(invitation_id=uuid.uuid4(), patient_id=patient, account_id=account),
                aggregate_id=patient,
            )
            raise RuntimeError("the unit fails")
    assert await side.published() == []
    assert [r["seq"] for r in await side.rows()] == [1]
    assert [e.seq for e in await _trail(side, patient)] == [1]
    async with side.units.read() as u:
        assert not await u.accounts.owns(account, patient)
    assert await _append(side, _record(patient)) == 2  # the head is where it was
    async with side.units.uow() as u:
        u.add(
            InvitationRedeemed(invitation_id=uuid.uuid4(), patient_id=patient, account_id=account), aggregate_id=patient
        )
    assert await side.published() == [REDEEMED]
    assert verify(await side.rows()).ok
