"""The laboratory's use cases through its routes, over the in-memory ports (no database, no
network): orders follow their state machine (every invalid step a 409 naming the state), who
may order, collect, result, cancel and read, every decision audited, bad input a 4xx problem.

The routes are the service's own, mounted in-process over ``his.testing.laboratory``, whose
contract with the PostgreSQL store is ``tests/integration/test_laboratory_contract.py``; what
needs the database (its locks, its seed, the events' delivery) stays in
``tests/integration/test_laboratory.py``. Every unit runs on one of the hard dates.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from his.clients.patients import CareBasis, FakePatients, PatientRef
from his.events.laboratory import SEAL_SETTING, LabOrderCancelled, LabOrderPlaced, LabOrderResulted, ResultFlag
from his.kernel.crypto import new_key_text
from his.kernel.sealing import Seal, UnsealableError
from his.laboratory.app import http_over
from his.testing.laboratory import FakeLab
from tests.support.api import bearer, serve
from tests.support.calendar import HARD_DATES
from tests.support.sealing import SEAL

ACCESSED = "his.laboratory.record.accessed.v1"


@dataclass
class Lab:
    client: httpx.AsyncClient
    fake: FakeLab
    patients: FakePatients
    doctor: uuid.UUID

    def as_doctor(self) -> dict[str, str]:
        return bearer(self.doctor, "DOCTOR")

    async def patient(self, account: uuid.UUID | None = None) -> uuid.UUID:
        """A patient known to the directory, in the care of the lab's doctor."""
        pid = uuid.uuid4()
        self.patients.patients[pid] = PatientRef(pid, account)
        self.patients.care[(pid, self.doctor)] = CareBasis(in_care=True, emergency=False)
        return pid

    async def order(self, patient: uuid.UUID, *tests: str, priority: str = "routine") -> str:
        body = {"patient_id": str(patient), "tests": list(tests), "priority": priority}
        r = await self.client.post("/lab/orders", json=body, headers=self.as_doctor())
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "placed"
        return str(r.json()["id"])

    async def step(self, order: str, action: str, role: str = "LAB_TECH") -> httpx.Response:
        who = self.as_doctor() if role == "DOCTOR" else bearer(uuid.uuid4(), role)
        return await self.client.post(f"/lab/orders/{order}/{action}", headers=who)

    async def result(self, order: str, *results: dict[str, Any]) -> httpx.Response:
        return await self.client.post(
            f"/lab/orders/{order}/results", json={"results": list(results)}, headers=bearer(uuid.uuid4(), "LAB_TECH")
        )

    async def in_state(self, state: str, patient: uuid.UUID) -> str:
        oid = await self.order(patient, "K")
        path = {
            "placed": [],
            "collected": ["collect"],
            "in_progress": ["collect", "start"],
            "resulted": ["collect", "start"],
            "cancelled": ["cancel"],
        }[state]
        for action in path:
            assert (await self.step(oid, action)).status_code == 200
        if state == "resulted":
            assert (await self.result(oid, {"code": "K", "value": "4.2"})).status_code == 200
        return oid

    def count(self, event_type: str) -> int:
        """How many events of this type were committed."""
        return sum(e.type == event_type for e in self.fake.published)

    def accesses(self, *actors: uuid.UUID) -> list[tuple[str, str]]:
        """The (outcome, purpose) of the committed access records of these actors, in order."""
        wanted = {str(a) for a in actors}
        return [
            (str(e.data["outcome"]), str(e.data["purpose"]))
            for e in self.fake.published
            if e.type == ACCESSED and e.data["actor_id"] in wanted
        ]

    def orders_of(self, patient: uuid.UUID) -> list[uuid.UUID]:
        return [o.id for o in self.fake.state.orders.values() if o.patient_id == patient]


@pytest.fixture(params=[HARD_DATES[0], HARD_DATES[4]], ids=str)
async def lab(request: pytest.FixtureRequest) -> AsyncIterator[Lab]:
    """The laboratory half an hour after midnight on a new year's day, or on the day the clocks
    go back."""
    fake, patients = FakeLab(request.param.clock(0, 30)), FakePatients()
    async with serve(http_over(fake, patients, SEAL), base_url="http://laboratory") as client:
        yield Lab(client, fake, patients, uuid.uuid4())


INVALID = {
    "placed": ["start", "results"],
    "collected": ["collect", "results"],
    "in_progress": ["collect", "start"],
    "resulted": ["collect", "start", "cancel", "results"],
    "cancelled": ["collect", "start", "cancel", "results"],
}


async def test_every_invalid_transition_is_a_409_naming_the_state(lab: Lab) -> None:
    patient = await lab.patient()
    for state, actions in INVALID.items():
        oid = await lab.in_state(state, patient)
        for action in actions:
            if action == "results":
                r = await lab.result(oid, {"code": "K", "value": "4.0"})
            else:
                r = await lab.step(oid, action)
            assert r.status_code == 409, (state, action, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["state"] == state and state in r.json()["detail"]
        got = await lab.client.get(f"/lab/orders/{oid}", headers=lab.as_doctor())
        assert got.json()["status"] == state  # nothing moved
    assert lab.count(LabOrderCancelled.type) == 1


async def test_a_clinician_reads_lab_orders_only_in_the_patients_care(lab: Lab) -> None:
    """As for the chart: a DOCTOR or NURSE reads a patient's orders and results with a care
    relationship or an emergency grant (audited as such), the ordering doctor their own orders;
    the lab's technicians read every order by role; ADMIN, whom the chart refuses lab results,
    reads none here either."""
    patient = await lab.patient()
    oid = await lab.order(patient, "CRP")
    await lab.step(oid, "collect")
    await lab.step(oid, "start")
    assert (await lab.result(oid, {"code": "CRP", "value": "2"})).status_code == 200
    by_patient = {"patient_id": str(patient)}
    doctor, nurse, carer, emergency = (uuid.uuid4() for _ in range(4))
    lab.patients.care[(patient, carer)] = CareBasis(in_care=True, emergency=False)
    lab.patients.care[(patient, emergency)] = CareBasis(in_care=False, emergency=True)

    for who in (bearer(doctor, "DOCTOR"), bearer(nurse, "NURSE"), bearer(doctor, "DOCTOR", "RECEPTIONIST")):
        one = await lab.client.get(f"/lab/orders/{oid}", headers=who)
        assert one.status_code == 403 and "CRP" not in one.text
        assert one.json()["emergency_access"]["href"] == f"/api/patients/{patient}/emergency-access"
        listed = await lab.client.get("/lab/orders", params=by_patient, headers=who)
        assert listed.status_code == 403 and "emergency-access" in listed.json()["detail"]
        mine = await lab.client.get("/lab/orders", headers=who)  # without patient_id: the orders they placed
        assert mine.status_code == 200 and mine.json()["items"] == []
    admin = bearer(uuid.uuid4(), "ADMIN")
    for path, params in ((f"/lab/orders/{oid}", None), ("/lab/orders", by_patient), ("/lab/orders", None)):
        refused = await lab.client.get(path, params=params, headers=admin)
        assert refused.status_code == 403 and "CRP" not in refused.text, (path, refused.text)
    for who in (bearer(carer, "NURSE"), bearer(emergency, "DOCTOR"), bearer(uuid.uuid4(), "LAB_TECH")):
        one = await lab.client.get(f"/lab/orders/{oid}", headers=who)
        assert one.status_code == 200 and one.json()["results"][0]["value"] == "2"
        listed = await lab.client.get("/lab/orders", params=by_patient, headers=who)
        assert [o["id"] for o in listed.json()["items"]] == [oid]
    # The ordering doctor, out of the patient's care, still reads the order they placed, but not
    # the patient's other orders.
    del lab.patients.care[(patient, lab.doctor)]
    assert (await lab.client.get(f"/lab/orders/{oid}", headers=lab.as_doctor())).status_code == 200
    placed = await lab.client.get("/lab/orders", headers=lab.as_doctor())
    assert oid in {o["id"] for o in placed.json()["items"]}
    assert (await lab.client.get("/lab/orders", params=by_patient, headers=lab.as_doctor())).status_code == 403
    assert [purpose for _, purpose in lab.accesses(emergency)] == ["emergency", "emergency"]
    # Patients cannot be asked: a 503, never a read on a guess.
    lab.patients.down = True
    assert (await lab.client.get(f"/lab/orders/{oid}", headers=bearer(carer, "NURSE"))).status_code == 503


async def test_a_doctor_orders_and_a_nurse_collects_only_in_the_patients_care(lab: Lab) -> None:
    """Ordering (a DOCTOR) and collecting (a NURSE, or a technician by role) need a care
    relationship or an emergency grant; without one: 403 offering emergency access, nothing
    placed or collected, and the refusal audited as denied."""
    patient = await lab.patient()
    stranger, glass = uuid.uuid4(), uuid.uuid4()
    lab.patients.care[(patient, glass)] = CareBasis(in_care=False, emergency=True)
    body = {"patient_id": str(patient), "tests": ["CRP"]}
    refused = await lab.client.post("/lab/orders", json=body, headers=bearer(stranger, "DOCTOR"))
    assert refused.status_code == 403 and refused.json()["emergency_access"]["method"] == "POST"
    assert lab.orders_of(patient) == []
    placed = await lab.client.post("/lab/orders", json=body, headers=bearer(glass, "DOCTOR"))
    assert placed.status_code == 201, placed.text
    oid = placed.json()["id"]
    refused = await lab.client.post(f"/lab/orders/{oid}/collect", headers=bearer(stranger, "NURSE"))
    assert refused.status_code == 403 and "emergency_access" in refused.json()
    assert (await lab.client.get(f"/lab/orders/{oid}", headers=bearer(glass, "DOCTOR"))).json()["status"] == "placed"
    collected = await lab.client.post(f"/lab/orders/{oid}/collect", headers=bearer(glass, "NURSE"))
    assert collected.json()["status"] == "collected"
    assert lab.accesses(stranger, glass) == [
        ("denied", "care"),
        ("allowed", "emergency"),
        ("denied", "care"),
        ("allowed", "care"),  # the doctor reads the order they placed
        ("allowed", "emergency"),
    ]


async def test_who_may_do_what(lab: Lab) -> None:
    me, stranger = uuid.uuid4(), uuid.uuid4()
    mine, theirs = await lab.patient(me), await lab.patient(stranger)
    oid = await lab.order(mine, "CRP")
    other_order = await lab.order(theirs, "CRP")
    body = {"patient_id": str(mine), "tests": ["CRP"]}
    for role in ("NURSE", "LAB_TECH", "ADMIN", "PATIENT", "RECEPTIONIST"):
        assert (await lab.client.post("/lab/orders", json=body, headers=bearer(me, role))).status_code == 403
    as_me = bearer(me, "PATIENT")
    # A patient reads their own orders; another patient's order or list looks like nothing at all.
    assert (await lab.client.get(f"/lab/orders/{oid}", headers=as_me)).json()["status"] == "placed"
    assert (await lab.client.get(f"/lab/orders/{other_order}", headers=as_me)).status_code == 404
    listed = await lab.client.get("/lab/orders", params={"patient_id": str(mine)}, headers=as_me)
    assert [o["id"] for o in listed.json()["items"]] == [oid]
    assert (await lab.client.get("/lab/orders", params={"patient_id": str(theirs)}, headers=as_me)).status_code == 404
    assert (await lab.client.get("/lab/orders", headers=as_me)).status_code == 403  # every patient's: never
    # Cancelling is never a patient's: 403 for every id, so it tells nothing about another's.
    assert (await lab.client.post(f"/lab/orders/{other_order}/cancel", headers=as_me)).status_code == 403
    assert (await lab.client.post(f"/lab/orders/{oid}/cancel", headers=as_me)).status_code == 403
    assert (await lab.client.post(f"/lab/orders/{uuid.uuid4()}/cancel", headers=as_me)).status_code == 403
    # Staff lists: by status, across patients.
    placed = await lab.client.get("/lab/orders", params={"status": "placed"}, headers=bearer(uuid.uuid4(), "LAB_TECH"))
    assert {o["id"] for o in placed.json()["items"]} == {oid, other_order}
    # Roles per action; a doctor cancels only their own orders.
    assert (await lab.step(oid, "collect", "DOCTOR")).status_code == 403
    assert (await lab.step(oid, "start", "NURSE")).status_code == 403
    assert (await lab.step(oid, "cancel", "NURSE")).status_code == 403
    other_doctor = bearer(uuid.uuid4(), "DOCTOR")
    assert (await lab.client.post(f"/lab/orders/{oid}/cancel", headers=other_doctor)).status_code == 403
    refused = await lab.step(oid, "collect", "NURSE")  # a nurse outside the patient's care
    assert refused.status_code == 403 and "emergency_access" in refused.json()
    nurse = uuid.uuid4()
    lab.patients.care[(mine, nurse)] = CareBasis(in_care=True, emergency=False)
    assert (await lab.client.post(f"/lab/orders/{oid}/collect", headers=bearer(nurse, "NURSE"))).status_code == 200
    assert (await lab.step(oid, "start")).status_code == 200
    results = {"results": [{"code": "CRP", "value": "2"}]}
    for who in (lab.as_doctor(), bearer(uuid.uuid4(), "NURSE"), bearer(uuid.uuid4(), "ADMIN")):
        assert (await lab.client.post(f"/lab/orders/{oid}/results", json=results, headers=who)).status_code == 403
    assert (await lab.step(oid, "cancel", "DOCTOR")).json()["status"] == "cancelled"
    # Every read and write of an order is audited.
    assert lab.count(ACCESSED) >= 8


@pytest.mark.parametrize(
    "patch",
    [
        {"tests": []},
        {"tests": ["K", "K"]},
        {"tests": ["K", "NOPE"]},
        {"tests": ["x" * 5000]},
        {"tests": ["K"] * 31},
        {"tests": "K"},
        {"priority": "whenever"},
        {"patient_id": "not-a-uuid"},
        {"patient_id": "00000000-0000-0000-0000-000000000000"},  # unknown patient
        {"status": "resulted"},  # clients never set statuses
        {"id": "00000000-0000-0000-0000-000000000001"},  # nor ids
    ],
)
async def test_bad_orders_are_a_4xx_problem(lab: Lab, patch: dict[str, Any]) -> None:
    body = {"patient_id": str(await lab.patient()), "tests": ["K"], "priority": "urgent", **patch}
    r = await lab.client.post("/lab/orders", json=body, headers=lab.as_doctor())
    assert 400 <= r.status_code < 500 and r.status_code != 404, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert lab.fake.state.orders == {}


@pytest.mark.parametrize(
    "results",
    [
        [],
        [{"code": "K", "value": "4.0"}],  # CRP missing
        [{"code": "K", "value": "4.0"}, {"code": "CRP", "value": "1"}, {"code": "GLU", "value": "80"}],  # extra
        [{"code": "K", "value": "4.0"}, {"code": "K", "value": "4.1"}],
        [{"code": "K", "value": "6.9", "flag": "N"}, {"code": "CRP", "value": "1"}],  # contradicts the numbers
        [{"code": "K", "value": "4.0", "unit": "mg/dL"}, {"code": "CRP", "value": "1"}],
        [{"code": "K", "value": "hemolysed"}, {"code": "CRP", "value": "1"}],  # no flag for a non-number
        [{"code": "K", "value": "x" * 5000}, {"code": "CRP", "value": "1"}],
        [{"code": "K", "value": 4.0}, {"code": "CRP", "value": "1"}],
        [{"code": "K", "value": "4.0", "note": "?"}, {"code": "CRP", "value": "1"}],
    ],
)
async def test_bad_results_are_a_422_and_change_nothing(lab: Lab, results: list[dict[str, Any]]) -> None:
    oid = await lab.order(await lab.patient(), "K", "CRP")
    await lab.step(oid, "collect")
    await lab.step(oid, "start")
    r = await lab.result(oid, *results)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert (await lab.client.get(f"/lab/orders/{oid}", headers=lab.as_doctor())).json()["status"] == "in_progress"
    assert lab.count(LabOrderResulted.type) == 0


async def test_unknown_ids_and_actions_and_an_unreachable_directory(lab: Lab) -> None:
    tech = bearer(uuid.uuid4(), "LAB_TECH")
    nobody = uuid.uuid4()
    assert (await lab.client.get(f"/lab/orders/{nobody}", headers=tech)).status_code == 404
    assert (await lab.client.post(f"/lab/orders/{nobody}/collect", headers=tech)).status_code == 404
    r = await lab.client.post(
        f"/lab/orders/{nobody}/results", json={"results": [{"code": "K", "value": "1"}]}, headers=tech
    )
    assert r.status_code == 404
    oid = await lab.order(await lab.patient(), "K")
    assert (await lab.client.post(f"/lab/orders/{oid}/explode", headers=tech)).status_code == 422
    assert (await lab.client.get("/lab/orders/not-a-uuid", headers=tech)).status_code == 422
    assert (await lab.client.get("/lab/orders", params={"status": "lost"}, headers=tech)).status_code == 422
    # Patients cannot be asked: an outage is a 503, never a 404 or an order for nobody knows whom.
    lab.patients.down = True
    body = {"patient_id": str(uuid.uuid4()), "tests": ["K"]}
    r = await lab.client.post("/lab/orders", json=body, headers=lab.as_doctor())
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"
    assert orjson.loads(r.content)["status"] == 503


async def test_a_result_is_published_with_its_tests_and_flags_sealed(lab: Lab) -> None:
    """``his.laboratory.order.resulted.v3`` says in clear which order of which patient was
    resulted, when; the tests' codes, flags and charges are in its sealed box, which opens with
    the consumers' key, for this order only. The order's placement names no test."""
    patient = await lab.patient()
    oid = await lab.order(patient, "K", "CRP")
    await lab.step(oid, "collect")
    await lab.step(oid, "start")
    assert (await lab.result(oid, {"code": "K", "value": "7.1"}, {"code": "CRP", "value": "2"})).status_code == 200
    [placed] = [e for e in lab.fake.published if e.type == LabOrderPlaced.type]
    [env] = [e for e in lab.fake.published if e.type == LabOrderResulted.type]
    for travelled in (placed.data, env.data):
        text = orjson.dumps(travelled).decode().replace("\\", "")  # nor inside a string, escaped
        assert not any(code in text for code in ('"K"', '"CRP"', '"HH"', '"N"'))
    ev = LabOrderResulted.model_validate(env.data)
    assert set(env.data) == {"order_id", "patient_id", "ordered_by", "priority", "resulted_at", "sealed"}
    opened = ev.opened(SEAL)
    assert (str(opened.order_id), opened.patient_id) == (oid, patient)
    assert opened.results == [ResultFlag(code="K", flag="HH"), ResultFlag(code="CRP", flag="N")]
    assert [c.code for c in opened.charges] == ["K", "CRP"] and opened.abnormal and opened.critical
    with pytest.raises(UnsealableError):  # encrypted under the key, not merely encoded
        ev.opened(Seal(SEAL_SETTING, new_key_text()))
