"""Stateful property tests of the clinical lifecycles, through the gateway of the shared hospital.

Each machine keeps a model of what must be true, sends random sequences of valid and invalid
commands (as the role that would send them), checks every answer against the model (the right
status, 4xx for what the rules refuse, never a 5xx) and after every step checks its invariants
against what the API reports. Runs are random (no example database); a failure prints the
``@reproduce_failure`` blob that replays it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.e2e.clinic import SETTINGS, Clinic, open_clinic
from tests.e2e.harness import Hospital
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def clinic(shared_hospital: Hospital) -> Iterator[Clinic]:
    c = open_clinic(shared_hospital)
    yield c
    c.api.http.close()


# --- appointments --------------------------------------------------------------------------------

#: Consultation slots of 20 minutes in the practitioner's two-hour shift (08:00-10:00 UTC).
SLOTS = 6
SLOT = timedelta(minutes=20)
HOLDING = {"booked", "checked_in", "completed"}
APPOINTMENT_STEPS = {
    ("booked", "check-in"): "checked_in",
    ("booked", "cancel"): "cancelled",
    ("booked", "no-show"): "no_show",
    ("checked_in", "complete"): "completed",
}


@dataclass
class Appointment:
    patient: str
    slot: int
    status: str = "booked"


class Appointments(RuleBasedStateMachine):
    """Book, reschedule, check in, complete, cancel, mark no-shows, on one practitioner's day."""

    clinic: ClassVar[Clinic]
    appointments = Bundle("appointments")

    def __init__(self) -> None:
        super().__init__()
        c = self.clinic
        self.day = c.next_day()
        self.shift = self.day + timedelta(hours=8)
        self.practitioner = c.new_practitioner(self.shift, self.shift + SLOTS * SLOT)
        self.model: dict[str, Appointment] = {}

    def at(self, slot: int) -> dict[str, str]:
        start = self.shift + slot * SLOT
        return {"start": start.isoformat(), "end": (start + SLOT).isoformat()}

    def holder(self, slot: int, but: str | None = None) -> str | None:
        return next((i for i, a in self.model.items() if a.slot == slot and a.status in HOLDING and i != but), None)

    def booking(self, patient: int, slot: int) -> dict[str, str]:
        return {
            "patient_id": self.clinic.outpatients[patient],
            "practitioner_id": self.practitioner,
            "service": "consultation",
            **self.at(slot),
        }

    @rule(target=appointments, patient=st.integers(0, 2), slot=st.integers(0, SLOTS - 1))
    def book(self, patient: int, slot: int) -> Any:
        r = self.clinic.api.call("POST", "/api/appointments", self.clinic.reception, self.booking(patient, slot))
        taken = self.holder(slot)
        if taken is not None:
            assert r.status_code == 409, r.text
            assert r.json()["conflict"]["appointment"]["id"] == taken
            return multiple()
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "booked"
        aid = str(r.json()["id"])
        self.model[aid] = Appointment(self.clinic.outpatients[patient], slot)
        return aid

    @rule(patient=st.integers(0, 2), hours=st.integers(1, 48))
    def book_in_the_past(self, patient: int, hours: int) -> None:
        body = self.booking(patient, 0)
        past = datetime.now(UTC) - timedelta(hours=hours)
        body |= {"start": past.isoformat(), "end": (past + SLOT).isoformat()}
        assert self.clinic.api.call("POST", "/api/appointments", self.clinic.reception, body).status_code == 422

    @rule(patient=st.integers(0, 2), slot=st.sampled_from([-1, SLOTS]))
    def book_outside_the_shift(self, patient: int, slot: int) -> None:
        r = self.clinic.api.call("POST", "/api/appointments", self.clinic.reception, self.booking(patient, slot))
        assert r.status_code == 409 and r.json()["conflict"] == {"with": "availability"}, r.text

    @rule(patient=st.integers(0, 2), slot=st.integers(0, SLOTS - 1), minutes=st.sampled_from([10, 30]))
    def book_the_wrong_length(self, patient: int, slot: int, minutes: int) -> None:
        body = self.booking(patient, slot)
        body["end"] = (datetime.fromisoformat(body["start"]) + timedelta(minutes=minutes)).isoformat()
        assert self.clinic.api.call("POST", "/api/appointments", self.clinic.reception, body).status_code == 422

    @rule(aid=appointments, action=st.sampled_from(["check-in", "complete", "cancel", "no-show"]))
    def step(self, aid: str, action: str) -> None:
        c = self.clinic
        who = c.admin if action == "complete" else c.reception  # completing is clinical (or ADMIN)
        r = c.api.call("POST", f"/api/appointments/{aid}/{action}", who)
        after = APPOINTMENT_STEPS.get((self.model[aid].status, action))
        if after is None:
            assert r.status_code == 409, (self.model[aid], action, r.text)
            return
        assert r.status_code == 200, (self.model[aid], action, r.text)
        assert r.json()["status"] == after
        self.model[aid].status = after

    @rule(aid=appointments, slot=st.integers(0, SLOTS - 1))
    def reschedule(self, aid: str, slot: int) -> None:
        c = self.clinic
        r = c.api.call("POST", f"/api/appointments/{aid}/reschedule", c.reception, self.at(slot))
        if self.model[aid].status != "booked":
            assert r.status_code == 409, r.text
            return
        taken = self.holder(slot, but=aid)
        if taken is not None:
            assert r.status_code == 409 and r.json()["conflict"]["appointment"]["id"] == taken, r.text
            return
        assert r.status_code == 200, r.text
        self.model[aid].slot = slot

    @rule()
    def step_an_unknown_appointment(self) -> None:
        r = self.clinic.api.call("POST", f"/api/appointments/{uuid.uuid4()}/cancel", self.clinic.reception)
        assert r.status_code == 404, r.text

    @invariant()
    def every_appointment_is_as_the_model_says(self) -> None:
        c = self.clinic
        seen: dict[str, tuple[str, str]] = {}
        for p in c.outpatients:
            items = c.api.ok("GET", "/api/appointments", c.reception, params={"patient_id": p, "limit": 200})["items"]
            seen |= {
                str(a["id"]): (a["status"], a["start"]) for a in items if a["practitioner_id"] == self.practitioner
            }
        expected = {i: (a.status, self.at(a.slot)["start"]) for i, a in self.model.items()}
        assert seen == expected

    @invariant()
    def free_slots_are_the_ones_nobody_holds(self) -> None:
        c = self.clinic
        free = c.api.ok(
            "GET",
            f"/api/practitioners/{self.practitioner}/slots",
            c.reception,
            params={"date": self.day.date().isoformat(), "service": "consultation"},
        )["items"]
        offered = {s["start"] for s in free}
        assert offered == {self.at(s)["start"] for s in range(SLOTS) if self.holder(s) is None}


def test_appointment_lifecycle(clinic: Clinic) -> None:
    Appointments.clinic = clinic
    run_state_machine_as_test(Appointments, settings=SETTINGS)


# --- admissions and beds -------------------------------------------------------------------------

BED_STEPS = {
    ("cleaning", "release"): "available",
    ("available", "close"): "closed",
    ("closed", "open"): "available",
    ("available", "isolate"): "isolation",
    ("isolation", "open"): "available",
}


@dataclass
class Stay:
    patient: str
    bed: str
    active: bool = True


class Admissions(RuleBasedStateMachine):
    """Admit, transfer, discharge, and work the beds, on two small wards of their own."""

    clinic: ClassVar[Clinic]
    admissions = Bundle("admissions")

    def __init__(self) -> None:
        super().__init__()
        c = self.clinic
        self.wards = [c.new_ward(2), c.new_ward(1)]
        #: bed id → [ward id, state]
        self.beds: dict[str, list[str]] = {}
        for w in self.wards:  # in the order of the wards, then of their labels: the same on a replay
            for b in c.api.ok("GET", "/api/beds", c.admin, params={"ward_id": w})["items"]:
                assert b["state"] == "available"
                self.beds[str(b["id"])] = [w, "available"]
        self.bed_ids = list(self.beds)
        self.model: dict[str, Stay] = {}

    def free_in(self, ward: str) -> set[str]:
        return {b for b, (w, state) in self.beds.items() if w == ward and state == "available"}

    def admitted(self, patient: str) -> bool:
        return any(s.active and s.patient == patient for s in self.model.values())

    @rule(target=admissions, patient=st.integers(0, 2), ward=st.integers(0, 1))
    def admit(self, patient: int, ward: int) -> Any:
        c = self.clinic
        pid, wid = c.inpatients[patient], self.wards[ward]
        body = {"patient_id": pid, "practitioner_id": c.practitioner, "ward_id": wid}
        r = c.api.call("POST", "/api/admissions", c.reception, body)
        if self.admitted(pid) or not self.free_in(wid):
            assert r.status_code == 409, r.text
            return multiple()
        assert r.status_code == 201, r.text
        bed = str(r.json()["bed_id"])
        assert bed in self.free_in(wid)
        self.beds[bed][1] = "occupied"
        self.model[str(r.json()["id"])] = Stay(pid, bed)
        return str(r.json()["id"])

    @rule(aid=admissions, ward=st.integers(0, 1), named=st.none() | st.integers(0, 2))
    def transfer(self, aid: str, ward: int, named: int | None) -> None:
        c, stay, wid = self.clinic, self.model[aid], self.wards[ward]
        bed = None if named is None else self.bed_ids[named]
        r = c.api.call("POST", f"/api/admissions/{aid}/transfer", c.reception, {"ward_id": wid, "bed_id": bed})
        if stay.active and bed is not None and bed != stay.bed and self.beds[bed][0] != wid:
            assert r.status_code == 422, r.text  # that bed is not in that ward
            return
        possible = self.free_in(wid) if bed is None else {bed} & self.free_in(wid)
        if not stay.active or not possible:
            assert r.status_code == 409, (stay, r.text)
            return
        assert r.status_code == 200, r.text
        moved = str(r.json()["bed_id"])
        assert moved in possible
        self.beds[stay.bed][1], self.beds[moved][1] = "cleaning", "occupied"
        stay.bed = moved

    @rule(aid=admissions)
    def discharge(self, aid: str) -> None:
        c, stay = self.clinic, self.model[aid]
        r = c.api.call("POST", f"/api/admissions/{aid}/discharge", c.reception)
        if not stay.active:
            assert r.status_code == 409, r.text
            return
        assert r.status_code == 200 and r.json()["status"] == "discharged", r.text
        stay.active = False
        self.beds[stay.bed][1] = "cleaning"

    @rule(bed=st.integers(0, 2), action=st.sampled_from(["release", "close", "open", "isolate"]))
    def work_a_bed(self, bed: int, action: str) -> None:
        c, bid = self.clinic, self.bed_ids[bed]
        r = c.api.call("POST", f"/api/beds/{bid}/{action}", c.admin)
        after = BED_STEPS.get((self.beds[bid][1], action))
        if after is None:
            assert r.status_code == 409, (self.beds[bid], action, r.text)
            return
        assert r.status_code == 200 and r.json()["state"] == after, (self.beds[bid], action, r.text)
        self.beds[bid][1] = after

    @invariant()
    def beds_and_free_counts_are_as_the_model_says(self) -> None:
        c = self.clinic
        for w in self.wards:
            listed = c.api.ok("GET", "/api/beds", c.admin, params={"ward_id": w})["items"]
            assert {str(b["id"]): b["state"] for b in listed} == {b: s for b, (x, s) in self.beds.items() if x == w}
        counts = {w["id"]: w["beds"] for w in c.api.ok("GET", "/api/wards", c.admin)["items"] if w["id"] in self.wards}
        for w in self.wards:
            assert counts[w].get("available", 0) == len(self.free_in(w)), counts[w]
            assert counts[w]["total"] == sum(1 for x, _ in self.beds.values() if x == w)

    @invariant()
    def each_occupied_bed_holds_exactly_one_active_admission(self) -> None:
        c = self.clinic
        items = c.api.ok("GET", "/api/admissions", c.reception, params={"active": "true", "limit": 200})["items"]
        assert len(items) < 200  # (else some would be missed)
        for p in c.inpatients:  # a patient is in at most one bed
            assert sum(1 for a in items if a["patient_id"] == p) <= 1, items
        active = {str(a["id"]): str(a["bed_id"]) for a in items if a["ward_id"] in self.wards}
        assert active == {a: s.bed for a, s in self.model.items() if s.active}
        assert len(set(active.values())) == len(active)  # no bed holds two
        assert set(active.values()) == {b for b, (_, s) in self.beds.items() if s == "occupied"}

    def teardown(self) -> None:
        """Discharge whoever is still in: the next run admits the same patients."""
        for aid, stay in self.model.items():
            if stay.active:
                self.clinic.api.ok("POST", f"/api/admissions/{aid}/discharge", self.clinic.reception)


def test_admission_and_bed_lifecycle(clinic: Clinic) -> None:
    Admissions.clinic = clinic
    run_state_machine_as_test(Admissions, settings=SETTINGS)


# --- lab orders ----------------------------------------------------------------------------------

LAB_STEPS = {
    ("placed", "collect"): "collected",
    ("collected", "start"): "in_progress",
    ("placed", "cancel"): "cancelled",
    ("collected", "cancel"): "cancelled",
    ("in_progress", "cancel"): "cancelled",
}
#: A normal result of each test the machines order.
RESULTS = {"GLU": {"code": "GLU", "value": "85", "unit": "mg/dL"}, "CRP": {"code": "CRP", "value": "3", "unit": "mg/L"}}
TESTS = st.sampled_from([["GLU"], ["CRP"], ["GLU", "CRP"]])


@dataclass
class Order:
    patient: str
    tests: list[str]
    status: str = "placed"


def place_order(c: Clinic, patient: str, tests: list[str]) -> str:
    placed = c.api.ok("POST", "/api/lab/orders", c.doctor, {"patient_id": patient, "tests": tests}, status=201)
    assert placed["status"] == "placed"
    return str(placed["id"])


class LabOrders(RuleBasedStateMachine):
    """Order, collect, start, result and cancel lab orders, for two patients in the doctor's care."""

    clinic: ClassVar[Clinic]
    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, Order] = {}

    @rule(target=orders, patient=st.integers(0, 1), tests=TESTS)
    def place(self, patient: int, tests: list[str]) -> str:
        oid = place_order(self.clinic, self.clinic.in_care[patient], tests)
        self.model[oid] = Order(self.clinic.in_care[patient], tests)
        return oid

    @rule(patient=st.integers(0, 1), tests=st.sampled_from([["NOPE"], ["GLU", "GLU"], []]))
    def place_a_bad_order(self, patient: int, tests: list[str]) -> None:
        c = self.clinic
        r = c.api.call("POST", "/api/lab/orders", c.doctor, {"patient_id": c.in_care[patient], "tests": tests})
        assert r.status_code == 422, r.text

    @rule(oid=orders, action=st.sampled_from(["collect", "start", "cancel"]))
    def step(self, oid: str, action: str) -> None:
        c, order = self.clinic, self.model[oid]
        r = c.api.call("POST", f"/api/lab/orders/{oid}/{action}", c.tech)
        after = LAB_STEPS.get((order.status, action))
        if after is None:
            assert r.status_code == 409 and r.json()["state"] == order.status, (order, action, r.text)
            return
        assert r.status_code == 200 and r.json()["status"] == after, (order, action, r.text)
        order.status = after

    @rule(oid=orders, complete=st.booleans())
    def result(self, oid: str, complete: bool) -> None:
        """Results for every ordered test, or for a test that was not ordered (refused: 422)."""
        c, order = self.clinic, self.model[oid]
        results = [RESULTS[t] for t in order.tests] if complete else [RESULTS["CRP" if "GLU" in order.tests else "GLU"]]
        r = c.api.call("POST", f"/api/lab/orders/{oid}/results", c.tech, {"results": results})
        if order.status != "in_progress":
            assert r.status_code == 409 and r.json()["state"] == order.status, (order, r.text)
        elif not complete:
            assert r.status_code == 422, (order, r.text)
        else:
            assert r.status_code == 200 and r.json()["status"] == "resulted", (order, r.text)
            order.status = "resulted"

    @invariant()
    def every_order_is_as_the_model_says(self) -> None:
        c = self.clinic
        seen: dict[str, str] = {}
        for p in c.in_care:
            items = c.api.ok("GET", "/api/lab/orders", c.tech, params={"patient_id": p, "limit": 200})["items"]
            seen |= {str(o["id"]): o["status"] for o in items if str(o["id"]) in self.model}
        assert seen == {i: o.status for i, o in self.model.items()}


def test_lab_order_lifecycle(clinic: Clinic) -> None:
    LabOrders.clinic = clinic
    run_state_machine_as_test(LabOrders, settings=SETTINGS)


# --- invoices and desk payments ------------------------------------------------------------------

CENT = Decimal("0.01")


def payable(paid: Decimal, share: Decimal) -> str:
    return "paid" if paid >= share else "partially_paid" if paid > 0 else "open"


@dataclass(frozen=True)
class Taken:
    """A request that took an idempotency key, and the answer it got."""

    kind: str
    body: dict[str, str]
    answer: str


class Payments(RuleBasedStateMachine):
    """Desk payments and refunds on an invoice that a resulted lab order produced."""

    clinic: ClassVar[Clinic]

    def __init__(self) -> None:
        super().__init__()
        self.invoice = ""
        self.share = self.paid = Decimal(0)
        self.keys: dict[str, Taken] = {}
        self.moves: list[tuple[str, Decimal]] = []

    @initialize(patient=st.integers(0, 1), tests=TESTS)
    def charge_a_lab_order(self, patient: int, tests: list[str]) -> None:
        c, pid = self.clinic, self.clinic.in_care[patient]
        oid = place_order(c, pid, tests)
        for action in ("collect", "start"):
            c.api.ok("POST", f"/api/lab/orders/{oid}/{action}", c.tech)
        c.api.ok("POST", f"/api/lab/orders/{oid}/results", c.tech, {"results": [RESULTS[t] for t in tests]})
        found: list[dict[str, Any]] = []

        def issued() -> bool:  # billing learns the charges from the laboratory's event
            items = c.api.ok("GET", "/api/invoices", c.clerk, params={"patient_id": pid, "limit": 200})["items"]
            found[:] = [i for i in items if i["encounter"]["source_id"] == oid]
            return bool(found)

        wait_until(issued, what="the lab order's invoice")
        (invoice,) = found
        prices = {"GLU": Decimal("60.00"), "CRP": Decimal("120.00")}
        assert (invoice["status"], invoice["payer"]) == ("open", "SELF"), invoice
        assert Decimal(invoice["patient_share"]) == sum(prices[t] for t in tests)  # self-pay: all of it
        self.invoice, self.share = str(invoice["id"]), Decimal(invoice["patient_share"])

    def amount(self, how: str, cents: int, limit: Decimal) -> Decimal:
        return {"part": Decimal(cents) * CENT, "all": limit, "over": limit + CENT}[how]

    def send(self, kind: str, key: str, body: dict[str, str], limit: Decimal) -> None:
        c = self.clinic
        path = f"/api/invoices/{self.invoice}/{kind}s"
        r = c.api.call("POST", path, c.clerk | {"Idempotency-Key": key}, body)
        if key in self.keys:
            taken = self.keys[key]
            if (taken.kind, taken.body) == (kind, body):
                assert (r.status_code, r.text) == (201, taken.answer)  # the same answer, nothing moved again
                assert r.headers["Idempotent-Replayed"] == "true"
            else:
                assert r.status_code == 409, r.text
            return
        amount = Decimal(body["amount"])
        if amount <= 0 or amount > limit:
            assert r.status_code == 422, (kind, amount, limit, r.text)
            return
        assert r.status_code == 201, (kind, amount, limit, r.text)
        self.paid += amount if kind == "payment" else -amount
        self.keys[key] = Taken(kind, body, r.text)
        self.moves.append((kind, amount))
        assert r.json()["invoice_paid"] == str(self.paid) and r.json()["invoice_status"] == self.status()

    def status(self) -> str:
        return payable(self.paid, self.share)

    def key(self, reuse: int | None) -> str:
        known = sorted(self.keys)
        return known[reuse % len(known)] if reuse is not None and known else str(uuid.uuid4())

    @rule(
        how=st.sampled_from(["part", "all", "over"]),
        cents=st.integers(1, 20000),
        method=st.sampled_from(["cash", "card", "bank_transfer"]),
        reuse=st.none() | st.integers(0, 5),
    )
    def pay(self, how: str, cents: int, method: str, reuse: int | None) -> None:
        amount = self.amount(how, cents, self.share - self.paid)
        self.send(
            "payment",
            self.key(reuse),
            {"amount": str(amount), "currency": "TRY", "method": method},
            self.share - self.paid,
        )

    @rule(
        how=st.sampled_from(["part", "all", "over"]), cents=st.integers(1, 20000), reuse=st.none() | st.integers(0, 5)
    )
    def refund(self, how: str, cents: int, reuse: int | None) -> None:
        amount = self.amount(how, cents, self.paid)
        self.send("refund", self.key(reuse), {"amount": str(amount), "currency": "TRY", "method": "cash"}, self.paid)

    @precondition(lambda self: bool(self.keys))
    @rule(which=st.integers(0, 5))
    def repeat(self, which: int) -> None:
        """The desk sends a request again under its key (a retry after a lost answer)."""
        key = sorted(self.keys)[which % len(self.keys)]
        taken = self.keys[key]
        self.send(taken.kind, key, taken.body, Decimal(0))

    @rule(problem=st.sampled_from(["no key", "currency", "online", "doctor"]))
    def pay_wrongly(self, problem: str) -> None:
        c = self.clinic
        body = {
            "amount": "1.00",
            "currency": "EUR" if problem == "currency" else "TRY",
            "method": "online" if problem == "online" else "cash",
        }
        who = c.doctor if problem == "doctor" else c.clerk
        headers = who if problem == "no key" else who | {"Idempotency-Key": str(uuid.uuid4())}
        r = c.api.call("POST", f"/api/invoices/{self.invoice}/payments", headers, body)
        expected = {"no key": 400, "currency": 422, "online": 422, "doctor": 403}[problem]
        assert r.status_code == expected, (problem, r.text)

    @invariant()
    def paid_is_what_was_taken_and_never_more_than_the_share(self) -> None:
        if not self.invoice:
            return
        c = self.clinic
        invoice = c.api.ok("GET", f"/api/invoices/{self.invoice}", c.clerk)
        paid = Decimal(invoice["paid"])
        assert Decimal(0) <= paid <= Decimal(invoice["patient_share"]) == self.share
        assert (paid, invoice["status"]) == (self.paid, self.status())
        assert Decimal(invoice["outstanding"]) == self.share - paid
        moves = c.api.ok("GET", f"/api/invoices/{self.invoice}/payments", c.clerk)["items"]
        assert sorted((m["kind"], Decimal(m["amount"])) for m in moves) == sorted(self.moves)


def test_invoice_and_payment_lifecycle(clinic: Clinic) -> None:
    Payments.clinic = clinic
    run_state_machine_as_test(Payments, settings=SETTINGS)
