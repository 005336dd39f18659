"""A patient's chart in memory (the console over the in-memory API): a clinician sees the care
team, the record and the lab results with abnormal values marked; adds an entry and orders tests
with the API's own requests; and without care meets break-the-glass, where a reason too short is
refused before the API is asked and the grant opens the chart under a banner. Whatever the
address bar says, a bad value is a page, never a crash.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from his.console.domain import Answer
from his.kernel.json import Json, JsonObject
from his.testing.console import Call
from tests.support.console import USER, Desk, console_desk

PATIENT = str(uuid.uuid4())
RECORD: JsonObject = {
    "id": PATIENT,
    "mrn": "MRN-00000042",
    "given_name": "Zeynep",
    "family_name": "Demir",
    "birth_date": "1975-06-30",
    "sex": "female",
    "email": None,
    "phone": None,
    "user_id": None,
    "coverage": None,
}
OFFER: JsonObject = {
    "status": 403,
    "detail": "a care relationship with this patient is required",
    "emergency_access": {"href": f"/api/patients/{PATIENT}/emergency-access", "method": "POST"},
}


@pytest.fixture
async def doctor() -> AsyncIterator[Desk]:
    async with console_desk() as desk:
        await desk.sign_in(["DOCTOR"])
        api = desk.api
        profile: JsonObject = {
            "id": str(uuid.uuid4()),
            "full_name": "Dr. Selin Kaya",
            "specialty": "x",
            "user_id": str(USER),
        }
        api.answer("GET", "/api/practitioners", Answer(200, {"items": [profile]}))
        api.answer("GET", "/api/appointments", Answer(200, {"items": []}))
        team: list[Json] = [
            {"id": "r2", "user_id": str(USER), "source": "appointment", "valid_from": "2027-12-31T10:00:00+00:00"},
            {"id": "r1", "user_id": str(USER), "source": "assigned", "valid_from": "2027-12-01T10:00:00+00:00"},
        ]
        api.answer("GET", f"/api/patients/{PATIENT}/care-team", Answer(200, {"items": team}))
        entry: JsonObject = {
            "id": "e",
            "kind": "diagnosis",
            "code": "I10",
            "text": "<b>hypertension</b>",
            "author_id": str(USER),
            "author_roles": ["DOCTOR"],
            "created_at": "2027-12-31T10:00:00+00:00",
        }
        api.answer("GET", f"/api/patients/{PATIENT}/records", Answer(200, {"items": [entry]}))
        result: JsonObject = {
            "code": "K",
            "value": "6.9",
            "unit": "mmol/L",
            "reference_low": "3.5",
            "reference_high": "5.1",
            "flag": "HH",
        }
        chart_order: JsonObject = {
            "order_id": "o",
            "ordered_by": str(USER),
            "priority": "stat",
            "resulted_at": "2027-12-31T11:00:00+00:00",
            "results": [result],
        }
        api.answer("GET", f"/api/patients/{PATIENT}/lab-results", Answer(200, {"items": [chart_order]}))
        api.answer("GET", "/api/lab/orders", Answer(200, {"items": []}))
        catalog: list[Json] = [{"code": "K", "label": "Potassium"}, {"code": "GLU", "label": "Glucose, fasting"}]
        api.answer("GET", "/api/lab/catalog", Answer(200, {"items": catalog}))
        yield desk


def last(desk: Desk, path: str) -> Call:
    return [c for c in desk.api.calls if c.path == path][-1]


async def test_a_clinician_in_care_sees_the_chart_with_abnormal_values_marked(doctor: Desk) -> None:
    doctor.api.answer("GET", f"/api/patients/{PATIENT}", Answer(200, RECORD))
    r = await doctor.client.get(f"/patients/{PATIENT}")
    assert r.status_code == 200
    assert r.text.count("Dr. Selin Kaya (you)") == 1  # one line per person on the team
    assert "Emergency access" not in r.text
    assert "&lt;b&gt;hypertension&lt;/b&gt;" in r.text  # clinical text is text, never markup
    assert 'class="his-abnormal"' in r.text and "Critically high" in r.text and "Potassium" in r.text


async def test_entries_and_orders_are_the_apis_requests(doctor: Desk) -> None:
    doctor.api.answer("POST", f"/api/patients/{PATIENT}/records", Answer(201, {"id": "e2"}))
    r = await doctor.post(f"/patients/{PATIENT}/records", {"kind": "allergy", "code": "", "text": " penicillin "})
    assert r.status_code == 303 and r.headers["location"] == f"/patients/{PATIENT}?added=1#record"
    assert last(doctor, f"/api/patients/{PATIENT}/records").body == {
        "kind": "allergy",
        "text": "penicillin",
        "code": None,
    }
    refused = await doctor.post(f"/patients/{PATIENT}/records", {"kind": "gossip", "text": "x"})
    assert refused.status_code == 422

    doctor.api.answer("POST", "/api/lab/orders", Answer(201, {"id": "o2", "status": "placed"}))
    csrf = await doctor.csrf()
    form = f"test=K&test=GLU&priority=stat&csrf={csrf}"
    headers = {"origin": "http://127.0.0.1:4004", "content-type": "application/x-www-form-urlencoded"}
    r = await doctor.client.post(f"/patients/{PATIENT}/lab-orders", content=form, headers=headers)
    assert r.status_code == 303 and r.headers["location"].endswith("?ordered=1#lab")
    assert last(doctor, "/api/lab/orders").body == {"patient_id": PATIENT, "tests": ["K", "GLU"], "priority": "stat"}
    none = await doctor.client.post(f"/patients/{PATIENT}/lab-orders", content=f"csrf={csrf}", headers=headers)
    assert none.status_code == 422


async def test_without_care_the_clinician_is_offered_emergency_access_with_a_reason(doctor: Desk) -> None:
    doctor.api.answer("GET", f"/api/patients/{PATIENT}", Answer(403, OFFER))
    r = await doctor.client.get(f"/patients/{PATIENT}")
    assert r.status_code == 403 and "This patient is not in your care" in r.text
    assert f'action="/patients/{PATIENT}/emergency-access"' in r.text

    short = await doctor.post(f"/patients/{PATIENT}/emergency-access", {"reason": "  need it  "})
    assert short.status_code == 422 and 'id="reason-error"' in short.text and ">need it</textarea>" in short.text
    assert not [c for c in doctor.api.calls if c.path.endswith("/emergency-access")]

    reason = "Brought in unconscious; medication history needed now."
    until = "2028-01-01T01:00:00+00:00"
    doctor.api.answer("POST", f"/api/patients/{PATIENT}/emergency-access", Answer(201, {"expires_at": until}))
    r = await doctor.post(f"/patients/{PATIENT}/emergency-access", {"reason": reason})
    assert r.status_code == 303
    assert r.headers["location"] == f"/patients/{PATIENT}?emergency_until=2028-01-01T01%3A00%3A00%2B00%3A00"
    assert last(doctor, f"/api/patients/{PATIENT}/emergency-access").body == {"reason": reason}

    doctor.api.answer("GET", f"/api/patients/{PATIENT}", Answer(200, RECORD))
    doctor.api.answer("GET", f"/api/patients/{PATIENT}/care-team", Answer(200, {"items": []}))
    chart = await doctor.client.get(r.headers["location"])
    assert chart.status_code == 200 and "under emergency access until 4:00" in chart.text  # 01:00 UTC, Istanbul


@pytest.mark.parametrize("junk", ["yesterday", "2028-01-01T01:00:00", "<script>", ""])
async def test_a_bad_value_in_the_address_bar_is_ignored(doctor: Desk, junk: str) -> None:
    doctor.api.answer("GET", f"/api/patients/{PATIENT}", Answer(200, RECORD))
    r = await doctor.client.get(f"/patients/{PATIENT}", params={"emergency_until": junk})
    assert r.status_code == 200 and "under emergency access until" not in r.text


async def test_an_unexpected_failure_is_a_page_in_the_users_language(doctor: Desk) -> None:
    def broken(_: Call) -> Answer:
        raise RuntimeError("a bug")

    doctor.api.answer("GET", f"/api/patients/{PATIENT}", broken)
    r = await doctor.client.get(f"/patients/{PATIENT}")
    assert r.status_code == 500 and "Something went wrong on our side" in r.text and "a bug" not in r.text


async def test_staff_without_a_practitioner_profile_are_named_from_the_staff_directory(doctor: Desk) -> None:
    nurse = str(uuid.uuid4())
    doctor.api.answer("GET", f"/api/patients/{PATIENT}", Answer(200, RECORD))
    note: JsonObject = {"id": "n", "kind": "note", "code": None, "text": "obs stable", "author_id": nurse}
    note |= {"author_roles": ["NURSE"], "created_at": "2027-12-31T11:00:00+00:00"}
    doctor.api.answer("GET", f"/api/patients/{PATIENT}/records", Answer(200, {"items": [note]}))
    doctor.api.answer(
        "GET", "/api/staff", Answer(200, {"items": [{"id": nurse, "full_name": "Nurse Ece", "roles": []}]})
    )
    r = await doctor.client.get(f"/patients/{PATIENT}")
    assert "Nurse Ece" in r.text
    (asked,) = [c for c in doctor.api.calls if c.path == "/api/staff"]
    assert asked.params == [("id", nurse)]  # the doctor is named by their practitioner profile


@pytest.mark.parametrize(
    ("rule", "said"),
    [
        ("placeholder", "This reason is a placeholder."),
        ("reused", "You gave these words for another patient today."),
        ("something_new", "This reason was not accepted."),  # a rule this console does not know yet
    ],
)
async def test_a_refused_reason_is_told_the_rule_it_broke(doctor: Desk, rule: str, said: str) -> None:
    reason = "test test test test test test test test"
    refusal: dict[str, Json] = {"title": "Unprocessable Entity", "status": 422, "detail": "reason …", "rule": rule}
    doctor.api.answer("POST", f"/api/patients/{PATIENT}/emergency-access", Answer(422, refusal))
    r = await doctor.post(f"/patients/{PATIENT}/emergency-access", {"reason": reason})
    assert r.status_code == 422 and said in r.text and f">{reason}</textarea>" in r.text
