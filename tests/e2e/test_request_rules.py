"""The rules every list and query follows under `his up`, through the gateway: one page limit with
one status, dates the calendar can hold, searches with real characters, filters that take only
known values, and a booking collision that tells a patient only what is theirs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from his.kernel.params import LIMIT_RULE, MAX_PAGE
from tests.e2e.harness import Hospital, link_by_invitation, register_patient
from tests.support.waiting import wait_until

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


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
    assert len(limits) >= 10 and all(lo == 1 and hi == MAX_PAGE for _, _, lo, hi in limits), limits
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
    r = httpx.post(
        f"{gw}/api/auth/register",
        json={"email": address, "password": "a booking passphrase", "full_name": "Booker"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
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
