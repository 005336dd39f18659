"""Laboratory rules without IO: the order's state machine, flags from ranges, result validation."""

from __future__ import annotations

from decimal import Decimal

import pytest

from his.laboratory.domain import (
    Action,
    Flag,
    InvalidOrderError,
    InvalidResultError,
    InvalidTransitionError,
    LabTest,
    Status,
    Submitted,
    check_can_result,
    check_order,
    check_results,
    compute_flag,
    is_abnormal,
    is_critical,
    transition,
)


def _t(
    code: str,
    low: str | None,
    high: str | None,
    clow: str | None = None,
    chigh: str | None = None,
    unit: str | None = "mmol/L",
) -> LabTest:
    def d(v: str | None) -> Decimal | None:
        return Decimal(v) if v is not None else None

    return LabTest(code, code.lower(), "serum", unit, d(low), d(high), d(clow), d(chigh), Decimal("65.00"), "TRY")


K = _t("K", "3.5", "5.1", "2.5", "6.5")
CRP = _t("CRP", "0", "5", unit="mg/L")
UA = _t("UA", None, None, unit=None)
CATALOGUE = {t.code: t for t in (K, CRP, UA)}

ALLOWED = {
    (Status.PLACED, Action.COLLECT): Status.COLLECTED,
    (Status.COLLECTED, Action.START): Status.IN_PROGRESS,
    (Status.PLACED, Action.CANCEL): Status.CANCELLED,
    (Status.COLLECTED, Action.CANCEL): Status.CANCELLED,
    (Status.IN_PROGRESS, Action.CANCEL): Status.CANCELLED,
}


@pytest.mark.parametrize(("status", "action"), [(s, a) for s in Status for a in Action])
def test_every_transition_is_allowed_or_refused_naming_the_state(status: Status, action: Action) -> None:
    if (status, action) in ALLOWED:
        assert transition(status, action) is ALLOWED[(status, action)]
        return
    with pytest.raises(InvalidTransitionError) as err:
        transition(status, action)
    assert err.value.status is status and status.value in str(err.value)


@pytest.mark.parametrize("status", list(Status))
def test_results_only_while_in_progress(status: Status) -> None:
    if status is Status.IN_PROGRESS:
        check_can_result(status)
    else:
        with pytest.raises(InvalidTransitionError):
            check_can_result(status)


@pytest.mark.parametrize(
    ("value", "flag"),
    [
        ("2.4", Flag.CRITICAL_LOW),
        ("2.5", Flag.LOW),
        ("3.4", Flag.LOW),
        ("3.5", Flag.NORMAL),
        ("4.2", Flag.NORMAL),
        ("5.1", Flag.NORMAL),
        ("5.2", Flag.HIGH),
        ("6.5", Flag.HIGH),
        ("6.6", Flag.CRITICAL_HIGH),
    ],
)
def test_flags_follow_the_ranges_and_limits_belong_to_the_inner_band(value: str, flag: Flag) -> None:
    assert compute_flag(Decimal(value), K) is flag


def test_a_test_without_critical_limits_is_never_critical_and_one_without_ranges_is_not_compared() -> None:
    assert compute_flag(Decimal("500"), CRP) is Flag.HIGH
    assert compute_flag(Decimal("1"), UA) is None


@pytest.mark.parametrize(
    ("tests", "message"),
    [
        ([], "at least one"),
        (["K", "K"], "twice"),
        (["K", "XYZ"], "unknown"),
        (["k"], "unknown"),
        (["K"] * 31, "at most"),
    ],
)
def test_bad_orders_are_refused(tests: list[str], message: str) -> None:
    with pytest.raises(InvalidOrderError, match=message):
        check_order(tests, CATALOGUE)


def test_a_good_order_keeps_its_codes_in_order() -> None:
    assert check_order(["CRP", "K"], CATALOGUE) == ["CRP", "K"]


def test_results_are_flagged_and_carry_the_catalogue_unit_and_range() -> None:
    out = check_results(
        [
            Submitted("K", "6.9"),
            Submitted("CRP", " 3.0 ", unit="mg/L", flag="N"),
            Submitted("UA", "trace protein", flag="A"),
        ],
        ["K", "CRP", "UA"],
        CATALOGUE,
    )
    assert [(r.code, r.value, r.unit, r.flag) for r in out] == [
        ("K", "6.9", "mmol/L", Flag.CRITICAL_HIGH),
        ("CRP", "3.0", "mg/L", Flag.NORMAL),
        ("UA", "trace protein", None, Flag.ABNORMAL),
    ]
    assert out[0].reference_low == Decimal("3.5") and out[0].reference_high == Decimal("5.1")
    assert is_abnormal(out) and is_critical(out)
    normal = check_results([Submitted("K", "4.0")], ["K"], CATALOGUE)
    assert not is_abnormal(normal) and not is_critical(normal)


@pytest.mark.parametrize(
    ("submitted", "message"),
    [
        ([Submitted("K", "4.0")], "missing results for CRP"),
        ([Submitted("K", "4.0"), Submitted("CRP", "1"), Submitted("UA", "neg", flag="N")], "not on the order"),
        ([Submitted("K", "4.0"), Submitted("K", "4.1"), Submitted("CRP", "1")], "more than one"),
        ([Submitted("K", "6.9", flag="N"), Submitted("CRP", "1")], "HH against the reference range, not N"),
        ([Submitted("K", "4.0", flag="H"), Submitted("CRP", "1")], "N against"),
        ([Submitted("K", "4.0", flag="X"), Submitted("CRP", "1")], "flag must be one of"),
        ([Submitted("K", "4.0", unit="mg/dL"), Submitted("CRP", "1")], "unit is mmol/L"),
        ([Submitted("K", "hemolysed"), Submitted("CRP", "1")], "needs flag N or A"),
        ([Submitted("K", "hemolysed", flag="H"), Submitted("CRP", "1")], "needs flag N or A"),
        ([Submitted("K", "   "), Submitted("CRP", "1")], "printable"),
        ([Submitted("K", "4\x00"), Submitted("CRP", "1")], "printable"),
        ([Submitted("K", "1e3"), Submitted("CRP", "1")], "needs flag N or A"),
    ],
)
def test_bad_results_are_refused(submitted: list[Submitted], message: str) -> None:
    with pytest.raises(InvalidResultError, match=message):
        check_results(submitted, ["K", "CRP"], CATALOGUE)


def test_a_value_that_is_not_a_number_takes_an_explicit_n_or_a() -> None:
    (r,) = check_results([Submitted("K", "hemolysed", flag="A")], ["K"], CATALOGUE)
    assert r.flag is Flag.ABNORMAL and r.value == "hemolysed"
    with pytest.raises(InvalidResultError, match="needs flag N or A"):
        check_results([Submitted("UA", "negative")], ["UA"], CATALOGUE)
