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
    consumes,
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
        return {"patient_id": self.clinic.outpatients[patient], "practitioner_id": self.practitioner,
                "service": "consultation", **self.at(slot)}  # fmt: skip

    @rule(target=appointments, patient=st.integers(0, 2), slot=st.integers(0, SLOTS - 1))
    def book(self, patient: int, slot: int) -> Any:
        r = self.clinic.api.call("POST", "/api/appointments", self.clinic.reception, self.booking(patient, slot))
        taken = self.holder(slot)
        if taken is not None:
            assert r.status_code == 409, r.text
            assert r.json()["conflict"]["appointment"] == taken
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
            assert r.status_code == 409 and r.json()["conflict"]["appointment"] == taken, r.text
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
            seen |= {str(a["id"]): (a["status"], a["start"]) for a in items
                     if a["practitioner_id"] == self.practitioner}  # fmt: skip
        expected = {i: (a.status, self.at(a.slot)["start"]) for i, a in self.model.items()}
        assert seen == expected

    @invariant()
    def free_slots_are_the_ones_nobody_holds(self) -> None:
        c = self.clinic
        free = c.api.ok("GET", f"/api/practitioners/{self.practitioner}/slots", c.reception,
                        params={"date": self.day.date().isoformat(), "service": "consultation"})["items"]  # fmt: skip
        offered = {s["start"] for s in free}
        assert offered == {self.at(s)["start"] for s in range(SLOTS) if self.holder(s) is None}


def test_appointment_lifecycle(clinic: Clinic) -> None:
    Appointments.clinic = clinic
    run_state_machine_as_test(Appointments, settings=SETTINGS)
