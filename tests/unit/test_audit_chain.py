"""The audit chain detects every kind of tampering (pure: rows in memory)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from his.audit.domain import GENESIS, Checkpoint, NewRecord, canonical, is_flagged, link, verify

KEY = b"checkpoint key"
T0 = datetime(2026, 11, 26, tzinfo=UTC)


def chain(n: int) -> list[dict[str, Any]]:
    rows, prev = [], GENESIS
    for i in range(1, n + 1):
        row = {
            "seq": i,
            "event_id": uuid.uuid4(),
            "at": T0 + timedelta(seconds=i),
            "source": "his.patients",
            "actor_id": uuid.uuid4(),
            "actor_roles": ["DOCTOR"],
            "patient_id": uuid.uuid4(),
            "action": "read",
            "resource": "patient",
            "purpose": "care",
            "outcome": "allowed",
            "trace_id": None,
        }
        digest = link(prev, row)
        row["prev_hash"], row["hash"] = prev, digest
        prev = digest
        rows.append(row)
    return rows


def reforge(rows: list[dict[str, Any]]) -> None:
    prev = GENESIS
    for r in rows:
        r["prev_hash"], r["hash"] = prev, link(prev, r)
        prev = r["hash"]


def head(rows: list[dict[str, Any]]) -> Checkpoint:
    return Checkpoint.make(KEY, rows[-1]["seq"], rows[-1]["hash"])


def test_an_intact_chain_verifies() -> None:
    rows = chain(10)
    assert verify(rows, head(rows), KEY).ok
    assert verify([], None).ok


def test_an_edit_is_named() -> None:
    rows = chain(10)
    rows[4]["actor_id"] = uuid.uuid4()
    v = verify(rows, head(rows), KEY)
    assert not v.ok and v.first_bad_seq == 5 and "altered" in v.problem


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_id", uuid.uuid4()),
        ("at", T0),
        ("source", "his.billing"),
        ("actor_id", uuid.uuid4()),
        ("actor_roles", ["ADMIN"]),
        ("patient_id", uuid.uuid4()),
        ("action", "update"),
        ("resource", "invoice"),
        ("purpose", "emergency"),
        ("outcome", "denied"),
        ("trace_id", "0af7651916cd43dd8448eb211c80319c"),
    ],
)
def test_every_field_of_a_record_is_covered_by_its_hash(field: str, value: object) -> None:
    """Listed here, not taken from the module: a field the hash forgot would vanish from both.
    (``seq`` is checked by the walk itself: a changed one is a missing record.)"""
    rows = chain(3)
    assert rows[1][field] != value
    rows[1][field] = value
    v = verify(rows, head(rows), KEY)
    assert not v.ok and v.first_bad_seq == 2 and "altered" in v.problem


def test_a_deletion_is_named() -> None:
    rows = chain(10)
    del rows[6]
    v = verify(rows)
    assert not v.ok and v.first_bad_seq == 7 and "missing" in v.problem


def test_a_swap_is_named() -> None:
    rows = chain(10)
    rows[2]["seq"], rows[3]["seq"] = 4, 3
    rows[2], rows[3] = rows[3], rows[2]
    v = verify(rows)
    assert not v.ok and v.first_bad_seq == 3


def test_a_truncated_tail_is_caught_by_the_checkpoint() -> None:
    rows = chain(10)
    cp = head(rows)
    v = verify(rows[:7], cp, KEY)
    assert not v.ok and "truncated" in v.problem and v.first_bad_seq == 8


def test_a_reforged_chain_is_caught_by_the_checkpoint() -> None:
    rows = chain(10)
    cp = head(rows)
    rows[2]["outcome"] = "denied"
    reforge(rows)
    assert verify(rows).ok  # internally consistent…
    v = verify(rows, cp, KEY)  # …but not the chain that was witnessed
    assert not v.ok and "re-forged" in v.problem


def test_a_checkpoint_of_the_empty_chain_verifies_a_chain_that_grew_since() -> None:
    empty = Checkpoint.make(KEY, 0, GENESIS)
    assert verify([], empty, KEY).ok
    assert verify(chain(3), empty, KEY).ok
    assert not verify(chain(3), Checkpoint.make(KEY, 0, bytes(31) + b"x"), KEY).ok


@pytest.mark.parametrize("forged", ["mac", "seq"])
def test_a_forged_checkpoint_is_refused(forged: str) -> None:
    rows = chain(5)
    cp = head(rows)
    bad = Checkpoint(cp.seq, cp.hash, bytes(32)) if forged == "mac" else Checkpoint(3, rows[2]["hash"], cp.mac)
    v = verify(rows, bad, KEY)
    assert not v.ok and "not authentic" in v.problem


def _record(seq: int, **kw: Any) -> dict[str, Any]:
    return {
        "seq": seq,
        "event_id": uuid.UUID(f"00000000-0000-4000-8000-{seq:012d}"),
        "at": datetime(2026, 11, 26, 8, 30, tzinfo=UTC),
        "source": "his.patients",
        "actor_id": uuid.UUID("00000000-0000-4000-8000-000000000002"),
        "actor_roles": ["DOCTOR"],
        "patient_id": uuid.UUID("00000000-0000-4000-8000-000000000003"),
        "action": "read",
        "resource": "patient",
        "purpose": "care",
        "outcome": "allowed",
        "trace_id": None,
    } | kw


def test_records_written_before_the_flag_existed_hash_as_they_always_did() -> None:
    # The hash of this record as computed before ``flagged`` joined the chain.
    before = "3c60a1af0b12de4f24b826238a7bb7b5466b1ea65027e84563e0ba1a63ddd7fc"
    assert link(GENESIS, _record(1)).hex() == before
    assert link(GENESIS, _record(1, flagged=None)).hex() == before
    assert link(GENESIS, _record(1, flagged=False)).hex() != before  # new records hash the field


def test_a_chain_of_old_and_flagged_records_verifies_and_a_changed_flag_is_named() -> None:
    rows = [_record(1), _record(2, flagged=None), _record(3, flagged=False)]
    rows += [_record(4, action="break_glass", purpose="emergency", flagged=True), _record(5, flagged=False)]
    reforge(rows)
    assert verify(rows, head(rows), KEY).ok
    for seq, value in ((4, False), (4, None), (3, True), (1, True)):
        tampered = [dict(r) for r in rows]
        tampered[seq - 1]["flagged"] = value
        v = verify(tampered, head(rows), KEY)
        assert not v.ok and v.first_bad_seq == seq and "altered" in v.problem


@pytest.mark.parametrize(
    ("action", "purpose", "flagged"),
    [
        ("break_glass", "emergency", True),
        ("read", "emergency", True),
        ("read", "care", False),
        ("search", "care", False),
        ("read", "own_record", False),
    ],
)
def test_emergency_access_is_flagged(action: str, purpose: str, flagged: bool) -> None:
    assert is_flagged(action, purpose) is flagged


#: A record's content as the chain hashes it, fixed; its hashes below were computed by the chain's
#: code as it was in December 2026, before the record had a type of its own. A hospital's chain
#: verifies only while every record hashes to exactly these bytes.
PINNED = {
    "event_id": uuid.UUID("5b0c1e7a-3f4d-4c2b-9a61-0d7e8f9a1b2c"),
    "at": datetime(2027, 10, 31, 1, 30, 15, 123456, tzinfo=UTC),
    "source": "his.patients",
    "actor_id": uuid.UUID("0f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f"),
    "actor_roles": ["DOCTOR", "NURSE"],
    "patient_id": uuid.UUID("a1b2c3d4-e5f6-4789-8abc-def012345678"),
    "action": "break_glass",
    "resource": "patient",
    "purpose": "emergency",
    "outcome": "allowed",
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
}
PINNED_CANONICAL = (
    '{"action":"break_glass","actor_id":"0f1e2d3c-4b5a-4968-8776-5a4b3c2d1e0f","actor_roles":["DOCTOR","NURSE"],'
    '"at":"2027-10-31 01:30:15.123456+00:00","event_id":"5b0c1e7a-3f4d-4c2b-9a61-0d7e8f9a1b2c","flagged":true,'
    '"outcome":"allowed","patient_id":"a1b2c3d4-e5f6-4789-8abc-def012345678","purpose":"emergency",'
    '"resource":"patient","seq":1,"source":"his.patients","trace_id":"0af7651916cd43dd8448eb211c80319c"}'
)
PINNED_HASHES = (
    "8ec15db928d0d7c65aeab732a7ec08fd170d22b9cba1e3ab87e7bc27c90a72de",
    "ea9659cf162f421fe54df5fa7d7b50015f64cb9cb25a257724011f4e4cd859a7",
    "d1d9f8ae179cb8567d3db17574fae7d6cf20dd4c44bacd38ca54a4716886828e",
)


def pinned_rows() -> list[dict[str, Any]]:
    """Three records as the store hashes new ones (``seq`` given, ``flagged`` always true or
    false): an emergency access, a refused read of a trail with no trace and no patient, and text
    outside ASCII."""
    return [
        PINNED | {"seq": 1, "flagged": True},
        PINNED
        | {
            "seq": 2,
            "event_id": uuid.UUID("5b0c1e7a-3f4d-4c2b-9a61-0d7e8f9a1b2d"),
            "source": "his.audit",
            "actor_roles": ["PATIENT"],
            "patient_id": None,
            "action": "read",
            "resource": "audit_trail",
            "purpose": "oversight",
            "outcome": "denied",
            "trace_id": None,
            "flagged": False,
        },
        PINNED
        | {"seq": 3, "event_id": uuid.UUID("5b0c1e7a-3f4d-4c2b-9a61-0d7e8f9a1b2e"), "resource": "Prüfung ✓"}
        | {"flagged": False},
    ]


def test_the_hashes_of_records_are_those_the_chain_has_always_computed() -> None:
    rows = pinned_rows()
    assert canonical(rows[0]).decode() == PINNED_CANONICAL
    prev, hashes = GENESIS, []
    for row in rows:
        prev = link(prev, row)
        hashes.append(prev.hex())
    assert tuple(hashes) == PINNED_HASHES


def _new(row: dict[str, Any]) -> NewRecord:
    content: dict[str, Any] = {k: v for k, v in row.items() if k != "seq"}
    return NewRecord(**(content | {"actor_roles": tuple(row["actor_roles"])}))


def test_a_new_record_hashes_as_its_content_always_did() -> None:
    """What the store and the fake hash: a ``NewRecord``'s content at its ``seq``."""
    records = [_new(row) for row in pinned_rows()]
    assert records[0].content(1) == pinned_rows()[0]
    assert canonical(records[0].content(1)).decode() == PINNED_CANONICAL
    prev, hashes = GENESIS, []
    for seq, record in enumerate(records, start=1):
        prev = link(prev, record.content(seq))
        hashes.append(prev.hex())
    assert tuple(hashes) == PINNED_HASHES
    unflagged = _new(PINNED)
    assert unflagged.content(1)["flagged"] is False  # a new record always hashes the field


def test_the_account_a_record_names_is_covered_by_its_hash_and_older_records_hash_as_before() -> None:
    """A record of a change to an account names it (ADR 0031): clearing, changing or adding the
    account is named; records without one hash exactly as they did before the field."""
    assert _new(PINNED).content(1).get("account_id") is None  # absent, not null: hashed without it
    account = uuid.UUID("c0ffee00-0000-4000-8000-000000000001")
    rows = [r | {"patient_id": None, "account_id": account} if r["seq"] == 2 else r for r in pinned_rows()]
    reforge(rows)
    assert verify(rows, head(rows), KEY).ok
    assert rows[0]["hash"].hex() == PINNED_HASHES[0]  # the record before it is unchanged
    assert rows[1]["hash"].hex() != PINNED_HASHES[1]  # the account is hashed
    content = {k: v for k, v in rows[1].items() if k not in ("prev_hash", "hash")}
    assert _new(content).content(2) == content  # what the store and the fake hash
    for seq, value in ((2, None), (2, uuid.uuid4()), (3, account)):
        tampered = [dict(r) for r in rows]
        tampered[seq - 1]["account_id"] = value
        v = verify(tampered, head(rows), KEY)
        assert not v.ok and v.first_bad_seq == seq and "altered" in v.problem, (seq, value)
