"""The front desk's pages in memory (the console over the in-memory API): what a receptionist types
becomes the right API call, the API's answers become the right page (errors beside their fields,
duplicates to open or override, a taken slot to choose again), and names stand in for ids.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from his.console.domain import Answer
from his.console.front_desk import registration, typed_date
from his.kernel.json import Json, JsonObject
from his.testing.console import Call
from tests.support.console import USER, Desk, console_desk

PATIENT = str(uuid.uuid4())
DOCTOR = str(uuid.uuid4())
RECORD: JsonObject = {
    "id": PATIENT,
    "mrn": "MRN-00000042",
    "given_name": "Elif",
    "family_name": "Yılmaz",
    "birth_date": "1987-02-14",
    "sex": "female",
    "email": None,
    "phone": "+90 555 000 00 00",
    "user_id": None,
    "created_at": "2026-12-31T21:00:00+00:00",
    "coverage": {"payer": "SGK", "member_id": "12345678901"},
}
PROFILE: JsonObject = {"id": DOCTOR, "full_name": "Dr. Deniz Öztürk", "specialty": "cardiology", "user_id": None}
FORM = {"given_name": "Elif", "family_name": "Yılmaz", "birth_date": "14.02.1987", "sex": "female"}


@pytest.fixture
async def desk() -> AsyncIterator[Desk]:
    async with console_desk() as found:
        await found.sign_in(["RECEPTIONIST"])
        found.api.answer("GET", "/api/payers", Answer(200, {"items": [{"code": "SGK", "title": "SGK"}]}))
        found.api.answer("GET", "/api/practitioners", Answer(200, {"items": [PROFILE]}))
        yield found


def calls(desk: Desk, path: str) -> list[Call]:
    return [c for c in desk.api.calls if c.path == path]


@pytest.mark.parametrize(
    ("typed", "params"),
    [
        ("yılmaz", {"q": "yılmaz", "limit": "20"}),
        ("MRN-00000042", {"q": "MRN-00000042", "limit": "20"}),
        ("14.02.1987", {"birth_date": "1987-02-14", "limit": "20"}),
        ("1987-02-14", {"birth_date": "1987-02-14", "limit": "20"}),
        ("31.02.1987", {"q": "31.02.1987", "limit": "20"}),  # no such day: searched as text
    ],
)
async def test_what_is_typed_is_searched_as_a_name_an_mrn_or_a_birth_date(
    desk: Desk, typed: str, params: dict[str, str]
) -> None:
    desk.api.answer("GET", "/api/patients", Answer(200, {"items": [RECORD]}))
    r = await desk.client.get("/front-desk/results", params={"q": typed}, headers={"hx-request": "true"})
    assert r.status_code == 200 and f'href="/patients/{PATIENT}"' in r.text and "Yılmaz, Elif" in r.text
    assert "<html" not in r.text  # a fragment for htmx to swap in
    assert calls(desk, "/api/patients")[-1].params == params


async def test_one_letter_asks_nothing_and_nobody_found_says_so(desk: Desk) -> None:
    r = await desk.client.get("/front-desk", params={"q": "y"})
    assert r.status_code == 200 and calls(desk, "/api/patients") == []
    desk.api.answer("GET", "/api/patients", Answer(200, {"items": []}))
    r = await desk.client.get("/front-desk", params={"q": "nobody"})
    assert "No patient matches" in r.text


async def test_a_patient_may_not_open_the_front_desk(desk: Desk) -> None:
    async with console_desk() as other:
        await other.sign_in(["PATIENT"])
        r = await other.client.get("/front-desk")
        assert r.status_code == 403 and other.api.calls[-1].path == "/api/auth/login"


async def test_a_form_with_gaps_is_shown_again_with_each_error_beside_its_field(desk: Desk) -> None:
    r = await desk.post("/patients/new", {"given_name": "Elif", "birth_date": "1987-02-30", "payer": "SGK"})
    assert r.status_code == 422 and calls(desk, "/api/patients") == []
    for field, message in (
        ("family_name", "Enter the patient's family name."),
        ("birth_date", "Enter a date such as 1980-05-01."),
        ("sex", "Choose the patient's sex."),
        ("member_id", "Enter the member number the payer gave."),
    ):
        assert f'<span class="usa-error-message" id="{field}-error">{message}</span>' in r.text, field
    assert 'value="Elif"' in r.text  # what was typed stays


async def test_registering_sends_the_api_its_request_and_opens_the_new_record(desk: Desk) -> None:
    desk.api.answer("POST", "/api/patients", Answer(201, {"id": PATIENT, "mrn": "MRN-00000042"}))
    r = await desk.post("/patients/new", {**FORM, "payer": "SGK", "member_id": "12345678901", "email": ""})
    assert r.status_code == 303 and r.headers["location"] == f"/patients/{PATIENT}?registered=1"
    assert calls(desk, "/api/patients")[-1].body == {
        "given_name": "Elif",
        "family_name": "Yılmaz",
        "birth_date": "1987-02-14",
        "sex": "female",
        "email": None,
        "phone": None,
        "coverage": {"payer": "SGK", "member_id": "12345678901"},
    }


async def test_likely_duplicates_are_shown_and_registering_anyway_says_so(desk: Desk) -> None:
    duplicate: JsonObject = {k: RECORD[k] for k in ("id", "mrn", "given_name", "family_name", "birth_date")}
    desk.api.answer("POST", "/api/patients", Answer(409, {"status": 409, "possible_duplicates": [duplicate]}))
    r = await desk.post("/patients/new", FORM)
    assert r.status_code == 409 and "This patient may be registered already" in r.text
    assert f'href="/patients/{PATIENT}"' in r.text and 'name="confirm_duplicate"' in r.text
    desk.api.answer("POST", "/api/patients", Answer(201, {"id": PATIENT, "mrn": "MRN-00000043"}))
    await desk.post("/patients/new", {**FORM, "confirm_duplicate": "yes"})
    assert calls(desk, "/api/patients")[-1].body == {**registration(FORM)[0], "confirm_duplicate": True}


async def test_the_apis_refusal_of_a_field_is_shown_beside_it(desk: Desk) -> None:
    refusal: JsonObject = {
        "status": 422,
        "detail": "unknown payer 'XYZ'",
        "errors": [{"loc": ["coverage", "payer"], "msg": "x"}],
    }
    desk.api.answer("POST", "/api/patients", Answer(422, refusal))
    r = await desk.post("/patients/new", {**FORM, "payer": "XYZ", "member_id": "1"})
    assert r.status_code == 422 and 'id="coverage.payer-error"' not in r.text  # no such field on the form
    assert "Some details need correcting" in r.text


async def test_a_record_shows_its_appointments_with_the_practitioners_name(desk: Desk) -> None:
    desk.api.answer("GET", f"/api/patients/{PATIENT}", Answer(200, RECORD))
    booked: JsonObject = {
        "id": str(uuid.uuid4()),
        "patient_id": PATIENT,
        "practitioner_id": DOCTOR,
        "service": "consultation",
        "start": "2027-01-04T06:00:00+00:00",
        "end": "2027-01-04T06:20:00+00:00",
        "status": "booked",
    }
    desk.api.answer("GET", "/api/appointments", Answer(200, {"items": [booked]}))
    r = await desk.client.get(f"/patients/{PATIENT}")
    assert r.status_code == 200 and "Dr. Deniz Öztürk" in r.text and DOCTOR not in r.text.replace(f"/{DOCTOR}", "")
    assert "Jan 4, 2027, 9:00\u202fAM" in r.text  # 06:00 UTC is 09:00 in Istanbul
    assert calls(desk, "/api/appointments")[-1].params == {"patient_id": PATIENT}


async def test_an_unknown_or_malformed_record_is_a_page_not_a_crash(desk: Desk) -> None:
    assert (await desk.client.get("/patients/not-an-id")).status_code == 404
    missing = str(uuid.uuid4())
    desk.api.answer("GET", f"/api/patients/{missing}", Answer(404, {"status": 404}))
    r = await desk.client.get(f"/patients/{missing}")
    assert r.status_code == 404 and "There is no such record." in r.text


async def test_booking_a_taken_slot_sends_the_desk_back_to_choose_again(desk: Desk) -> None:
    slot = f"{DOCTOR}|2027-01-04T06:00:00+00:00|2027-01-04T06:20:00+00:00"
    desk.api.answer("POST", "/api/appointments", Answer(409, {"status": 409}))
    r = await desk.post("/appointments", {"patient_id": PATIENT, "slot": slot, "service": "consultation"})
    assert r.status_code == 303 and r.headers["location"].endswith("&day=2027-01-04&taken=1")
    booked = str(uuid.uuid4())
    desk.api.answer("POST", "/api/appointments", Answer(201, {"id": booked, "status": "booked"}))
    r = await desk.post("/appointments", {"patient_id": PATIENT, "slot": slot, "service": "consultation"})
    assert r.headers["location"] == f"/appointments/{booked}/slip?booked=1"
    assert calls(desk, "/api/appointments")[-1].body == {
        "patient_id": PATIENT,
        "practitioner_id": DOCTOR,
        "start": "2027-01-04T06:00:00+00:00",
        "end": "2027-01-04T06:20:00+00:00",
        "service": "consultation",
    }


async def test_the_day_list_names_its_patients_in_one_call_and_checks_them_in(desk: Desk) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    day: list[JsonObject] = [
        {
            "id": str(uuid.uuid4()),
            "patient_id": p,
            "practitioner_id": DOCTOR,
            "service": "consultation",
            "start": f"2027-01-01T0{6 + i}:00:00+00:00",
            "end": f"2027-01-01T0{6 + i}:20:00+00:00",
            "status": "booked",
        }
        for i, p in enumerate([ids[0], ids[1], ids[0]])
    ]
    desk.api.answer("GET", "/api/appointments", Answer(200, {"items": list[Json](day)}))
    desk.api.answer("GET", "/api/patients", Answer(200, {"items": [{**RECORD, "id": ids[0]}]}))
    r = await desk.client.get("/day-list", params={"practitioner_id": DOCTOR})
    assert r.status_code == 200 and r.text.count("Yılmaz, Elif") == 2 and "A patient not in your care" in r.text
    (lookup,) = calls(desk, "/api/patients")
    assert lookup.params == [("id", ids[0]), ("id", ids[1]), ("limit", "200")]
    # Today is the hospital's: new year's day in Istanbul (still new year's eve in UTC).
    assert calls(desk, "/api/appointments")[-1].params == {
        "practitioner_id": DOCTOR,
        "date": "2028-01-01",
        "limit": "200",
    }
    desk.api.answer("POST", f"/api/appointments/{day[0]['id']}/check-in", Answer(200, {**day[0], "status": "x"}))
    here = f"/day-list?practitioner_id={DOCTOR}&day=2028-01-01"
    r = await desk.post(f"/appointments/{day[0]['id']}/check-in", {"next": here})
    assert r.status_code == 303 and r.headers["location"] == here


@pytest.mark.parametrize(
    ("typed", "day"),
    [("1980-05-01", "1980-05-01"), ("01.05.1980", "1980-05-01"), ("1/5/1980", "1980-05-01"), ("1980-13-01", None)],
)
def test_a_typed_birth_date(typed: str, day: str | None) -> None:
    found = typed_date(typed)
    assert (found.isoformat() if found else None) == day


async def test_a_script_in_any_field_of_a_patient_is_shown_as_text(desk: Desk) -> None:
    script = "<script>alert(1)</script>"
    hostile: JsonObject = {
        **RECORD,
        "given_name": script,
        "family_name": f'"><img src=x onerror=alert(1)>{script}',
        "email": f"{script}@example.com",
        "phone": script,
        "coverage": {"payer": script, "member_id": script},
        "mrn": script,
    }
    desk.api.answer("GET", f"/api/patients/{PATIENT}", Answer(200, hostile))
    desk.api.answer("GET", "/api/appointments", Answer(200, {"items": []}))
    desk.api.answer("GET", "/api/patients", Answer(200, {"items": [hostile]}))
    for path in (f"/patients/{PATIENT}", "/front-desk?q=alert"):
        r = await desk.client.get(path)
        assert r.status_code == 200 and "<script>alert" not in r.text and "<img" not in r.text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text


async def test_correcting_a_patient_sends_only_what_is_filled_in(desk: Desk) -> None:
    desk.api.answer("GET", f"/api/patients/{PATIENT}", Answer(200, RECORD))
    page = await desk.client.get(f"/patients/{PATIENT}/edit")
    assert (
        page.status_code == 200 and 'value="Yılmaz"' in page.text and f'action="/patients/{PATIENT}/edit"' in page.text
    )
    desk.api.answer("PATCH", f"/api/patients/{PATIENT}", Answer(200, RECORD))
    r = await desk.post(f"/patients/{PATIENT}/edit", {**FORM, "phone": "+90 555 111 22 33", "email": ""})
    assert r.status_code == 303 and r.headers["location"] == f"/patients/{PATIENT}?saved=1"
    assert calls(desk, f"/api/patients/{PATIENT}")[-1].body == {
        "given_name": "Elif",
        "family_name": "Yılmaz",
        "birth_date": "1987-02-14",
        "sex": "female",
        "phone": "+90 555 111 22 33",
    }


async def test_moving_an_appointment_reschedules_it_and_a_taken_time_asks_again(desk: Desk) -> None:
    appointment = str(uuid.uuid4())
    booked: JsonObject = {"id": appointment, "patient_id": PATIENT, "practitioner_id": DOCTOR, "status": "booked"}
    booked |= {"service": "consultation", "start": "2028-01-03T06:00:00+00:00", "end": "2028-01-03T06:20:00+00:00"}
    desk.api.answer("GET", f"/api/appointments/{appointment}", Answer(200, booked))
    free: JsonObject = {"items": [{"start": "2028-01-04T07:00:00+00:00", "end": "2028-01-04T07:20:00+00:00"}]}
    desk.api.answer("GET", f"/api/practitioners/{DOCTOR}/slots", Answer(200, free))
    page = await desk.client.get(f"/appointments/{appointment}/move", params={"day": "2028-01-04"})
    assert page.status_code == 200 and "Dr. Deniz Öztürk" in page.text
    assert calls(desk, f"/api/practitioners/{DOCTOR}/slots")[-1].params == {
        "date": "2028-01-04",
        "service": "consultation",
    }
    slot = f"{DOCTOR}|2028-01-04T07:00:00+00:00|2028-01-04T07:20:00+00:00"
    desk.api.answer("POST", f"/api/appointments/{appointment}/reschedule", Answer(409, {"status": 409}))
    r = await desk.post(f"/appointments/{appointment}/move", {"slot": slot})
    assert r.headers["location"] == f"/appointments/{appointment}/move?day=2028-01-04&taken=1"
    desk.api.answer("POST", f"/api/appointments/{appointment}/reschedule", Answer(200, booked))
    r = await desk.post(f"/appointments/{appointment}/move", {"slot": slot})
    assert r.headers["location"] == f"/patients/{PATIENT}?moved=1"
    assert calls(desk, f"/api/appointments/{appointment}/reschedule")[-1].body == {
        "start": "2028-01-04T07:00:00+00:00",
        "end": "2028-01-04T07:20:00+00:00",
    }


async def test_the_desk_puts_a_patient_on_a_waiting_list(desk: Desk) -> None:
    desk.api.answer("POST", "/api/waitlist", Answer(201, {"id": "w"}))
    r = await desk.post("/waitlist", {"patient_id": PATIENT, "practitioner_id": DOCTOR, "service": "consultation"})
    assert r.status_code == 303 and r.headers["location"] == f"/patients/{PATIENT}?waiting=1"
    assert calls(desk, "/api/waitlist")[-1].body == {
        "patient_id": PATIENT,
        "practitioner_id": DOCTOR,
        "service": "consultation",
    }


async def test_the_first_free_times_across_practitioners_of_a_specialty(desk: Desk) -> None:
    desk.api.answer("GET", f"/api/patients/{PATIENT}", Answer(200, RECORD))
    found: JsonObject = {
        "items": [
            {
                "practitioner_id": DOCTOR,
                "practitioner_name": "Dr. Deniz Öztürk",
                "start": "2028-01-02T06:00:00+00:00",
                "end": "2028-01-02T06:20:00+00:00",
            }
        ]
    }
    desk.api.answer("GET", "/api/appointments/first-available", Answer(200, found))
    r = await desk.client.get("/appointments/new", params={"patient_id": PATIENT, "specialty": "cardiology"})
    assert r.status_code == 200 and "Dr. Deniz Öztürk" in r.text
    assert f'value="{DOCTOR}|2028-01-02T06:00:00+00:00|2028-01-02T06:20:00+00:00"' in r.text
    assert calls(desk, "/api/appointments/first-available")[-1].params == {
        "service": "consultation",
        "from": "2028-01-01",
        "limit": "12",
        "specialty": "cardiology",
    }


async def test_a_clinics_day_list_is_asked_by_specialty_and_names_each_practitioner(desk: Desk) -> None:
    day: JsonObject = {"id": str(uuid.uuid4()), "patient_id": PATIENT, "practitioner_id": DOCTOR, "status": "booked"}
    day |= {"service": "consultation", "start": "2028-01-01T07:00:00+00:00", "end": "2028-01-01T07:20:00+00:00"}
    desk.api.answer("GET", "/api/appointments", Answer(200, {"items": [day]}))
    desk.api.answer("GET", "/api/patients", Answer(200, {"items": [RECORD]}))
    r = await desk.client.get("/day-list", params={"specialty": "cardiology"})
    assert r.status_code == 200 and "Dr. Deniz Öztürk" in r.text and "Yılmaz, Elif" in r.text
    assert calls(desk, "/api/appointments")[-1].params == {
        "specialty": "cardiology",
        "date": "2028-01-01",
        "limit": "200",
    }
    assert 'data-live="/day-list/events?specialty=cardiology&amp;day=2028-01-01"' in r.text


async def test_my_day_finds_the_clinicians_own_profile_and_follows_a_change_of_it() -> None:
    async with console_desk() as desk:
        await desk.sign_in(["DOCTOR"])
        mine: JsonObject = {**PROFILE, "user_id": str(USER)}
        desk.api.answer("GET", "/api/practitioners", Answer(200, {"items": [mine]}))
        desk.api.answer("GET", "/api/appointments", Answer(200, {"items": []}))
        for _ in range(2):
            assert (await desk.client.get("/day-list")).status_code == 200
        asked = [c.params for c in desk.api.calls if c.path == "/api/appointments"]
        assert asked == [{"practitioner_id": DOCTOR, "date": "2028-01-01", "limit": "200"}] * 2  # once per page
        moved = str(uuid.uuid4())  # the account's profile is now another one
        desk.api.answer("GET", "/api/practitioners", Answer(200, {"items": [{**mine, "id": moved}]}))
        r = await desk.client.get("/day-list")
        asked = [c.params for c in desk.api.calls if c.path == "/api/appointments"]
        assert isinstance(asked[-1], dict) and asked[-1]["practitioner_id"] == moved
        assert f'<option value="{moved}" selected>' in r.text
