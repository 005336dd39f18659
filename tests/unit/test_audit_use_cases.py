"""The audit service's use cases over the in-memory ports (no database, no network): who may read
a patient's trail (the patient themself, AUDITOR, ADMIN), each refusal appended to the chain,
paging through a trail, and the access events and account links the consumers append and keep.

The chain is ``his.testing.audit``'s, hashed as the store hashes it (its contract with the
PostgreSQL store is ``tests/integration/test_audit_contract.py``), so every chain here is walked
by ``his.audit.domain.verify``. The route is the service's own, mounted in-process. The service's
clock is a fake one on new year's day and on the day the clocks go back (``tests.support.calendar``).
What needs PostgreSQL (the runtime role's grants, tampering by a superuser, the checkpoint of the
operator's tooling, records from before the flag) stays in ``tests/integration/test_audit.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import httpx
import pytest

from his.audit import handlers
from his.audit.app import http_over
from his.audit.domain import Checkpoint, NewRecord, verify
from his.events.audit import BATCHED, AccessEntry, PatientsRecordAccessed, workload_actor_id
from his.events.patients import InvitationRedeemed, PatientRegistered
from his.kernel.clock import FakeClock
from his.kernel.events import Envelope, Event
from his.testing.audit import FakeAudit
from tests.support.api import bearer, serve
from tests.support.calendar import HARD_DATES, HardDate

KEY = b"checkpoint key"
TRACE = "0af7651916cd43dd8448eb211c80319c"


@dataclass
class Audit:
    fake: FakeAudit
    client: httpx.AsyncClient
    hard: HardDate
    clock: FakeClock

    async def seed(self, patient: uuid.UUID | None = None, **kw: object) -> NewRecord:
        """An access recorded by another service, appended as the consumer appends it."""
        record = NewRecord(
            event_id=uuid.uuid4(),
            at=self.clock(),
            source="his.patients",
            actor_id=uuid.uuid4(),
            actor_roles=("DOCTOR",),
            patient_id=patient or uuid.uuid4(),
            action="read",
            resource="patient",
            purpose="care",
            outcome="allowed",
            trace_id=None,
        )
        record = replace(record, **kw)  # type: ignore[arg-type]
        async with self.fake.uow() as u:
            await u.chain.append(record)
        return record

    async def link(self, patient: uuid.UUID, account: uuid.UUID) -> None:
        async with self.fake.uow() as u:
            await u.accounts.link(patient, account)

    async def trail(self, patient: uuid.UUID, who: dict[str, str], **params: int) -> httpx.Response:
        return await self.client.get("/audit", params={"patient_id": str(patient), **params}, headers=who)


@pytest.fixture(params=[HARD_DATES[0], HARD_DATES[4]], ids=str)
async def audit(request: pytest.FixtureRequest) -> AsyncIterator[Audit]:
    hard: HardDate = request.param
    clock = hard.clock(9, 30)
    fake = FakeAudit(clock)
    async with serve(http_over(fake), base_url="http://audit") as client:
        yield Audit(fake, client, hard, clock)


def _envelope(ev: Event) -> Envelope:
    return Envelope.wrap(ev, aggregate_id=uuid.uuid4())


# --- who may read a patient's trail --------------------------------------------------------------


async def test_a_refused_read_of_a_patients_trail_joins_the_chain(audit: Audit) -> None:
    """Who saw a record: AUDITOR, ADMIN and the patient read the trail; other staff get 403, another
    patient 404, and each refusal is itself appended to the chain (outcome denied), which still
    verifies, up to the head witnessed before the refusals too."""
    for i in range(20):  # other patients' records, and a checkpoint at their head
        await audit.seed(outcome="allowed" if i % 5 else "denied")
    seq, head = audit.fake.state.chain[-1]["seq"], audit.fake.state.chain[-1]["hash"]
    witnessed = Checkpoint.make(KEY, seq, head)
    owner, patient = uuid.uuid4(), uuid.uuid4()
    await audit.link(patient, owner)
    callers = [
        (bearer(owner, "PATIENT"), 200),
        (bearer(uuid.uuid4(), "AUDITOR"), 200),
        (bearer(uuid.uuid4(), "DOCTOR"), 403),
        (bearer(uuid.uuid4(), "PATIENT"), 404),
    ]
    for who, status in callers:
        r = await audit.trail(patient, who)
        assert r.status_code == status, r.text
    items = (await audit.trail(patient, bearer(owner, "PATIENT"))).json()["items"]
    assert [(x["resource"], x["outcome"], x["actor_roles"]) for x in items] == [
        ("audit_trail", "denied", ["PATIENT"]),
        ("audit_trail", "denied", ["DOCTOR"]),
        ("audit_trail", "allowed", ["AUDITOR"]),  # reading the trail is recorded in it too
        ("audit_trail", "allowed", ["PATIENT"]),
    ]
    assert [(x["actor_kind"], x["actor_name"]) for x in items] == [
        ("unknown", None),  # another patient: no name, no staff directory entry
        ("staff", None),  # no staff directory here (see the e2e test for names)
        ("staff", None),
        ("patient", "the patient"),
    ]
    for who, status in ((bearer(uuid.uuid4(), "ADMIN"), 200), (bearer(uuid.uuid4(), "NURSE", "CLERK"), 403)):
        r = await audit.trail(patient, who)
        assert r.status_code == status, r.text
    items = (await audit.trail(patient, bearer(owner, "PATIENT"))).json()["items"]
    assert (items[0]["outcome"], items[0]["actor_roles"]) == ("denied", ["CLERK", "NURSE"])
    assert len(items) == 7
    verdict = verify(audit.fake.state.rows(), witnessed, KEY)
    assert verdict.ok and verdict.checked == 28, verdict
    assert audit.fake.published == []  # the chain is the service's own: nothing is published


async def test_a_refusal_records_who_was_refused_what_when_and_why(audit: Audit) -> None:
    patient, doctor = uuid.uuid4(), uuid.uuid4()
    r = await audit.trail(patient, bearer(doctor, "NURSE", "DOCTOR"))
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    (row,) = audit.fake.state.rows()
    assert {k: v for k, v in row.items() if k not in ("event_id", "purpose", "prev_hash", "hash")} == {
        "seq": 1,
        "at": audit.hard.at(9, 30),
        "source": "his.audit",
        "actor_id": doctor,
        "actor_roles": ["DOCTOR", "NURSE"],
        "patient_id": patient,
        "action": "read",
        "resource": "audit_trail",
        "outcome": "denied",
        "trace_id": row["trace_id"],
        "flagged": False,
        "producer_seq": None,  # the service's own record: the chain and its checkpoints guard it
        "account_id": None,  # a patient's trail names no account
    }
    (entry,) = (await audit.trail(patient, bearer(uuid.uuid4(), "AUDITOR"))).json()["items"]
    assert entry["purpose"] == row["purpose"] and entry["flagged"] is False
    assert verify(audit.fake.state.rows()).ok


async def test_a_patient_reads_their_own_trail_and_not_another_patients(audit: Audit) -> None:
    owner, mine, theirs = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await audit.link(mine, owner)
    read = await audit.seed(mine, trace_id=TRACE)
    await audit.seed(theirs)
    r = await audit.trail(mine, bearer(owner, "PATIENT"))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "items": [
            {
                "seq": 1,
                "at": read.at.isoformat(),
                "source": "his.patients",
                "actor_id": str(read.actor_id),
                "actor_roles": ["DOCTOR"],
                "action": "read",
                "resource": "patient",
                "purpose": "care",
                "outcome": "allowed",
                "flagged": False,
                "actor_kind": "staff",
                "actor_name": None,
                "account_id": None,
            }
        ],
        "next_before": None,
    }
    assert (await audit.trail(theirs, bearer(owner, "PATIENT"))).status_code == 404
    rows = audit.fake.state.rows()
    assert [(r["resource"], r["outcome"]) for r in rows] == [
        ("patient", "allowed"),
        ("patient", "allowed"),
        ("audit_trail", "allowed"),  # the patient's own read of their trail
        ("audit_trail", "denied"),
    ]


# --- paging --------------------------------------------------------------------------------------


async def test_a_trail_is_newest_first_and_pages_with_before(audit: Audit) -> None:
    patient = uuid.uuid4()
    auditor = bearer(uuid.uuid4(), "AUDITOR")
    for i in range(5):
        audit.clock.advance(timedelta(minutes=7))
        await audit.seed(patient, resource=f"page_{i}")
        await audit.seed()  # someone else's, in between
    first = (await audit.trail(patient, auditor, limit=2)).json()
    assert [x["seq"] for x in first["items"]] == [9, 7]
    assert [x["resource"] for x in first["items"]] == ["page_4", "page_3"]
    assert first["next_before"] == 7
    second = (await audit.trail(patient, auditor, limit=2, before=first["next_before"])).json()
    assert [x["seq"] for x in second["items"]] == [5, 3]
    assert second["next_before"] == 3
    last = (await audit.trail(patient, auditor, limit=2, before=second["next_before"])).json()
    assert [x["seq"] for x in last["items"]] == [1]
    assert last["next_before"] is None
    head = (await audit.trail(patient, auditor, limit=4)).json()
    assert [(x["seq"], x["resource"]) for x in head["items"]] == [
        (13, "audit_trail"),  # each read of the trail, recorded in it
        (12, "audit_trail"),
        (11, "audit_trail"),
        (9, "page_4"),
    ]
    whole = (await audit.trail(patient, auditor, limit=5, before=11)).json()
    assert [x["seq"] for x in whole["items"]] == [9, 7, 5, 3, 1]
    assert whole["next_before"] == 1  # a full page: the next one is asked for, and is empty
    assert (await audit.trail(patient, auditor, before=1)).json() == {"items": [], "next_before": None}
    moments = [x["at"] for x in (await audit.trail(patient, auditor)).json()["items"]]
    assert moments == sorted(moments, reverse=True)


@pytest.mark.parametrize("params", [{"before": 0}, {"limit": 0}, {"limit": 501}])
async def test_a_bad_page_is_refused_and_records_nothing(audit: Audit, params: dict[str, int]) -> None:
    r = await audit.trail(uuid.uuid4(), bearer(uuid.uuid4(), "AUDITOR"), **params)
    assert r.status_code == 422, r.text
    assert audit.fake.state.rows() == []


# --- the consumers -------------------------------------------------------------------------------


async def test_an_access_is_appended_as_it_arrived_and_emergency_access_is_flagged(audit: Audit) -> None:
    patient, actor = uuid.uuid4(), uuid.uuid4()
    accesses = [
        ("read", "care", False),
        ("break_glass", "emergency", True),
        ("read", "emergency", True),
        ("update", "treatment", False),
    ]
    envelopes = []
    for action, purpose, _ in accesses:
        ev = PatientsRecordAccessed(
            actor_id=actor,
            actor_roles=["NURSE", "DOCTOR"],
            patient_id=patient,
            action=action,
            resource="patient",
            purpose=purpose,
            outcome="allowed",
            trace_id=TRACE,
        )
        env = replace(_envelope(ev), time=audit.clock())
        async with audit.fake.uow() as u:
            await handlers.record_accessed(u, env, ev)
        envelopes.append(env)
    rows = audit.fake.state.rows()
    assert [(r["event_id"], r["at"], r["source"]) for r in rows] == [
        (env.id, audit.hard.at(9, 30), "his.patients") for env in envelopes
    ]
    assert [(r["action"], r["purpose"], r["flagged"]) for r in rows] == accesses
    assert all(r["actor_roles"] == ["NURSE", "DOCTOR"] and r["trace_id"] == TRACE for r in rows)
    assert verify(rows).ok


async def test_a_batch_of_accesses_is_appended_in_order_each_with_its_own_id_and_time(audit: Audit) -> None:
    patient = uuid.uuid4()
    entries = [
        AccessEntry(
            id=uuid.uuid4(),
            at=audit.hard.at(9, 30, second=i),
            actor_id=uuid.uuid4(),
            actor_roles=["DOCTOR"],
            patient_id=patient,
            action="read",
            resource="patient",
            purpose="emergency" if i == 1 else "care",
            outcome="denied" if i == 2 else "allowed",
        )
        for i in range(3)
    ]
    ev = BATCHED[PatientsRecordAccessed.type](accesses=entries)
    async with audit.fake.uow() as u:
        await handlers.records_accessed(u, _envelope(ev), ev)
    rows = audit.fake.state.rows()
    assert [(r["seq"], r["event_id"], r["at"], r["outcome"], r["flagged"]) for r in rows] == [
        (1, entries[0].id, entries[0].at, "allowed", False),
        (2, entries[1].id, entries[1].at, "allowed", True),
        (3, entries[2].id, entries[2].at, "denied", False),
    ]
    assert {r["source"] for r in rows} == {"his.patients"}
    assert verify(rows).ok


@pytest.mark.parametrize("kind", ["registered", "redeemed"])
async def test_a_patients_account_is_learnt_from_registration_and_redemption(audit: Audit, kind: str) -> None:
    patient, account = uuid.uuid4(), uuid.uuid4()
    await audit.seed(patient)
    owner = bearer(account, "PATIENT")
    assert (await audit.trail(patient, owner)).status_code == 404
    ev: PatientRegistered | InvitationRedeemed
    if kind == "registered":
        async with audit.fake.uow() as u:  # registered at the desk: no account yet
            unlinked = PatientRegistered(patient_id=patient, account_id=None)
            await handlers.patient_registered(u, _envelope(unlinked), unlinked)
        assert (await audit.trail(patient, owner)).status_code == 404
        ev = PatientRegistered(patient_id=patient, account_id=account)
    else:
        ev = InvitationRedeemed(invitation_id=uuid.uuid4(), patient_id=patient, account_id=account)
    async with audit.fake.uow() as u:
        await handlers.patient_registered(u, _envelope(ev), ev)
    r = await audit.trail(patient, owner)
    assert r.status_code == 200, r.text
    refusals = 2 if kind == "registered" else 1  # its own earlier 404s, then the read
    assert [x["outcome"] for x in r.json()["items"]] == ["denied"] * refusals + ["allowed"]


# --- who saw my record, in words ------------------------------------------------------------------


@dataclass
class Directory:
    """A staff directory that knows some names, and remembers who asked it."""

    known: dict[uuid.UUID, str]
    asked: list[tuple[list[uuid.UUID], str]]

    async def names(self, ids: Sequence[uuid.UUID], authorization: str) -> dict[uuid.UUID, str]:
        self.asked.append((list(ids), authorization))
        return {i: self.known[i] for i in ids if i in self.known}


async def test_a_patient_sees_who_read_their_record_by_name_and_role_and_services_in_words() -> None:
    clock = HARD_DATES[0].clock(9, 30)
    fake = FakeAudit(clock)
    owner, patient, doctor, gone = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    directory = Directory({doctor: "Dr Ana Silva"}, [])
    billing = "spiffe://his.local/service/billing"
    async with fake.uow() as u:
        await u.accounts.link(patient, owner)
        for actor, roles in ((doctor, ("DOCTOR",)), (gone, ("NURSE",)), (workload_actor_id(billing), (billing,))):
            await u.chain.append(
                NewRecord(
                    uuid.uuid4(),
                    clock(),
                    "his.patients",
                    actor,
                    roles,
                    patient,
                    "read",
                    "patient",
                    "care",
                    "allowed",
                    None,
                )
            )
    me = bearer(owner, "PATIENT")
    async with serve(http_over(fake, directory), base_url="http://audit") as client:
        r = await client.get("/audit", params={"patient_id": str(patient)}, headers=me)
        second = await client.get("/audit", params={"patient_id": str(patient)}, headers=me)
    assert r.status_code == 200, r.text
    assert [(x["actor_kind"], x["actor_name"], x["actor_roles"]) for x in r.json()["items"]] == [
        ("service", "the billing service", [billing]),
        ("staff", None, ["NURSE"]),  # not in the directory (a leaver): the role still says who
        ("staff", "Dr Ana Silva", ["DOCTOR"]),
    ]
    assert directory.asked[0] == ([gone, doctor], me["authorization"])  # staff only, asked as the patient
    assert second.json()["items"][0]["actor_name"] == "the patient"  # their own read of the trail
