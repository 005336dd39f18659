"""Laboratory rules: the order's states, what an order and its results must look like, and how a
numeric value is flagged against the catalogue's ranges. Pure, no IO.

Flags (HL7 v2 table 0078, the subset used here): N normal, L/H below/above the reference range,
LL/HH below/above the critical range, A abnormal (for values that are not numbers). A value on a
range's limit belongs to the inner band (a potassium of exactly 5.1 with range 3.5-5.1 is N).

A flag sent with a numeric value must agree with the one computed from the catalogue, or the
results are refused (422): a disagreement means the number or the flag was mistyped, and
silently overriding either would hide the mistake behind a plausible-looking result. Sending no
flag with a number is the normal case (it is computed).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from his.kernel.transitions import Lifecycle


class Status(StrEnum):
    PLACED = "placed"
    COLLECTED = "collected"
    IN_PROGRESS = "in_progress"
    RESULTED = "resulted"
    CANCELLED = "cancelled"


class Action(StrEnum):
    COLLECT = "collect"
    START = "start"
    CANCEL = "cancel"


class Priority(StrEnum):
    ROUTINE = "routine"
    URGENT = "urgent"
    STAT = "stat"


class Flag(StrEnum):
    NORMAL = "N"
    LOW = "L"
    HIGH = "H"
    CRITICAL_LOW = "LL"
    CRITICAL_HIGH = "HH"
    ABNORMAL = "A"


CRITICAL = frozenset({Flag.CRITICAL_LOW, Flag.CRITICAL_HIGH})
#: Flags a value that is not a number may carry (it cannot be below or above a range).
QUALITATIVE_FLAGS = frozenset({Flag.NORMAL, Flag.ABNORMAL})

#: Most tests one order may hold.
MAX_TESTS = 30
VALUE_MAX = 64


class InvalidTransitionError(ValueError):
    """The order is not in a state that allows this; ``status`` is the state it is in."""

    def __init__(self, status: Status, attempted: str) -> None:
        super().__init__(f"the order is {status.value}: it cannot take '{attempted}'")
        self.status = status


class InvalidOrderError(ValueError):
    """The order request breaks a rule; the message says which."""


class InvalidResultError(ValueError):
    """The submitted results break a rule; the message says which."""


#: A lab order's lifecycle (results are entered apart: ``check_can_result``).
transition: Lifecycle[Status, Action] = Lifecycle(
    {
        (Status.PLACED, Action.COLLECT): Status.COLLECTED,
        (Status.COLLECTED, Action.START): Status.IN_PROGRESS,
        (Status.PLACED, Action.CANCEL): Status.CANCELLED,
        (Status.COLLECTED, Action.CANCEL): Status.CANCELLED,
        (Status.IN_PROGRESS, Action.CANCEL): Status.CANCELLED,
    },
    refuse=lambda status, action: InvalidTransitionError(status, action.value),
)


def check_can_result(status: Status) -> None:
    """Results are entered only while the order is in progress."""
    if status is not Status.IN_PROGRESS:
        raise InvalidTransitionError(status, "results")


@dataclass(frozen=True)
class LabTest:
    """One entry of the test catalogue. A test without reference limits is qualitative."""

    code: str
    label: str
    specimen: str
    unit: str | None
    reference_low: Decimal | None
    reference_high: Decimal | None
    critical_low: Decimal | None
    critical_high: Decimal | None
    price: Decimal
    currency: str


def check_order(tests: Sequence[str], catalogue: Mapping[str, LabTest]) -> list[str]:
    """The test codes of a new order: at least one, at most ``MAX_TESTS``, no repeats, all known."""
    if not tests:
        raise InvalidOrderError("an order needs at least one test")
    if len(tests) > MAX_TESTS:
        raise InvalidOrderError(f"an order holds at most {MAX_TESTS} tests")
    repeated = sorted({c for c in tests if tests.count(c) > 1})
    if repeated:
        raise InvalidOrderError(f"tests ordered twice: {', '.join(repeated)}")
    unknown = [c for c in tests if c not in catalogue]
    if unknown:
        raise InvalidOrderError(f"unknown test codes: {', '.join(_shown(unknown))}; see /api/lab/catalog")
    return list(tests)


def _shown(codes: Iterable[str]) -> list[str]:
    return [c if len(c) <= 16 else c[:16] + "…" for c in codes]


def compute_flag(value: Decimal, test: LabTest) -> Flag | None:
    """The flag of a numeric value against the test's ranges; None when the test has no ranges."""
    if test.reference_low is None and test.reference_high is None:
        return None
    if test.critical_low is not None and value < test.critical_low:
        return Flag.CRITICAL_LOW
    if test.critical_high is not None and value > test.critical_high:
        return Flag.CRITICAL_HIGH
    if test.reference_low is not None and value < test.reference_low:
        return Flag.LOW
    if test.reference_high is not None and value > test.reference_high:
        return Flag.HIGH
    return Flag.NORMAL


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


def as_number(value: str) -> Decimal | None:
    """The value as a finite decimal if it is written as a plain number (no exponent, no unit)."""
    text = value.strip()
    if not _NUMBER.match(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        return None


@dataclass(frozen=True)
class Submitted:
    """One result as a technician entered it."""

    code: str
    value: str
    unit: str | None = None
    flag: str | None = None


@dataclass(frozen=True)
class Result:
    """One result as stored and published: with the catalogue's unit and range, and its flag."""

    code: str
    value: str
    unit: str | None
    reference_low: Decimal | None
    reference_high: Decimal | None
    flag: Flag


@dataclass(frozen=True)
class Order:
    """A lab order: its tests in the order they were asked for, its state and when it reached
    each one, and (once resulted) its results in the same order."""

    id: uuid.UUID
    patient_id: uuid.UUID
    ordered_by: uuid.UUID
    priority: Priority
    status: Status
    version: int
    tests: tuple[str, ...]
    placed_at: datetime
    collected_at: datetime | None = None
    started_at: datetime | None = None
    resulted_at: datetime | None = None
    cancelled_at: datetime | None = None
    results: tuple[Result, ...] = ()


def check_results(
    submitted: Sequence[Submitted], ordered: Sequence[str], catalogue: Mapping[str, LabTest]
) -> list[Result]:
    """Validate the results of an order: exactly one per ordered test, units as in the catalogue,
    flags computed for numbers (a contradicting flag is refused), explicit N or A otherwise."""
    codes = [s.code for s in submitted]
    repeated = sorted({c for c in codes if codes.count(c) > 1})
    if repeated:
        raise InvalidResultError(f"more than one result for: {', '.join(_shown(repeated))}")
    missing = [c for c in ordered if c not in codes]
    extra = [c for c in codes if c not in ordered]
    if missing or extra:
        parts = ([f"missing results for {', '.join(missing)}"] if missing else []) + (
            [f"results for tests not on the order: {', '.join(_shown(extra))}"] if extra else []
        )
        raise InvalidResultError("; ".join(parts))
    by_code = {s.code: s for s in submitted}
    return [_result(by_code[c], catalogue[c]) for c in ordered]


def _result(s: Submitted, test: LabTest) -> Result:
    value = s.value.strip()
    if not value or len(value) > VALUE_MAX or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InvalidResultError(f"{test.code}: a value is 1 to {VALUE_MAX} printable characters")
    if s.unit is not None and s.unit != test.unit:
        expected = test.unit or "no unit"
        raise InvalidResultError(f"{test.code}: the unit is {expected}, not {s.unit[:16]!r}")
    try:
        given = Flag(s.flag) if s.flag is not None else None
    except ValueError:
        raise InvalidResultError(f"{test.code}: flag must be one of N, L, H, LL, HH, A") from None
    number = as_number(value)
    computed = compute_flag(number, test) if number is not None else None
    if computed is not None:
        if given is not None and given is not computed:
            raise InvalidResultError(
                f"{test.code}: {value} {test.unit or ''} is {computed.value} against the reference range, "
                f"not {given.value}; send the flag as computed or leave it out"
            )
        flag = computed
    else:
        if given is None or given not in QUALITATIVE_FLAGS:
            raise InvalidResultError(f"{test.code}: a value that is not compared with a range needs flag N or A")
        flag = given
    return Result(test.code, value, test.unit, test.reference_low, test.reference_high, flag)


def is_abnormal(results: Iterable[Result]) -> bool:
    return any(r.flag is not Flag.NORMAL for r in results)


def is_critical(results: Iterable[Result]) -> bool:
    return any(r.flag in CRITICAL for r in results)
