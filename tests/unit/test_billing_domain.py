"""Billing arithmetic without IO: worked examples per seeded plan to the cent, and properties that
hold for any plan, lines and year so far (hypothesis)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from his.billing.domain import (
    CATEGORIES,
    SELF_PAY,
    Accumulator,
    BillingError,
    ClaimAction,
    ClaimStatus,
    InvalidTransitionError,
    InvoiceStatus,
    Line,
    Plan,
    UnknownPayerError,
    billable_currencies,
    check_payment,
    check_refund,
    claim_transition,
    payment_status,
    plan_for,
    price,
    unpriced,
)

D = Decimal


def all_at(pct: str) -> dict[str, Decimal]:
    return {c: D(pct) for c in CATEGORIES}


# The seeded plans (the migration seeds the same figures; the integration test checks them).
SGK = Plan("SGK", all_at("80"))
ALLIANZ = Plan("ALLIANZ", all_at("100"))
SELF = Plan(SELF_PAY, all_at("0"))
NOVA = Plan(
    "NOVA",
    all_at("90"),
    copay=D("100.00"),
    deductible=D("1000.00"),
    out_of_pocket_cap=D("5000.00"),
    excluded_categories=frozenset({"supplies"}),
)

# An admission: three bed nights, a lab order of two tests, and a chargeable supply.
STAY = [
    Line("bed.general", "bed", D(1), D("1500.00")),
    Line("bed.general", "bed", D(1), D("1500.00")),
    Line("bed.general", "bed", D(1), D("1500.00")),
    Line("lab.CBC", "laboratory", D(1), D("250.00")),
    Line("lab.CRP", "laboratory", D(1), D("180.50")),
    Line("item.SYRINGE-5ML", "supplies", D(3), D("12.75")),
]


def shares(plan: Plan, lines: list[Line], year: Accumulator | None = None) -> tuple[str, str, str]:
    p = price(plan, lines, year or Accumulator())
    return str(p.total), str(p.insurer_share), str(p.patient_share)


def test_sgk_pays_eighty_percent_of_every_line() -> None:
    assert shares(SGK, STAY) == ("4968.75", "3975.00", "993.75")
    p = price(SGK, STAY, Accumulator())
    assert [str(x.insurer_share) for x in p.lines] == ["1200.00"] * 3 + ["200.00", "144.40", "30.60"]


def test_allianz_pays_everything_and_self_pay_nothing() -> None:
    assert shares(ALLIANZ, STAY) == ("4968.75", "4968.75", "0.00")
    assert shares(SELF, STAY) == ("4968.75", "0.00", "4968.75")


def test_nova_deductible_then_copay_then_ninety_percent_supplies_excluded() -> None:
    p = price(NOVA, STAY, Accumulator())
    got = [(str(x.insurer_share), str(x.patient_share), str(x.deductible), str(x.copay)) for x in p.lines]
    assert got == [
        ("360.00", "1140.00", "1000.00", "100.00"),  # 1000 deductible, 100 co-pay, 10 % of 400
        ("1350.00", "150.00", "0.00", "0.00"),
        ("1350.00", "150.00", "0.00", "0.00"),
        ("225.00", "25.00", "0.00", "0.00"),
        ("162.45", "18.05", "0.00", "0.00"),
        ("0.00", "38.25", "0.00", "0.00"),  # supplies are excluded: the patient's in full
    ]
    assert (str(p.total), str(p.insurer_share), str(p.patient_share)) == ("4968.75", "3447.45", "1521.30")
    # The cap counts covered amounts only: the excluded 38.25 is not in the year's out-of-pocket.
    assert p.after == Accumulator(D("1000.00"), D("1483.05"))


def test_nova_second_invoice_of_the_year_skips_the_met_deductible_but_pays_the_copay_again() -> None:
    year = Accumulator(D("1000.00"), D("1483.05"))
    assert shares(NOVA, [Line("consultation.consultation", "consultation", D(1), D("600.00"))], year) == (
        "600.00",
        "450.00",
        "150.00",  # 100 co-pay + 10 % of 500
    )


def test_nova_cap_makes_the_insurer_pay_the_rest_of_the_year() -> None:
    year = Accumulator(D("1000.00"), D("4950.00"))
    p = price(
        NOVA, [Line("bed.icu", "bed", D(1), D("1000.00")), Line("lab.CBC", "laboratory", D(1), D("250.00"))], year
    )
    assert [(str(x.insurer_share), str(x.patient_share)) for x in p.lines] == [("950.00", "50.00"), ("250.00", "0.00")]
    assert p.after.out_of_pocket == D("5000.00")


def test_rounding_is_half_up_on_the_insurer_share() -> None:
    plan = Plan("X", all_at("90"))
    p = price(plan, [Line("lab.A", "laboratory", D(1), D("10.05"))], Accumulator())
    assert (str(p.insurer_share), str(p.patient_share)) == ("9.05", "1.00")  # 9.045 → 9.05
    # A line's total is rounded too: 3 × 3.335 = 10.005 → 10.01.
    assert Line("item.X", "supplies", D(3), D("3.335")).total == D("10.01")


def test_no_payer_is_self_pay_and_an_unknown_payer_is_never_priced_as_self_pay() -> None:
    plans = {"SGK": SGK, SELF_PAY: SELF}
    assert plan_for(None, plans) is SELF and plan_for("SGK", plans) is SGK
    with pytest.raises(UnknownPayerError, match="'ACME' has no plan in billing \\(plans: SELF, SGK\\)"):
        plan_for("ACME", plans)


def test_billing_invoices_in_the_currencies_of_its_plans() -> None:
    plans = {"SGK": SGK, SELF_PAY: SELF, "EU": Plan("EU", all_at("50"), currency="EUR")}
    assert billable_currencies(plans) == ["EUR", "TRY"]


def test_voiding_takes_the_invoice_back_out_of_the_year() -> None:
    p = price(NOVA, STAY, Accumulator())
    assert unpriced(p.after, p.deductible_applied, p.out_of_pocket_applied) == Accumulator()


def test_payment_and_refund_checks() -> None:
    assert check_payment(D("10.00"), "TRY", "TRY", D("10.00")) == D("10.00")
    for amount, currency in (
        (D("0"), "TRY"),
        (D("-1"), "TRY"),
        (D("10.01"), "TRY"),
        (D("1"), "EUR"),
        (D("1.001"), "TRY"),
        (D("NaN"), "TRY"),
    ):
        with pytest.raises(BillingError):
            check_payment(amount, currency, "TRY", D("10.00"))
    with pytest.raises(BillingError):
        check_refund(D("5.01"), "TRY", "TRY", D("5.00"))
    assert payment_status(D("10.00"), D("0")) is InvoiceStatus.OPEN
    assert payment_status(D("10.00"), D("4.00")) is InvoiceStatus.PARTIALLY_PAID
    assert payment_status(D("10.00"), D("10.00")) is InvoiceStatus.PAID
    assert payment_status(D("0.00"), D("0")) is InvoiceStatus.PAID  # nothing to pay


def test_claim_states() -> None:
    s = claim_transition(ClaimStatus.DRAFT, ClaimAction.SUBMIT)
    assert claim_transition(claim_transition(s, ClaimAction.ACCEPT), ClaimAction.PAY) is ClaimStatus.PAID
    assert claim_transition(s, ClaimAction.REJECT) is ClaimStatus.REJECTED
    for status, action in (
        (ClaimStatus.DRAFT, ClaimAction.PAY),
        (ClaimStatus.REJECTED, ClaimAction.ACCEPT),
        (ClaimStatus.PAID, ClaimAction.SUBMIT),
        (ClaimStatus.VOID, ClaimAction.SUBMIT),
    ):
        with pytest.raises(InvalidTransitionError):
            claim_transition(status, action)


# --- properties -------------------------------------------------------------------------------

money = st.decimals(min_value=D("0.00"), max_value=D("50000.00"), places=2, allow_nan=False, allow_infinity=False)
percent = st.decimals(min_value=D(0), max_value=D(100), places=2, allow_nan=False, allow_infinity=False)
codes = st.sampled_from(["bed.general", "lab.CBC", "item.GAUZE", "consultation.checkup", "item.IV-SET"])


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    return Plan(
        "P",
        {c: draw(percent) for c in CATEGORIES},
        copay=draw(money),
        deductible=draw(money),
        out_of_pocket_cap=draw(st.none() | money),
        excluded_categories=frozenset(draw(st.sets(st.sampled_from(CATEGORIES), max_size=2))),
        excluded_codes=frozenset(draw(st.sets(codes, max_size=1))),
    )


lines = st.lists(
    st.builds(
        Line,
        codes,
        st.sampled_from(CATEGORIES),
        st.decimals(min_value=D("0.001"), max_value=D(100), places=3, allow_nan=False, allow_infinity=False),
        st.decimals(min_value=D("0"), max_value=D("20000"), places=4, allow_nan=False, allow_infinity=False),
    ),
    max_size=12,
)


@st.composite
def years(draw: st.DrawFn, plan: Plan) -> Accumulator:
    cap = plan.out_of_pocket_cap
    oop = draw(st.decimals(min_value=D(0), max_value=cap if cap is not None else D("90000"), places=2))
    return Accumulator(draw(st.decimals(min_value=D(0), max_value=plan.deductible, places=2)), oop)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), plan=plans(), items=lines)
def test_shares_add_up_never_negative_and_the_cap_holds(data: st.DataObject, plan: Plan, items: list[Line]) -> None:
    year = data.draw(years(plan))
    p = price(plan, items, year)
    for x in p.lines:
        assert x.insurer_share + x.patient_share == x.total
        assert x.insurer_share >= 0 and x.patient_share >= 0
        assert x.total == x.total.quantize(D("0.01")) and x.insurer_share == x.insurer_share.quantize(D("0.01"))
    assert p.insurer_share + p.patient_share == p.total
    excluded = sum((x.total for x in p.lines if x.excluded), D(0))
    covered_patient = p.patient_share - excluded
    assert covered_patient == p.after.out_of_pocket - year.out_of_pocket
    if plan.out_of_pocket_cap is not None:
        # The patient's share of covered amounts in the year never passes the cap; excluded
        # amounts are on top of it, never counted in it.
        assert p.after.out_of_pocket <= plan.out_of_pocket_cap
    assert p.after.deductible_used <= max(plan.deductible, year.deductible_used)
    assert price(plan, items, year) == p  # same input, same output


@settings(max_examples=200, deadline=None)
@given(plan=plans(), invoices=st.lists(lines, min_size=1, max_size=5))
def test_a_year_of_invoices_never_passes_the_cap(plan: Plan, invoices: list[list[Line]]) -> None:
    year = Accumulator()
    for items in invoices:
        p = price(plan, items, year)
        assert p.insurer_share + p.patient_share == p.total
        year = p.after
        if plan.out_of_pocket_cap is not None:
            assert year.out_of_pocket <= plan.out_of_pocket_cap


@pytest.mark.parametrize(
    ("amount", "pct"),
    [("0.01", "50"), ("0.03", "50"), ("0.05", "10"), ("100.01", "50"), ("0.07", "70"), ("999.99", "33.33")],
)
def test_the_patient_pays_the_remainder_so_half_cents_never_split_a_line(amount: str, pct: str) -> None:
    """The insurer's share is rounded; the patient's is what is left, so the two add up exactly."""
    plan = Plan("HALF", all_at(pct))
    priced = price(plan, [Line("X", "procedure", D(1), D(amount))], Accumulator())
    line = priced.lines[0]
    assert line.insurer_share + line.patient_share == D(amount)
    assert line.insurer_share == (D(amount) * D(pct) / 100).quantize(D("0.01"), rounding="ROUND_HALF_UP")
