"""Missing access records and a rolled-back witness, named by the pure verifier (ADR 0028)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from his.audit.domain import GENESIS, Checkpoint, Missing, check_witness, link, missing_numbers, verify

KEY = b"checkpoint key"
P, L = "his.patients", "his.laboratory"

GAPS: dict[str, tuple[dict[str, list[int]], dict[str, int], list[Missing]]] = {
    "none": ({P: [1, 2, 3]}, {P: 3}, []),
    "nothing numbered yet": ({}, {P: 0}, []),
    "one in the middle": ({P: [1, 2, 4]}, {P: 4}, [Missing(P, 3, 3)]),
    "a run in the middle": ({P: [1, 5]}, {P: 5}, [Missing(P, 2, 4)]),
    "the first": ({P: [2, 3]}, {P: 3}, [Missing(P, 1, 1)]),
    "the last, seen by the producer's latest": ({P: [1, 2]}, {P: 3}, [Missing(P, 3, 3)]),
    "all of a producer's": ({}, {L: 2}, [Missing(L, 1, 2)]),
    "out of order and twice": ({P: [3, 1, 3, 2]}, {P: 3}, []),
    "no latest known": ({P: [1, 3]}, {}, [Missing(P, 2, 2)]),
    "the producer behind the chain": ({P: [1, 2, 3]}, {P: 2}, []),
    "per producer": ({P: [1, 3], L: [2]}, {P: 4, L: 2}, [Missing(L, 1, 1), Missing(P, 2, 2), Missing(P, 4, 4)]),
}


@pytest.mark.parametrize("case", list(GAPS))
def test_missing_numbers(case: str) -> None:
    numbers, latest, expected = GAPS[case]
    assert missing_numbers(numbers, latest) == expected


def _chain(numbers: list[int | None]) -> list[dict[str, Any]]:
    rows, prev = [], GENESIS
    for seq, number in enumerate(numbers, start=1):
        row: dict[str, Any] = {
            "seq": seq,
            "event_id": uuid.uuid4(),
            "at": datetime(2026, 12, 1, tzinfo=UTC),
            "source": P,
            "actor_id": uuid.uuid4(),
            "actor_roles": ["DOCTOR"],
            "patient_id": uuid.uuid4(),
            "action": "read",
            "resource": "patient",
            "purpose": "care",
            "outcome": "allowed",
            "trace_id": None,
            "flagged": False,
            "producer_seq": number,
        }
        row["prev_hash"], row["hash"] = prev, link(prev, row)
        prev = row["hash"]
        rows.append(row)
    return rows


def test_a_number_is_part_of_the_records_hash() -> None:
    rows = _chain([1, 2])
    rows[1]["producer_seq"] = 3
    assert verify(rows).problem == "record 2 was altered; access records missing: his.patients 2"


def test_a_deleted_row_is_named_by_its_place_in_the_chain_and_by_its_producers_number() -> None:
    rows = _chain([1, 2, 3, None, 4])
    del rows[1]
    verdict = verify(rows, latest={P: 4})
    assert not verdict.ok and verdict.first_bad_seq == 2
    assert verdict.missing == (Missing(P, 2, 2),)
    assert verdict.problem == "record 2 is missing (next is 3); access records missing: his.patients 2"


def test_a_deleted_last_row_that_no_checkpoint_saw_is_named_by_the_producers_latest() -> None:
    rows = _chain([1, 2, 3])
    checkpoint = Checkpoint.make(KEY, 2, rows[1]["hash"])
    assert verify(rows[:2], checkpoint, KEY).ok  # the chain and its checkpoint alone see nothing
    verdict = verify(rows[:2], checkpoint, KEY, latest={P: 3})
    assert verdict.missing == (Missing(P, 3, 3),) and verdict.problem == "access records missing: his.patients 3"


def _witness(n: int) -> list[Checkpoint]:
    out: list[Checkpoint] = []
    for i in range(n):
        out.append(Checkpoint.make(KEY, 10 * (i + 1), bytes([i]) * 32, after=out[-1] if out else None))
    return out


def test_checkpoints_are_numbered_and_chained() -> None:
    w = _witness(3)
    assert [c.n for c in w] == [1, 2, 3] and w[0].prev == GENESIS and w[2].prev == w[1].mac
    assert Checkpoint.from_json(w[2].to_json()) == w[2]
    assert check_witness(w, KEY, (3, w[2].mac)) == ""


WITNESS: dict[str, tuple[Any, str]] = {
    "the last lines cut off": (lambda w: (w[:3], (5, w[4].mac)), "rolled back: checkpoints 4..5 cut off its end"),
    "one cut out": (lambda w: ([*w[:2], *w[3:]], (5, w[4].mac)), "lacks checkpoint 3"),
    "the first cut out": (lambda w: (w[1:], (5, w[4].mac)), "lacks checkpoint 1"),
    "two swapped": (lambda w: ([w[0], w[2], w[1], *w[3:]], (5, w[4].mac)), "lacks checkpoint 2"),
    "a line forged": (lambda w: ([*w[:4], Checkpoint(99, w[4].hash, w[4].mac, 5, w[4].prev)], None), "not authentic"),
    "the last one replaced by an older": (lambda w: ([*w[:4], w[3]], (5, w[4].mac)), "checkpoint 4"),
    "the count's checkpoint not the file's": (lambda w: (w, (5, w[3].mac)), "checkpoint 5 of the witness is not"),
}


@pytest.mark.parametrize("case", list(WITNESS))
def test_a_tampered_witness_is_named(case: str) -> None:
    tamper, words = WITNESS[case]
    entries, count = tamper(_witness(5))
    problem = check_witness(entries, KEY, count)
    assert words in problem, problem


def test_checkpoints_from_before_the_chaining_are_followed_by_numbered_ones() -> None:
    old = Checkpoint.make(KEY, 5, bytes(32))
    old = Checkpoint(old.seq, old.hash, Checkpoint.mac_of(KEY, 5, bytes(32)))  # n 0: unnumbered
    new = Checkpoint.make(KEY, 6, bytes([1]) * 32, after=old)
    assert (new.n, new.prev) == (1, GENESIS)
    assert check_witness([old, new], KEY, (1, new.mac)) == ""
