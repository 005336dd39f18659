"""Event content sealed for its consumers (``his.kernel.sealing``): it opens with the key, for
the event it was sealed in only; an altered box, one copied into another event, or one under a
key not configured is a ``PermanentError`` (a dead letter) saying why; keys rotate."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from his.events.laboratory import LabCharge, LabOrderResulted, LabResultContent, ResultFlag
from his.kernel.consumer import PermanentError
from his.kernel.crypto import new_key_text
from his.kernel.sealing import Seal, UnsealableError, aad

AT = datetime(2026, 10, 25, 2, 30, tzinfo=UTC)
CONTENT = LabResultContent(
    results=[ResultFlag(code="HIV", flag="A")],
    charges=[LabCharge(code="HIV", amount=Decimal("300.00"), currency="TRY")],
    abnormal=True,
    critical=False,
)


def result(seal: Seal, order_id: uuid.UUID | None = None, patient_id: uuid.UUID | None = None) -> LabOrderResulted:
    return LabOrderResulted.sealing(
        seal,
        CONTENT,
        order_id=order_id or uuid.uuid4(),
        patient_id=patient_id or uuid.uuid4(),
        ordered_by=uuid.uuid4(),
        priority="routine",
        resulted_at=AT,
    )


def test_a_box_opens_with_its_key_and_holds_nothing_in_clear() -> None:
    seal = Seal("HIS_LAB_SEAL_KEYS", new_key_text())
    ev = result(seal)
    assert "HIV" not in ev.model_dump_json() and '"A"' not in ev.model_dump_json()
    opened = ev.opened(seal)
    assert (opened.results, opened.charges, opened.abnormal, opened.critical) == (
        CONTENT.results,
        CONTENT.charges,
        True,
        False,
    )
    assert result(seal).sealed != result(seal).sealed  # a fresh nonce each time


def test_a_box_opens_only_in_the_event_it_was_sealed_in() -> None:
    """The associated data binds the box to the event type, the order and the patient."""
    seal = Seal("HIS_LAB_SEAL_KEYS", new_key_text())
    ev = result(seal)
    for moved in (
        ev.model_copy(update={"order_id": uuid.uuid4()}),  # another order's event
        ev.model_copy(update={"patient_id": uuid.uuid4()}),  # another patient's
    ):
        with pytest.raises(UnsealableError, match="altered or belongs to another"):
            moved.opened(seal)
    with pytest.raises(UnsealableError):  # the same box in another event type
        seal.open(ev.sealed, LabResultContent, aad("his.laboratory.order.resulted.v2", ev.order_id, ev.patient_id))
    assert seal.open(ev.sealed, LabResultContent, LabOrderResulted.associated(ev.order_id, ev.patient_id)) == CONTENT


@pytest.mark.parametrize("where", [0, 5, 15, 30, -1])
def test_an_altered_box_does_not_open_and_is_permanent(where: int) -> None:
    seal = Seal("HIS_LAB_SEAL_KEYS", new_key_text())
    ev = result(seal)
    blob = bytearray(base64.urlsafe_b64decode(ev.sealed + "=" * (-len(ev.sealed) % 4)))
    blob[where] ^= 0x01
    altered = ev.model_copy(update={"sealed": base64.urlsafe_b64encode(bytes(blob)).decode()})
    with pytest.raises(PermanentError, match="does not open"):
        altered.opened(seal)


@pytest.mark.parametrize("box", ["", "not base64 !", "QUJD"])
def test_what_is_not_a_box_is_permanent(box: str) -> None:
    seal = Seal("HIS_LAB_SEAL_KEYS", new_key_text())
    with pytest.raises(UnsealableError):
        result(seal).model_copy(update={"sealed": box}).opened(seal)


def test_a_key_not_configured_or_no_key_at_all_is_permanent_and_named() -> None:
    ev = result(Seal("HIS_LAB_SEAL_KEYS", new_key_text()))
    with pytest.raises(UnsealableError, match="key that is not configured"):
        ev.opened(Seal("HIS_LAB_SEAL_KEYS", new_key_text()))
    with pytest.raises(UnsealableError, match="without HIS_LAB_SEAL_KEYS"):
        ev.opened(Seal("HIS_LAB_SEAL_KEYS", None))


def test_the_newest_key_seals_and_older_keys_still_open() -> None:
    old, new = new_key_text(), new_key_text()
    before = result(Seal("HIS_LAB_SEAL_KEYS", old))
    rotated = Seal("HIS_LAB_SEAL_KEYS", f"{new}, {old}")
    after = result(rotated)
    assert before.opened(rotated).results == after.opened(rotated).results == CONTENT.results
    assert after.opened(Seal("HIS_LAB_SEAL_KEYS", new)).results == CONTENT.results  # sealed with the newest
    with pytest.raises(UnsealableError):
        before.opened(Seal("HIS_LAB_SEAL_KEYS", new))  # the old key retired: its boxes no longer open


def test_a_service_that_needs_the_key_and_has_none_refuses_to_start() -> None:
    with pytest.raises(SystemExit, match="billing needs HIS_LAB_SEAL_KEYS"):
        Seal("HIS_LAB_SEAL_KEYS", None).require("billing")
    with pytest.raises(ValueError, match="32 bytes"):
        Seal("HIS_LAB_SEAL_KEYS", "QUJD")
    Seal("HIS_LAB_SEAL_KEYS", new_key_text()).require("billing")


def test_exactly_the_services_that_seal_or_open_results_refuse_to_start_without_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    from his.cli.services import SERVICES

    monkeypatch.delenv("HIS_LAB_SEAL_KEYS", raising=False)
    refused = set()
    for name in SERVICES:
        defn = importlib.import_module(f"his.{name}.app").build()
        if defn.requires is not None:
            with pytest.raises(SystemExit, match=f"{name} needs HIS_LAB_SEAL_KEYS"):
                defn.requires()
            refused.add(name)
    assert refused == {"laboratory", "billing", "inventory", "notifications"}
    monkeypatch.setenv("HIS_LAB_SEAL_KEYS", new_key_text())
    for name in refused:
        defn = importlib.import_module(f"his.{name}.app").build()
        assert defn.requires is not None
        defn.requires()
