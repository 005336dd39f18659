"""Lab results reach the chart without their values travelling on the bus: the event carries
codes and flags, patients asks laboratory for the values (the in-memory laboratory here; its HTTP
adapter runs in ``tests/integration/test_laboratory.py`` and under `his up`). No IO."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import cast

import pytest

from his.clients.laboratory import FakeLaboratory, ReleasedOrder, ReleasedResult
from his.events.laboratory import (
    OLDER_RESULTED,
    LabCharge,
    LabOrderResulted,
    LabOrderResultedV1,
    LabResultContent,
    ResultFlag,
    ResultItem,
)
from his.events.patients import RecordEntryAdded, RecordEntryAddedV1
from his.kernel.consumer import PermanentError, Subscription
from his.kernel.db import UnitOfWork
from his.kernel.events import Envelope, Superseded, registry
from his.kernel.resilience import DependencyUnavailableError
from his.patients.domain import NewPatient, Sex
from his.patients.handlers import lab_order_resulted, register, released_by
from his.testing.patients import FakeChart
from tests.support.sealing import SEAL, sealed_result

AT = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
#: The unit of work a handler that records what it was given never touches.
NO_UNIT = cast("UnitOfWork", None)
#: A value nobody else uses, so that finding it anywhere means it travelled.
VALUE = "6.918273"


def resulted(order_id: uuid.UUID, patient_id: uuid.UUID) -> LabOrderResulted:
    return sealed_result(
        order_id=order_id,
        patient_id=patient_id,
        ordered_by=uuid.uuid4(),
        priority="stat",
        resulted_at=AT,
        results=[ResultFlag(code="K", flag="HH"), ResultFlag(code="UA", flag="N")],
        charges=[LabCharge(code="K", amount=Decimal("65.00"), currency="TRY")],
        abnormal=True,
        critical=True,
    )


def released(order_id: uuid.UUID, patient_id: uuid.UUID) -> ReleasedOrder:
    return ReleasedOrder(
        order_id,
        patient_id,
        (
            ReleasedResult("K", VALUE, "mmol/L", Decimal("3.5"), Decimal("5.1"), "HH"),
            ReleasedResult("UA", "negative", None, None, None, "N"),
        ),
    )


async def _patient(chart: FakeChart) -> uuid.UUID:
    async with chart.uow() as unit:
        return (await register(unit, NewPatient("Deniz", "Lab", date(1980, 3, 4), Sex.FEMALE))).id


async def _apply(chart: FakeChart, ev: LabOrderResulted, lab: FakeLaboratory) -> None:
    """As the consumer loop applies it: laboratory asked first, then the chart's unit of work."""
    env = Envelope.wrap(ev, aggregate_id=ev.order_id)
    given = await released_by(lab)(env, ev)
    async with chart.uow() as unit:
        await lab_order_resulted(unit, env, ev, given)


async def test_the_chart_gets_the_values_from_laboratory_not_from_the_event() -> None:
    chart, lab = FakeChart(), FakeLaboratory()
    pid, oid = await _patient(chart), uuid.uuid4()
    lab.add(released(oid, pid))
    ev = resulted(oid, pid)
    assert VALUE not in Envelope.wrap(ev, aggregate_id=oid).to_json().decode()

    await _apply(chart, ev, lab)

    assert lab.asked == 1
    rows = sorted(chart.state.results.values(), key=lambda r: r.position)
    assert [(r.result.code, r.result.value, r.result.unit, r.result.flag) for r in rows] == [
        ("K", VALUE, "mmol/L", "HH"),
        ("UA", "negative", None, "N"),
    ]


async def test_laboratory_down_is_transient_and_leaves_the_chart_as_it_was() -> None:
    """The consumer loop retries anything but ``PermanentError``: an outage must not be one (the
    event would go to the dead letters at once), and nothing of the order may be charted."""
    chart, lab = FakeChart(), FakeLaboratory(down=True)
    pid, oid = await _patient(chart), uuid.uuid4()
    lab.add(released(oid, pid))

    with pytest.raises(DependencyUnavailableError) as raised:
        await _apply(chart, resulted(oid, pid), lab)
    assert not isinstance(raised.value, PermanentError)
    assert chart.state.results == {}

    lab.down = False  # laboratory is back: the redelivered event is applied
    await _apply(chart, resulted(oid, pid), lab)
    assert len(chart.state.results) == 2


async def test_an_order_laboratory_does_not_know_or_of_another_patient_is_permanent() -> None:
    chart, lab = FakeChart(), FakeLaboratory()
    pid, oid = await _patient(chart), uuid.uuid4()
    with pytest.raises(PermanentError, match="no resulted order"):
        await _apply(chart, resulted(oid, pid), lab)
    lab.add(released(oid, uuid.uuid4()))
    with pytest.raises(PermanentError, match="no resulted order"):
        await _apply(chart, resulted(oid, pid), lab)
    assert chart.state.results == {}


def test_the_published_versions_carry_no_value_and_no_diagnosis_code() -> None:
    """What the current versions may hold: ids, the entry's kind; in clear no test code and no
    flag (they are sealed with the charges)."""
    assert set(LabOrderResulted.model_fields) == {
        "order_id",
        "patient_id",
        "ordered_by",
        "priority",
        "resulted_at",
        "sealed",
    }
    assert set(LabResultContent.model_fields) == {"results", "charges", "abnormal", "critical"}
    assert set(ResultFlag.model_fields) == {"code", "flag"}
    assert set(RecordEntryAdded.model_fields) == {"entry_id", "patient_id", "kind"}
    assert registry.model_for("his.laboratory.order.resulted.v3") is LabOrderResulted
    assert registry.model_for("his.patients.record_entry.added.v2") is RecordEntryAdded


def test_the_old_versions_stay_readable_and_are_read_without_their_values() -> None:
    oid, pid = uuid.uuid4(), uuid.uuid4()
    old = LabOrderResultedV1(
        order_id=oid,
        patient_id=pid,
        ordered_by=uuid.uuid4(),
        priority="routine",
        resulted_at=AT,
        results=[ResultItem(code="K", value=VALUE, unit="mmol/L", flag="HH")],
        charges=[],
        abnormal=True,
        critical=True,
    )
    back = Envelope.from_json(Envelope.wrap(old, aggregate_id=oid).to_json()).model()
    assert isinstance(back, Superseded)
    new = back.upcast()
    assert isinstance(new, LabOrderResulted) and new.opened(SEAL).results == [ResultFlag(code="K", flag="HH")]
    assert VALUE not in new.opened(SEAL).model_dump_json()
    entry = RecordEntryAddedV1(entry_id=oid, patient_id=pid, kind="diagnosis", code="Q12.3")
    assert entry.upcast() == RecordEntryAdded(entry_id=oid, patient_id=pid, kind="diagnosis")


async def test_a_subscription_reads_the_old_version_as_the_new_one() -> None:
    """A consumer switched to v3 still reads the v2 and v1 events left in the stream, upcast: its
    durable consumer filters on the three subjects, and its handler sees only v3."""
    seen: list[object] = []

    async def handler(uow: object, env: Envelope, ev: LabOrderResulted) -> None:
        seen.append(ev)

    sub = Subscription.of("patients_lab_order_resulted", LabOrderResulted, handler, older=OLDER_RESULTED)
    assert sub.subjects == tuple(f"his.laboratory.order.resulted.v{n}" for n in (3, 2, 1))
    oid = uuid.uuid4()
    old = LabOrderResultedV1(
        order_id=oid,
        patient_id=uuid.uuid4(),
        ordered_by=uuid.uuid4(),
        priority="routine",
        resulted_at=AT,
        results=[ResultItem(code="K", value=VALUE, flag="HH")],
        charges=[],
        abnormal=True,
        critical=True,
    )
    await sub.handler(NO_UNIT, Envelope.wrap(old, aggregate_id=oid), old)
    (got,) = seen
    assert isinstance(got, LabOrderResulted) and got.order_id == oid
    other = RecordEntryAddedV1(entry_id=oid, patient_id=oid, kind="note")
    with pytest.raises(PermanentError):
        await sub.handler(NO_UNIT, Envelope.wrap(other, aggregate_id=oid), other)
