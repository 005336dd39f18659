"""Batched access events: the records of reads committed together, merged without loss."""

from __future__ import annotations

import uuid

from his.events.audit import MAX_BATCH, PatientsRecordAccessed, PatientsRecordsAccessed, batch_accesses
from his.kernel.events import Envelope
from tests.support.events import ThingHappened


def access(i: int) -> Envelope:
    ev = PatientsRecordAccessed(
        actor_id=uuid.uuid4(),
        actor_roles=["RECEPTIONIST"],
        patient_id=uuid.uuid4(),
        action="read",
        resource="patient",
        purpose="registration",
        outcome="allowed" if i % 2 else "denied",
        trace_id=f"{i:032x}",
    )
    return Envelope.wrap(ev, aggregate_id=uuid.uuid4())


def other() -> Envelope:
    return Envelope.wrap(ThingHappened(thing_id=uuid.uuid4(), seq=0), aggregate_id=uuid.uuid4())


def test_accesses_become_one_event_and_each_keeps_its_id_time_and_fields() -> None:
    singles = [access(i) for i in range(5)]
    kept = other()
    out = batch_accesses([singles[0], kept, *singles[1:]])
    assert [e.type for e in out] == [kept.type, PatientsRecordsAccessed.type]
    batch = PatientsRecordsAccessed.model_validate(out[1].data)
    assert [a.id for a in batch.accesses] == [s.id for s in singles]
    assert [a.at for a in batch.accesses] == [s.time for s in singles]
    assert [a.model_dump(mode="json", exclude={"id", "at"}) for a in batch.accesses] == [
        {k: v for k, v in s.data.items() if k != "producer_seq"} for s in singles
    ]
    assert batch.producer_seq is None and out[1].numbers == 5  # numbered at commit, five numbers from one
    assert out[1].aggregate_id == str(out[1].id)  # a batch spans patients: it names none


def test_a_lone_access_stays_a_single_event() -> None:
    one = access(1)
    assert batch_accesses([one]) == [one]


def test_large_groups_are_split() -> None:
    out = batch_accesses([access(i) for i in range(2 * MAX_BATCH + 1)])
    sizes = [len(PatientsRecordsAccessed.model_validate(e.data).accesses) for e in out]
    assert sizes == [MAX_BATCH, MAX_BATCH, 1]
