"""The inpatient and revenue flow under `his up`, through the gateway: one journey per seeded payer
plan (admit → lab → supplies → discharge → invoice) with the insurer's and the patient's shares
worked out by hand to the cent, the out-of-pocket cap, and payments under an idempotency key.

Every figure below comes from the seeded tariffs: the ward's daily rate set here, the lab
catalogue (GLU 60.00, CRP 120.00) and billing's price list (item.IV-SET 85.00), all in TRY.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Hospital, create_user, register_patient
from tests.support.waiting import wait_until

#: A rate whose 80 % is not a whole number of cents (1,876.536), to see the rounding rule.
RATE = "2345.67"
SUITE_RATE = "45000.00"

#: A lot that expires well after the test, on whatever day it runs.
IN_A_YEAR = (datetime.now(UTC).date() + timedelta(days=365)).isoformat()


@dataclass(frozen=True)
class Ward:
    gw: str
    admin: dict[str, str]
    doctor: dict[str, str]
    nurse: dict[str, str]
    tech: dict[str, str]
    clerk: dict[str, str]
    practitioner: str
    ward: str
    suite: str
    nurse_id: str = ""

    def call(self, method: str, path: str, auth: dict[str, str], body: Any = None, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.gw}{path}", json=body, headers=auth, timeout=15, **kw)

    def ok(self, method: str, path: str, auth: dict[str, str], body: Any = None, status: int = 200, **kw: Any) -> Any:
        r = self.call(method, path, auth, body, **kw)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        return r.json()


@pytest.fixture(scope="module")
def ward(shared_hospital: Hospital) -> Ward:
    h, gw = shared_hospital, shared_hospital.gateway
    admin = h.login()
    doctor_id, doctor = create_user(h, admin, "DOCTOR", "ward")
    nurse_id, nurse = create_user(h, admin, "NURSE", "ward")
    tech, clerk = (create_user(h, admin, role, "ward")[1] for role in ("LAB_TECH", "BILLING"))
    w = Ward(gw, admin, doctor, nurse, tech, clerk, practitioner="", ward="", suite="")
    practitioner = w.ok(
        "POST",
        "/api/practitioners",
        admin,
        {"full_name": "Dr. Ward", "specialty": "internal_medicine", "user_id": doctor_id},
        status=201,
    )["id"]
    wards = [
        w.ok(
            "POST",
            "/api/wards",
            admin,
            {"name": f"{label} {uuid.uuid4().hex[:6]}", "type": kind, "daily_rate": rate, "currency": "TRY", "beds": 6},
            status=201,
        )["id"]
        for label, kind, rate in (("Internal Medicine", "general", RATE), ("Private Suite", "private", SUITE_RATE))
    ]
    item = {"code": "IV-SET", "description": "Infusion set", "unit": "piece", "chargeable": True}
    assert w.call("POST", "/api/inventory/items", admin, item).status_code in (201, 409)
    w.ok(
        "POST",
        "/api/inventory/receipts",
        admin,
        {
            "item_code": "IV-SET",
            "location": "WARD-GEN",
            "lot": f"E2E{uuid.uuid4().hex[:6]}",
            "quantity": "100",
            "expires_on": IN_A_YEAR,
        },
        status=201,
    )
    return Ward(
        gw,
        admin,
        doctor,
        nurse,
        tech,
        clerk,
        practitioner=practitioner,
        ward=wards[0],
        suite=wards[1],
        nurse_id=nurse_id,
    )


def patient(h: Hospital, w: Ward, payer: str | None) -> str:
    extra: dict[str, Any] = {"coverage": {"payer": payer, "member_id": f"M{uuid.uuid4().int % 10**9}"}} if payer else {}
    return str(register_patient(h, w.admin, f"Inpatient{uuid.uuid4().hex[:8]}", **extra)["id"])


def wait_for_charges(w: Ward, patient_id: str, codes: set[str]) -> None:
    """Billing learns charges from other services' events: wait until it holds these."""

    def held() -> bool:
        r = w.call("GET", "/api/charges", w.clerk, params={"patient_id": patient_id})
        assert r.status_code == 200, r.text
        return codes <= {c["code"] for c in r.json()["items"]}

    wait_until(held, what=f"billing to capture {sorted(codes)}")


def admission_invoice(w: Ward, patient_id: str, payer: str | None) -> dict[str, Any]:
    """The admission's invoice under the patient's plan: coverage and charges reach billing on
    different streams, so an invoice issued before the coverage arrived is voided and reissued."""
    found: list[dict[str, Any]] = []

    def issued() -> bool:
        r = w.call("GET", "/api/invoices", w.clerk, params={"patient_id": patient_id})
        assert r.status_code == 200, r.text
        found[:] = [i for i in r.json()["items"] if i["kind"] == "admission" and i["status"] not in ("draft", "void")]
        return bool(found) and all(i["payer"] == (payer or "SELF") for i in found)

    wait_until(issued, what=f"the admission's invoice under {payer or 'SELF'}")
    assert len(found) == 1, found
    return w.ok("GET", f"/api/invoices/{found[0]['id']}", w.clerk)  # type: ignore[no-any-return]


def in_care(w: Ward, patient_id: str) -> None:
    """Clinicians act only in a patient's care: the admitting doctor's follows from the admission
    (patients learns it from its event); reception puts the ward nurse on the care team."""

    def assigned() -> bool:  # 422 until patients has learnt the nurse's account
        r = w.call("POST", f"/api/patients/{patient_id}/care-team", w.admin, {"user_id": w.nurse_id})
        assert r.status_code in (201, 422), r.text
        return r.status_code == 201

    wait_until(assigned, what="the ward nurse on the care team")
    wait_until(
        lambda: w.call("GET", f"/api/patients/{patient_id}", w.doctor).status_code == 200,
        what="the admitting doctor's care",
    )


def stay(
    w: Ward, patient_id: str, ward_id: str, payer: str | None, *, lab: bool = True, supplies: bool = True
) -> dict[str, Any]:
    """Admit, result a GLU and a CRP, use two infusion sets, discharge the same day (one night)."""
    admission = {"patient_id": patient_id, "practitioner_id": w.practitioner, "ward_id": ward_id}
    admitted = w.ok("POST", "/api/admissions", w.admin, admission, status=201)
    in_care(w, patient_id)
    codes = set()
    if lab:
        lab_order = {"patient_id": patient_id, "tests": ["GLU", "CRP"], "priority": "routine"}
        order = w.ok("POST", "/api/lab/orders", w.doctor, lab_order, status=201)["id"]
        for action in ("collect", "start"):
            w.ok("POST", f"/api/lab/orders/{order}/{action}", w.tech)
        results = [{"code": "GLU", "value": "85", "unit": "mg/dL"}, {"code": "CRP", "value": "3", "unit": "mg/L"}]
        w.ok("POST", f"/api/lab/orders/{order}/results", w.tech, {"results": results})
        codes |= {"lab.GLU", "lab.CRP"}
    if supplies:
        consumption = {
            "item_code": "IV-SET",
            "location": "WARD-GEN",
            "quantity": "2",
            "patient_id": patient_id,
            "reason": "patient",
        }
        w.ok("POST", "/api/inventory/consumptions", w.nurse, consumption, status=201)
        codes.add("item.IV-SET")
    if codes:  # everything of the stay is on billing's books before the patient leaves
        wait_for_charges(w, patient_id, codes)
    discharged = w.ok("POST", f"/api/admissions/{admitted['id']}/discharge", w.doctor)
    assert discharged["nights"] == 1  # admitted and discharged the same day: one night
    return admission_invoice(w, patient_id, payer)


def by_code(invoice: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {line["code"]: (line["total"], line["insurer_share"], line["patient_share"]) for line in invoice["lines"]}


BED = "bed.general"


#: plan → (insurer share, patient share) of each line and of the invoice, worked out by hand.
EXPECTED: dict[str | None, dict[str, tuple[str, str]]] = {
    # 80 % of each line, rounded half-up per line: 0.8 × 2,345.67 = 1,876.536 → 1,876.54.
    "SGK": {
        BED: ("1876.54", "469.13"),
        "lab.GLU": ("48.00", "12.00"),
        "lab.CRP": ("96.00", "24.00"),
        "item.IV-SET": ("136.00", "34.00"),
        "total": ("2156.54", "539.13"),
    },
    "ALLIANZ": {
        BED: ("2345.67", "0.00"),
        "lab.GLU": ("60.00", "0.00"),
        "lab.CRP": ("120.00", "0.00"),
        "item.IV-SET": ("170.00", "0.00"),
        "total": ("2695.67", "0.00"),
    },
    None: {
        BED: ("0.00", "2345.67"),
        "lab.GLU": ("0.00", "60.00"),
        "lab.CRP": ("0.00", "120.00"),
        "item.IV-SET": ("0.00", "170.00"),
        "total": ("0.00", "2695.67"),
    },
    # NOVA: supplies excluded (170.00, the patient's); of the covered 2,525.67 the patient pays the
    # 1,000.00 deductible and the 100.00 co-pay, the insurer 90 % of the other 1,425.67 =
    # 1,283.103 → 1,283.10 (only the bed's remainder has a fraction, so the order of lines does
    # not matter); the patient 1,425.67 − 1,283.10 = 142.57, so 1,242.57 + 170.00 = 1,412.57.
    "NOVA": {"total": ("1283.10", "1412.57"), "item.IV-SET": ("0.00", "170.00")},
}


@pytest.mark.parametrize("payer", ["SGK", "ALLIANZ", None, "NOVA"], ids=["SGK", "ALLIANZ", "self-pay", "NOVA"])
def test_a_discharged_patients_invoice_is_split_by_their_plan(
    shared_hospital: Hospital, ward: Ward, payer: str | None
) -> None:
    invoice = stay(ward, patient(shared_hospital, ward, payer), ward.ward, payer)
    assert invoice["payer"] == (payer or "SELF")
    assert invoice["currency"] == "TRY"
    lines = by_code(invoice)
    assert set(lines) == {BED, "lab.GLU", "lab.CRP", "item.IV-SET"}, invoice["lines"]
    assert [lines[c][0] for c in (BED, "lab.GLU", "lab.CRP", "item.IV-SET")] == [RATE, "60.00", "120.00", "170.00"]
    assert invoice["total"] == "2695.67"
    expected = EXPECTED[payer]
    assert (invoice["insurer_share"], invoice["patient_share"]) == expected["total"]
    for code, shares in expected.items():
        if code != "total":
            assert lines[code][1:] == shares, (code, invoice["lines"])
    assert invoice["status"] == ("paid" if expected["total"][1] == "0.00" else "open")
    claims = ward.ok("GET", "/api/claims", ward.clerk, params={"payer": payer or "SELF", "limit": 200})["items"]
    mine = [(c["amount"], c["status"]) for c in claims if c["invoice_id"] == invoice["id"]]
    assert mine == ([] if expected["total"][0] == "0.00" else [(expected["total"][0], "draft")])


def test_the_out_of_pocket_cap_holds(shared_hospital: Hospital, ward: Ward) -> None:
    """NOVA, one night at 45,000.00: deductible 1,000.00 + co-pay 100.00 + 10 % of 43,900.00 would
    make the patient pay 5,490.00; the plan's yearly cap is 5,000.00, so the insurer pays the rest."""
    invoice = stay(ward, patient(shared_hospital, ward, "NOVA"), ward.suite, "NOVA", lab=False, supplies=False)
    assert (invoice["total"], invoice["insurer_share"], invoice["patient_share"]) == ("45000.00", "40000.00", "5000.00")


def test_twenty_identical_payments_with_one_key_make_one_payment(shared_hospital: Hospital, ward: Ward) -> None:
    invoice = stay(ward, patient(shared_hospital, ward, "SGK"), ward.ward, "SGK", supplies=False)
    assert invoice["patient_share"] == "505.13"  # 469.13 + 12.00 + 24.00
    key = str(uuid.uuid4())
    headers = ward.clerk | {"Idempotency-Key": key}
    body = {"amount": "200.00", "currency": "TRY", "method": "card"}

    def pay(_: int) -> httpx.Response:
        return httpx.post(f"{ward.gw}/api/invoices/{invoice['id']}/payments", json=body, headers=headers, timeout=30)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(pay, range(20)))
    assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
    assert len({a.text for a in answers}) == 1  # the same answer, twenty times
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 19  # told so through the gateway
    paid = ward.ok("GET", f"/api/invoices/{invoice['id']}/payments", ward.clerk)
    assert [p["amount"] for p in paid["items"]] == ["200.00"]
    again = ward.call("POST", f"/api/invoices/{invoice['id']}/payments", headers, body | {"amount": "201.00"})
    assert again.status_code in (409, 422), again.text
    assert ward.ok("GET", f"/api/invoices/{invoice['id']}", ward.clerk)["status"] == "partially_paid"
    rest = ward.call(
        "POST",
        f"/api/invoices/{invoice['id']}/payments",
        ward.clerk | {"Idempotency-Key": "rest-" + key},
        {"amount": "305.13", "currency": "TRY", "method": "cash"},
    )
    assert rest.status_code == 201, rest.text
    assert ward.ok("GET", f"/api/invoices/{invoice['id']}", ward.clerk)["status"] == "paid"
