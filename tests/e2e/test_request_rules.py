"""The rules every list and query follows under `his up`, through the gateway: one page limit with
one status, dates the calendar can hold, searches with real characters, filters that take only
known values, and a booking collision that tells a patient only what is theirs. Beside them, the
ways of asking for many at once: patients by id (as the search shows and records them), the
first free slots across practitioners (as each one's slots are) and staff by id (their names)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from his.kernel.params import LIMIT_RULE, MAX_PAGE
from tests.e2e.harness import Hospital, assign, create_user, link_by_invitation, own_account, register_patient
from tests.support.waiting import wait_until

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
#: Lists whose page is smaller than the shared one, and why: the first free slots across
#: practitioners are a few to choose from, not a list to page through (at most 50).
SMALLER_PAGES = {("get", "/api/appointments/first-available"): 50}


def _schema(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema with ``$ref`` and an optional's ``anyOf [.., null]`` resolved."""
    if "anyOf" in schema:
        (schema,) = [s for s in schema["anyOf"] if s.get("type") != "null"]
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["schemas"][name]
    return schema


def test_every_list_follows_one_page_rule_and_every_state_filter_its_values(shared_hospital: Hospital) -> None:
    """Paging differed (gateway 400 above 200, services 422 above 50 or 500) and an unknown status
    listed nothing; the public document now says one rule, and the answers follow it."""
    gw = shared_hospital.gateway
    doc = httpx.get(f"{gw}/openapi.json", timeout=10).json()
    limits, filters = [], []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            for p in op.get("parameters", []):
                schema = _schema(doc, p["schema"])
                if p["in"] == "query" and p["name"] == "limit":
                    limits.append((method, path, schema.get("minimum"), schema.get("maximum")))
                if p["in"] == "query" and p["name"] in ("status", "state"):
                    filters.append((method, path, schema.get("enum")))
    assert len(limits) >= 10, limits
    assert all(lo == 1 and hi == SMALLER_PAGES.get((method, path), MAX_PAGE) for method, path, lo, hi in limits), limits
    assert len(filters) >= 4 and all(values for _, _, values in filters), filters

    admin = shared_hospital.login()
    for params in ({"q": "someone", "limit": "201"}, {"q": "someone", "limit": "0"}):
        r = httpx.get(f"{gw}/api/patients", params=params, headers=admin, timeout=10)
        assert r.status_code == 422 and r.json()["detail"] == LIMIT_RULE, r.text
    assert httpx.get(f"{gw}/api/patients", params={"q": "someone", "limit": "200"}, headers=admin).status_code == 200
    for path, params, valid in (
        ("/api/invoices", {"status": "unpaid"}, "partially_paid"),
        ("/api/claims", {"status": "approved"}, "submitted"),
        ("/api/claims", {"payer": "ACME"}, "SGK"),
        ("/api/practitioners", {"specialty": "astrology"}, "cardiology"),
    ):
        r = httpx.get(f"{gw}{path}", params=params, headers=admin, timeout=10)
        assert r.status_code == 422 and valid in r.text, (path, r.text)


def test_dates_at_the_ends_of_the_calendar_and_empty_searches_are_a_422(shared_hospital: Hospital) -> None:
    gw, admin = shared_hospital.gateway, shared_hospital.login()
    r = httpx.post(
        f"{gw}/api/practitioners", json={"full_name": "Dr. Edge", "specialty": "cardiology"}, headers=admin, timeout=10
    )
    doctor = r.json()["id"]
    for day in ("9999-12-30", "9999-12-01", "0001-01-02"):  # 9999-12-30 was a 500
        r = httpx.get(f"{gw}/api/practitioners/{doctor}/slots", params={"date": day}, headers=admin, timeout=10)
        assert r.status_code == 422 and "dates from 1800-01-01 to 2999-12-31" in r.text, (day, r.text)
    window = {"from": "9999-12-01T00:00:00Z", "to": "9999-12-31T00:00:00Z"}
    for what in ("shifts", "availability"):
        r = httpx.get(f"{gw}/api/practitioners/{doctor}/{what}", params=window, headers=admin, timeout=10)
        assert r.status_code == 422, r.text
    for url, params in (("/api/price-list", {"date": "9999-12-31"}), ("/api/patients", {"birth_date": "0001-01-01"})):
        assert httpx.get(f"{gw}{url}", params=params, headers=admin, timeout=10).status_code == 422
    r = httpx.post(f"{gw}/api/admissions/charges/run", params={"date": "0001-01-01"}, headers=admin, timeout=10)
    assert r.status_code == 422

    register_patient(shared_hospital, admin, f"Everyone-{uuid.uuid4().hex[:6]}")
    for q in ("%%", "__", "   ", "%_%"):  # each listed every patient
        r = httpx.get(f"{gw}/api/patients", params={"q": q}, headers=admin, timeout=10)
        assert r.status_code == 422 and "at least 2 letters or digits" in r.text, (q, r.text)


def test_a_patient_booking_a_taken_time_learns_only_that_it_is_taken(shared_hospital: Hospital) -> None:
    h, gw = shared_hospital, shared_hospital.gateway
    admin = h.login()
    r = httpx.post(
        f"{gw}/api/practitioners",
        json={"full_name": "Dr. Busy", "specialty": "general_practice"},
        headers=admin,
        timeout=10,
    )
    doctor = r.json()["id"]
    day = (datetime.now(UTC) + timedelta(days=5)).replace(hour=8, minute=0, second=0, microsecond=0)
    shift = {"start": day.isoformat(), "end": (day + timedelta(hours=8)).isoformat()}
    assert httpx.post(f"{gw}/api/practitioners/{doctor}/shifts", json=shift, headers=admin, timeout=10).is_success
    tag = uuid.uuid4().hex[:6]
    mine = register_patient(h, admin, f"Booker-{tag}", email=f"booker-{tag}@example.org")
    theirs = register_patient(h, admin, f"Other-{tag}", email=f"other-{tag}@example.org")
    address = f"booker-account-{tag}@example.org"
    own_account(h, address, "a booking passphrase", "Booker")
    me = h.login(address, "a booking passphrase")
    link_by_invitation(h, admin, mine["id"], str(mine["email"]), me)

    def booking(patient: object, who: dict[str, str]) -> httpx.Response:
        start = day + timedelta(hours=1)
        body = {
            "patient_id": patient,
            "practitioner_id": doctor,
            "service": "consultation",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=20)).isoformat(),
        }
        return httpx.post(f"{gw}/api/appointments", json=body, headers=who, timeout=10)

    taken = booking(theirs["id"], admin)
    assert taken.status_code == 201, taken.text
    answers: list[httpx.Response] = []

    def refused() -> bool:  # scheduling learns of the link from an event: until then it answers 404
        answers.append(booking(mine["id"], me))
        return answers[-1].status_code != 404

    wait_until(refused, what="scheduling to learn the patient's account")
    r = answers[-1]
    assert r.status_code == 409 and r.json()["conflict"] == {"with": "practitioner"}, r.text
    assert taken.json()["id"] not in r.text and str(theirs["id"]) not in r.text
    staff = booking(theirs["id"], admin)  # reception sees which appointment it is
    assert staff.status_code == 409 and staff.json()["conflict"]["appointment"]["id"] == taken.json()["id"]


def test_patients_by_id_in_one_call_as_the_search_shows_and_records_them(shared_hospital: Hospital) -> None:
    """Up to 200 ids in one call through the gateway, answered in the order given with unknown ids
    left out; a doctor sees the restricted item of a patient outside their care; each patient
    answered is in the audit trail as read; a patient, a search beside the ids and 201 ids are
    refused."""
    h, gw = shared_hospital, shared_hospital.gateway
    admin, tag = h.login(), uuid.uuid4().hex[:6]
    first, second = (register_patient(h, admin, f"Batch{n}-{tag}") for n in (1, 2))
    doctor_id, doctor = create_user(h, admin, "DOCTOR", f"batch{tag}")
    assign(h, admin, first["id"], doctor_id)
    unknown = [str(uuid.uuid4()) for _ in range(198)]
    ids: list[object] = [second["id"], *unknown, first["id"]]

    def look_up(who: dict[str, str], *extra: tuple[str, str], given: list[object] = ids) -> httpx.Response:
        return httpx.get(f"{gw}/api/patients", params=[*(("id", str(i)) for i in given), *extra], headers=who)

    r = look_up(admin)
    assert r.status_code == 200, r.text
    assert [(i["id"], i["family_name"], "restricted" in i) for i in r.json()["items"]] == [
        (second["id"], f"Batch2-{tag}", False),
        (first["id"], f"Batch1-{tag}", False),
    ]
    r = look_up(doctor)
    assert r.status_code == 200, r.text
    assert [(i["id"], i.get("restricted", False), "email" in i) for i in r.json()["items"]] == [
        (second["id"], True, False),
        (first["id"], False, True),
    ]

    def reads(patient: object) -> set[tuple[str, str, str, str]]:
        r = httpx.get(f"{gw}/api/audit", params={"patient_id": str(patient)}, headers=admin, timeout=10)
        assert r.status_code == 200, r.text
        return {(e["actor_id"], e["action"], e["resource"], e["outcome"]) for e in r.json()["items"]}

    for patient in (first["id"], second["id"]):

        def recorded(p: object = patient) -> bool:
            return (doctor_id, "read", "patient", "allowed") in reads(p)

        wait_until(recorded, what="the doctor's read in the audit trail")

    address, password = f"batch-{tag}@example.org", "a batch patient's passphrase"
    own_account(h, address, password, "Nur Yalın")
    refused: list[tuple[dict[str, str], tuple[str, ...], list[object], int]] = [
        (h.login(address, password), (), ids[:1], 403),
        (admin, ("q", f"Batch1-{tag}"), ids[:1], 422),
        (admin, ("birth_date", "1969-07-21"), ids[:1], 422),
        (admin, (), [*ids, uuid.uuid4()], 422),
        (admin, (), ["not-a-uuid"], 422),
    ]
    for who, extra, given, status in refused:
        r = look_up(who, *([(extra[0], extra[1])] if extra else []), given=given)
        assert r.status_code == status and r.headers["content-type"] == "application/problem+json", (extra, r.text)
        assert f"Batch1-{tag}" not in r.text


def test_staff_by_id_in_one_call_names_staff_only(shared_hospital: Hospital) -> None:
    """Up to 200 account ids in one call through the gateway: the staff among them by name and
    staff roles, in the order given, each once; a patient's account and unknown ids left out; no
    address or anything else of an account. A patient may ask too; no token is a 401, no id,
    201 ids or one that is not a UUID a 422 naming ``id``."""
    h, gw = shared_hospital, shared_hospital.gateway
    admin, tag = h.login(), uuid.uuid4().hex[:6]
    nurse_id, _ = create_user(h, admin, "NURSE", f"dir{tag}")
    doctor_id, doctor = create_user(h, admin, "DOCTOR", f"dir{tag}")
    address, password = f"dir-{tag}@example.org", "a directory patient's passphrase"
    patient_id = own_account(h, address, password, "Ay Se")
    patient = h.login(address, password)
    unknown = [str(uuid.uuid4()) for _ in range(195)]
    ids = [doctor_id, *unknown[:100], patient_id, nurse_id, doctor_id, *unknown[100:]]
    assert len(ids) == 199

    def look_up(who: dict[str, str], given: list[str] = ids) -> httpx.Response:
        return httpx.get(f"{gw}/api/staff", params=[("id", i) for i in given], headers=who, timeout=10)

    for who in (patient, doctor, admin):
        r = look_up(who)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "items": [
                {"id": doctor_id, "full_name": f"Doctor dir{tag}", "roles": ["DOCTOR"]},
                {"id": nurse_id, "full_name": f"Nurse dir{tag}", "roles": ["NURSE"]},
            ]
        }
    assert look_up(patient, [patient_id]).json() == {"items": []}
    r = httpx.get(f"{gw}/api/staff", params={"id": doctor_id}, timeout=10)
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json", r.text
    for given in ([], [*ids, *unknown[:2]], [doctor_id, "not-a-uuid"]):
        r = look_up(patient, given)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
        assert [e["loc"][0] for e in r.json()["errors"]] == ["id"], r.text


def test_the_first_free_slots_across_practitioners_through_the_gateway(shared_hospital: Hospital) -> None:
    """Two practitioners of one specialty on a day no one else works: their slots, earliest first,
    a tie by name; a booked slot is gone; a patient asks too; unknown values are a 422 naming the
    valid ones."""
    h, gw = shared_hospital, shared_hospital.gateway
    admin, tag = h.login(), uuid.uuid4().hex[:6]

    def first_available(who: dict[str, str], **params: object) -> httpx.Response:
        query = {k.rstrip("_"): str(v) for k, v in params.items()}
        return httpx.get(f"{gw}/api/appointments/first-available", params=query, headers=who, timeout=30)

    today = first_available(admin, days=1)
    assert today.status_code == 200, today.text
    zone = ZoneInfo(today.json()["timezone"])
    day = datetime.now(zone).date() + timedelta(days=300)
    names = {}
    for name in (f"Dr. Ece Kulak {tag}", f"Dr. Bora Burun {tag}"):
        body = {"full_name": name, "specialty": "otolaryngology"}
        pid = httpx.post(f"{gw}/api/practitioners", json=body, headers=admin, timeout=10).json()["id"]
        shift = {
            "start": datetime.combine(day, time(9), tzinfo=zone).isoformat(),
            "end": datetime.combine(day, time(10), tzinfo=zone).isoformat(),
        }
        assert httpx.post(f"{gw}/api/practitioners/{pid}/shifts", json=shift, headers=admin, timeout=10).is_success
        names[name] = pid
    ece, bora = names.values()
    at = [datetime.combine(day, time(9, m), tzinfo=zone) for m in (0, 20, 40)]
    ask = {"specialty": "otolaryngology", "from_": (day - timedelta(days=2)).isoformat(), "days": 3}
    r = first_available(admin, **ask, limit=4)
    assert r.status_code == 200, r.text
    assert r.json()["from"] == (day - timedelta(days=2)).isoformat()
    assert [(datetime.fromisoformat(i["start"]), i["practitioner_id"]) for i in r.json()["items"]] == [
        (at[0], bora),
        (at[0], ece),
        (at[1], bora),
        (at[1], ece),
    ]
    item = r.json()["items"][0]
    assert item["practitioner_name"] == f"Dr. Bora Burun {tag}" and item["specialty"] == "otolaryngology"
    assert datetime.fromisoformat(item["end"]) == at[1]

    patient = register_patient(h, admin, f"Slot-{tag}")
    booking = {"patient_id": patient["id"], "practitioner_id": bora, "service": "consultation"}
    booked = httpx.post(
        f"{gw}/api/appointments",
        json=booking | {"start": at[0].isoformat(), "end": at[1].isoformat()},
        headers=admin,
        timeout=10,
    )
    assert booked.status_code == 201, booked.text
    address, password = f"slots-{tag}@example.org", "a slot seeking passphrase"
    own_account(h, address, password, "Slots")
    r = first_available(h.login(address, password), **ask, limit=2)
    assert r.status_code == 200, r.text
    assert [(datetime.fromisoformat(i["start"]), i["practitioner_id"]) for i in r.json()["items"]] == [
        (at[0], ece),
        (at[1], bora),
    ]
    for params, valid in (({"specialty": "astrology"}, "cardiology"), ({"service": "massage"}, "consultation")):
        r = first_available(admin, **params)
        assert r.status_code == 422 and valid in r.json()["valid"], r.text
    bad: list[dict[str, object]] = [{"limit": 51}, {"days": 32}, {"from_": "9999-12-30"}]
    for wrong in bad:
        r = first_available(admin, **wrong)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
