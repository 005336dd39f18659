"""The patients' care-team and emergency-access use cases through their routes, over the
in-memory ports (no database, no network): a clinician reaches a patient only in their care or
under a grant, and a refusal offers emergency access; who may put a clinician on a care team,
never themself; relationships that end by themselves or are ended; what a clinician's search and
look-up by ids show of patients outside their care; break-the-glass grants (who may, the reason,
the expiry, what a grant reaches, who reads the reasons); and the audit record of every decision.

The routes are the service's own, mounted in-process over ``his.testing.patients``, whose
contract with the PostgreSQL store is ``tests/integration/test_patients_contract.py``. Clinician
accounts are learnt as identity announces them (``handlers.user_registered``). The audit
records are the published ``PatientsRecordAccessed`` events, flagged as the audit service flags
them (``his.audit.domain.is_flagged``); the chain itself, the administrators' alert and the
events on JetStream stay in ``tests/integration/test_care_and_emergency_access.py``. Every test
runs half an hour after local midnight of new year's day or of the day the clocks go back; a
grant's expiry runs on every hard date, across its midnight or its change of the clocks.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from his.audit.domain import is_flagged
from his.events.audit import PatientsRecordAccessed
from his.events.identity import UserRegistered
from his.events.patients import EmergencyAccessGranted
from his.kernel.clock import FakeClock
from his.kernel.events import Envelope
from his.patients import handlers
from his.patients.app import http_over
from his.testing.patients import FakeChart
from tests.support.api import Bearer, bearer, serve
from tests.support.calendar import HARD_DATES, HardDate, day_length

CLERK = Bearer(uuid.uuid4(), "RECEPTIONIST")
ADMIN = Bearer(uuid.uuid4(), "ADMIN")
AUDITOR = Bearer(uuid.uuid4(), "AUDITOR")
MINUTES = 30.0
REASON = "Unconscious patient brought to the ED, no relatives reachable"


@dataclass
class Care:
    client: httpx.AsyncClient
    fake: FakeChart
    clock: FakeClock
    hard: HardDate

    async def patient(self, family: str) -> str:
        r = await self.client.post(
            "/patients",
            headers=CLERK,
            json={
                "given_name": "Emre",
                "family_name": family,
                "birth_date": "1961-03-04",
                "sex": "male",
                "email": f"{family.lower()}@example.org",
                "phone": "+90 555 765 4321",
                "confirm_duplicate": True,
            },
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def account(self, *roles: str) -> uuid.UUID:
        """A user account with ``roles``, as identity announces it (patients keeps clinicians only)."""
        user = uuid.uuid4()
        ev = UserRegistered(user_id=user, roles=list(roles))
        async with self.fake.uow() as u:
            await handlers.user_registered(u, Envelope.wrap(ev, aggregate_id=user), ev)
        return user

    def audit(self, patient_id: str) -> list[tuple[uuid.UUID, str, str, str, str, bool]]:
        """The patient's access records in the order they were published: actor, action,
        resource, purpose, outcome and whether the audit chain flags it."""
        found = [a for a in self.fake.events(PatientsRecordAccessed) if isinstance(a, PatientsRecordAccessed)]
        return [
            (a.actor_id, a.action, a.resource, a.purpose, a.outcome, is_flagged(a.action, a.purpose))
            for a in found
            if str(a.patient_id) == patient_id
        ]

    def published_text(self) -> str:
        return "\n".join(e.to_json().decode() for e in self.fake.published)


@pytest.fixture(params=[HARD_DATES[0], HARD_DATES[4]], ids=str)
def hard(request: pytest.FixtureRequest) -> HardDate:
    """A new year's day, or the day the clocks go back."""
    day: HardDate = request.param
    return day


@pytest.fixture
async def care(hard: HardDate) -> AsyncIterator[Care]:
    """The patients' routes, half an hour after local midnight of ``hard``; grants last ``MINUTES``."""
    clock = hard.clock(0, 30)
    fake = FakeChart(clock)
    routes = http_over(fake, clock=clock, emergency_minutes=MINUTES, timezone=hard.zone)
    async with serve(routes, base_url="http://patients") as client:
        yield Care(client, fake, clock, hard)


def turning_point(hard: HardDate) -> datetime:
    """Where the hard date turns: the change of the clocks on a 23- or 25-hour day, else the
    local midnight it begins with."""
    if day_length(hard) != timedelta(hours=24):
        at = hard.midnight()
        while (at + timedelta(minutes=15)).astimezone(hard.tz).utcoffset() == at.astimezone(hard.tz).utcoffset():
            at += timedelta(minutes=15)
        return at + timedelta(minutes=15)
    return hard.midnight()


# --- care relationships ---------------------------------------------------------------------------


async def test_a_clinician_needs_a_care_relationship_and_a_denial_offers_emergency_access(care: Care) -> None:
    pid = await care.patient("Care-One")
    doctor_id = await care.account("DOCTOR")
    doctor = bearer(doctor_id, "DOCTOR")
    denied = await care.client.get(f"/patients/{pid}", headers=doctor)
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    body = denied.json()
    assert "care relationship" in body["detail"]
    assert body["emergency_access"]["href"] == f"/api/patients/{pid}/emergency-access"
    assert body["emergency_access"]["method"] == "POST" and "reason" in body["emergency_access"]["requires"]
    assert body["emergency_access"]["minutes"] == MINUTES
    assert "Care-One" not in denied.text and "care-one@" not in denied.text
    assert (await care.client.get(f"/patients/{pid}/care-team", headers=doctor)).status_code == 403

    r = await care.client.post(f"/patients/{pid}/care-team", headers=CLERK, json={"user_id": str(doctor_id)})
    assert r.status_code == 201, r.text
    rel = r.json()
    assert rel["source"] == "assignment" and rel["user_id"] == str(doctor_id) and rel["valid_until"] is None
    assert datetime.fromisoformat(rel["valid_from"]) == care.clock()
    ok = await care.client.get(f"/patients/{pid}", headers=doctor)
    assert ok.status_code == 200 and ok.json()["family_name"] == "Care-One"
    team = await care.client.get(f"/patients/{pid}/care-team", headers=doctor)
    assert [m["id"] for m in team.json()["items"]] == [rel["id"]]

    rows = care.audit(pid)
    assert len(rows) == 6  # the registration, the assignment and the doctor's four reads
    reads = [(resource, outcome) for actor, _, resource, _, outcome, _ in rows if actor == doctor_id]
    assert reads == [("patient", "denied"), ("care_team", "denied"), ("patient", "allowed"), ("care_team", "allowed")]
    assert not any(flagged for *_, flagged in rows)


async def test_care_team_rules(care: Care) -> None:
    pid, other = await care.patient("Team-A"), await care.patient("Team-B")
    doctor_id, colleague = await care.account("DOCTOR"), await care.account("DOCTOR")
    billing = await care.account("BILLING")
    doctor, doctor2 = bearer(doctor_id, "DOCTOR"), bearer(colleague, "DOCTOR")
    assign = {"user_id": str(doctor_id)}
    for who in (doctor, bearer(uuid.uuid4(), "PATIENT"), bearer(billing, "BILLING")):
        assert (await care.client.post(f"/patients/{pid}/care-team", headers=who, json=assign)).status_code == 403
    r = await care.client.post(f"/patients/{pid}/care-team", headers=ADMIN, json=assign)
    assert r.status_code == 201
    rel = r.json()["id"]
    assert (await care.client.post(f"/patients/{pid}/care-team", headers=CLERK, json=assign)).status_code == 409
    for user in (billing, uuid.uuid4()):  # not a clinician; not a user at all
        r = await care.client.post(f"/patients/{pid}/care-team", headers=CLERK, json={"user_id": str(user)})
        assert r.status_code == 422 and "clinician" in r.json()["detail"]
    missing = await care.client.post(f"/patients/{uuid.uuid4()}/care-team", headers=CLERK, json=assign)
    assert missing.status_code == 404
    for body in ({"user_id": str(doctor_id), "id": str(uuid.uuid4())}, {"user_id": str(doctor_id), "source": "x"}):
        assert (await care.client.post(f"/patients/{pid}/care-team", headers=CLERK, json=body)).status_code == 422
    past = {"user_id": str(doctor_id), "until": "2020-01-01T00:00:00+00:00"}
    assert (await care.client.post(f"/patients/{other}/care-team", headers=CLERK, json=past)).status_code == 422
    now = {"user_id": str(doctor_id), "until": care.clock().isoformat()}  # ends as it begins
    assert (await care.client.post(f"/patients/{other}/care-team", headers=CLERK, json=now)).status_code == 422

    # A relationship with an end date ends by itself, on the dot.
    until = care.clock() + timedelta(hours=2)
    r = await care.client.post(
        f"/patients/{other}/care-team", headers=CLERK, json={"user_id": str(doctor_id), "until": until.isoformat()}
    )
    assert r.status_code == 201 and datetime.fromisoformat(r.json()["valid_until"]) == until
    assert (await care.client.get(f"/patients/{other}", headers=doctor)).status_code == 200
    care.clock.advance(timedelta(hours=2) - timedelta(seconds=1))
    assert (await care.client.get(f"/patients/{other}", headers=doctor)).status_code == 200
    care.clock.advance(timedelta(seconds=1))
    assert (await care.client.get(f"/patients/{other}", headers=doctor)).status_code == 403
    assert (await care.client.get(f"/patients/{pid}", headers=doctor)).status_code == 200  # open-ended

    # Ending one: the id must belong to the patient in the path.
    assert (await care.client.delete(f"/patients/{other}/care-team/{rel}", headers=CLERK)).status_code == 404
    assert (await care.client.delete(f"/patients/{pid}/care-team/{rel}", headers=doctor)).status_code == 403
    assert (await care.client.delete(f"/patients/{pid}/care-team/{rel}", headers=doctor2)).status_code == 403
    assert (await care.client.delete(f"/patients/{pid}/care-team/{uuid.uuid4()}", headers=CLERK)).status_code == 404
    assert (await care.client.delete(f"/patients/{pid}/care-team/{rel}", headers=CLERK)).status_code == 204
    assert (await care.client.delete(f"/patients/{pid}/care-team/{rel}", headers=CLERK)).status_code == 204
    assert (await care.client.get(f"/patients/{pid}", headers=doctor)).status_code == 403
    assert (await care.client.get(f"/patients/{pid}/care-team", headers=ADMIN)).json()["items"] == []
    # Ended now, it stays on record as ended, not removed.
    (kept,) = [r for r in care.fake.state.assigned.values() if str(r.id) == rel]
    assert kept.valid_until == care.clock()

    # Each decision on the team is audited: the refusals denied, the changes as administration.
    changes = [
        (action, purpose, outcome)
        for _, action, resource, purpose, outcome, _ in care.audit(pid)
        if resource == "care_team" and action != "read"
    ]
    assert changes == [
        ("create", "administration", "denied"),  # the doctor
        ("create", "administration", "denied"),  # a patient
        ("create", "administration", "denied"),  # billing
        ("create", "administration", "allowed"),
        ("update", "administration", "denied"),  # the doctor, now in care
        ("update", "administration", "denied"),  # a colleague outside it
        ("update", "administration", "allowed"),
        ("update", "administration", "allowed"),
    ]


async def test_no_one_puts_themself_on_a_care_team(care: Care) -> None:
    """An account that is both a clinician and a receptionist or administrator would otherwise
    give itself care, unflagged: it is refused (403, pointing to emergency access, which is
    flagged), the attempt is audited as denied, and nothing changes; another registrar may assign
    it, and it may assign other clinicians."""
    pid = await care.patient("Self-Assign")
    doctor_id, colleague = await care.account("DOCTOR", "RECEPTIONIST"), await care.account("DOCTOR")
    for roles in (("DOCTOR", "RECEPTIONIST"), ("DOCTOR", "ADMIN")):
        me = bearer(doctor_id, *roles)
        r = await care.client.post(f"/patients/{pid}/care-team", headers=me, json={"user_id": str(doctor_id)})
        assert r.status_code == 403, r.text
        assert "yourself" in r.json()["detail"] and "emergency access" in r.json()["detail"]
        records = await care.client.get(f"/patients/{pid}/lab-results", headers=me)
        assert records.status_code == 403 and "emergency_access" in records.json()  # still no care
    assert (await care.client.get(f"/patients/{pid}/care-team", headers=ADMIN)).json()["items"] == []
    assert care.fake.state.assigned == {}
    me = bearer(doctor_id, "DOCTOR", "RECEPTIONIST")
    r = await care.client.post(f"/patients/{pid}/care-team", headers=me, json={"user_id": str(colleague)})
    assert r.status_code == 201, r.text
    r = await care.client.post(f"/patients/{pid}/care-team", headers=CLERK, json={"user_id": str(doctor_id)})
    assert r.status_code == 201, r.text
    assert (await care.client.get(f"/patients/{pid}/lab-results", headers=me)).status_code == 200

    teams = [
        (actor, action, outcome)
        for actor, action, resource, *_, outcome, _ in care.audit(pid)
        if resource == "care_team"
    ]
    assert len(teams) >= 4
    assert teams[:2] == [(doctor_id, "create", "denied")] * 2
    assert [t for t in teams if t[1] == "create"][2:] == [
        (doctor_id, "create", "allowed"),
        (CLERK.sub, "create", "allowed"),
    ]


async def test_search_shows_a_clinician_only_a_lookup_of_patients_outside_their_care(care: Care) -> None:
    mine, theirs = await care.patient("Lookup-Mine"), await care.patient("Lookup-Theirs")
    doctor_id = await care.account("DOCTOR")
    doctor = bearer(doctor_id, "DOCTOR")
    await care.client.post(f"/patients/{mine}/care-team", headers=CLERK, json={"user_id": str(doctor_id)})
    found = await care.client.get("/patients", params={"q": "Lookup-"}, headers=doctor)
    items = {i["id"]: i for i in found.json()["items"]}
    assert items[mine]["email"] == "lookup-mine@example.org" and "restricted" not in items[mine]
    assert items[theirs]["restricted"] is True
    assert set(items[theirs]) == {"id", "mrn", "given_name", "family_name", "birth_date", "sex", "restricted"}
    clerk_view = await care.client.get("/patients", params={"q": "Lookup-"}, headers=CLERK)
    assert all("restricted" not in i for i in clerk_view.json()["items"])

    # Under an emergency grant the full record shows, and the search is audited as emergency access.
    r = await care.client.post(f"/patients/{theirs}/emergency-access", headers=doctor, json={"reason": REASON})
    assert r.status_code == 201
    found = await care.client.get("/patients", params={"q": "Lookup-Theirs"}, headers=doctor)
    item = found.json()["items"][0]
    assert item["id"] == theirs
    assert item["email"] == "lookup-theirs@example.org" and "restricted" not in item

    searches = [
        (purpose, flagged)
        for actor, action, _, purpose, _, flagged in care.audit(theirs)
        if actor == doctor_id and action == "search"
    ]
    assert searches == [("care", False), ("emergency", True)]
    assert [(purpose, flagged) for actor, action, _, purpose, _, flagged in care.audit(mine) if actor == doctor_id] == [
        ("care", False)
    ]


async def by_ids(care: Care, who: Mapping[str, str], *ids: object, **params: str) -> httpx.Response:
    """``GET /patients?id=…&id=…`` (and ``params``)."""
    query: list[tuple[str, str | int | float | bool | None]] = [("id", str(i)) for i in ids]
    return await care.client.get("/patients", params=[*query, *params.items()], headers=who)


def items(r: httpx.Response) -> list[tuple[str, bool]]:
    """(id, restricted) of each patient answered, in order."""
    assert r.status_code == 200, r.text
    return [(i["id"], i.get("restricted", False)) for i in r.json()["items"]]


async def test_patients_by_id_come_in_the_order_given_as_the_search_shows_and_records_them(care: Care) -> None:
    """A look-up by id shows what the search shows (a clinician: the whole record of patients in
    their care or under a grant, else the restricted item) and records each patient answered as
    the search records its results, as read: the same resource, purpose, outcome and flag."""
    mine, theirs = await care.patient("Batch-Mine"), await care.patient("Batch-Theirs")
    doctor_id = await care.account("DOCTOR")
    doctor = bearer(doctor_id, "DOCTOR")
    await care.client.post(f"/patients/{mine}/care-team", headers=CLERK, json={"user_id": str(doctor_id)})
    unknown = uuid.uuid4()
    looked_up = await by_ids(care, doctor, theirs, unknown, mine, theirs)
    assert items(looked_up) == [(theirs, True), (mine, False)]
    restricted, full = looked_up.json()["items"]
    assert set(restricted) == {"id", "mrn", "given_name", "family_name", "birth_date", "sex", "restricted"}
    assert full["email"] == "batch-mine@example.org"
    searched = await care.client.get("/patients", params={"q": "Batch-"}, headers=doctor)
    assert sorted(items(searched)) == sorted(items(looked_up))

    r = await care.client.post(f"/patients/{theirs}/emergency-access", headers=doctor, json={"reason": REASON})
    assert r.status_code == 201
    assert items(await by_ids(care, doctor, mine, theirs)) == [(mine, False), (theirs, False)]
    await care.client.get("/patients", params={"q": "Batch-"}, headers=doctor)
    for pid in (mine, theirs):
        rows = [(r[1], r[2:]) for r in care.audit(pid) if r[0] == doctor_id and r[1] in ("read", "search")]
        reads = [what for action, what in rows if action == "read"]
        searches = [what for action, what in rows if action == "search"]
        assert reads == searches, pid  # each look-up recorded as the search beside it
    assert [row[3] for row in care.audit(theirs) if row[0] == doctor_id and row[1] == "read"] == ["care", "emergency"]
    assert [row[5] for row in care.audit(theirs) if row[0] == doctor_id and row[1] == "read"] == [False, True]
    assert [row[1] for row in care.audit(mine) if row[0] == doctor_id].count("read") == 2  # once per look-up

    clerk_view = await by_ids(care, CLERK, mine, theirs)
    assert items(clerk_view) == [(mine, False), (theirs, False)]
    assert [row[2:5] for row in care.audit(mine) if row[0] == CLERK.sub and row[1] == "read"] == [
        ("patient", "care", "allowed")
    ]


async def test_patients_and_roles_outside_the_search_get_403_from_a_look_up_by_id(care: Care) -> None:
    pid = await care.patient("Batch-Own")
    before = len(care.audit(pid))
    for roles in (("PATIENT",), ("AUDITOR",), ()):
        r = await by_ids(care, bearer(uuid.uuid4(), *roles), pid)
        assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json", (roles, r.text)
        assert "Batch-Own" not in r.text
    for role in ("RECEPTIONIST", "ADMIN", "LAB_TECH", "BILLING", "NURSE"):
        assert (await by_ids(care, bearer(uuid.uuid4(), role), pid)).status_code == 200, role
    assert len(care.audit(pid)) == before + 5  # the five staff's reads; the refusals read no one


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"q": "Batch"}, "not both"),
        ({"birth_date": "1961-03-04"}, "not both"),
        ({"id": "not-a-uuid"}, "id"),
        ({"id": "12345678-1234-1234-1234-12345678901"}, "id"),
    ],
)
async def test_a_look_up_by_id_with_a_search_or_a_bad_id_is_a_422(
    care: Care, params: dict[str, str], says: str
) -> None:
    pid = await care.patient("Batch-Bad")
    before = len(care.audit(pid))
    r = await care.client.get("/patients", params=[("id", pid), *params.items()], headers=CLERK)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    assert says in r.text and "Batch-Bad" not in r.text
    assert len(care.audit(pid)) == before


async def test_up_to_200_ids_are_looked_up_in_one_call(care: Care) -> None:
    """A day's list of 300 appointments names its patients in two calls: 200 ids, then 100."""
    first, last = await care.patient("Batch-First"), await care.patient("Batch-Last")
    many = [first, *(uuid.uuid4() for _ in range(198)), last]
    assert items(await by_ids(care, CLERK, *many)) == [(first, False), (last, False)]
    assert items(await by_ids(care, CLERK, *reversed(many))) == [(last, False), (first, False)]
    over = await by_ids(care, CLERK, *many, uuid.uuid4())
    assert over.status_code == 422 and "200" in over.text, over.text
    assert len([row for row in care.audit(first) if row[0] == CLERK.sub and row[1] == "read"]) == 2


# --- break-the-glass ------------------------------------------------------------------------------


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_break_the_glass_is_time_limited_to_one_patient_audited_and_flagged(care: Care) -> None:
    """Granted a quarter of an hour before the day turns (its local midnight, or the change of the
    clocks), a grant lasts its thirty minutes of elapsed time, whatever the wall clock shows."""
    granted_at = turning_point(care.hard) - timedelta(minutes=15)
    care.clock.now = granted_at
    pid, other = await care.patient("Glass-One"), await care.patient("Glass-Two")
    doctor_id, nurse_id = await care.account("DOCTOR"), await care.account("NURSE")
    billing = await care.account("BILLING")
    doctor, nurse = bearer(doctor_id, "DOCTOR"), bearer(nurse_id, "NURSE")
    url = f"/patients/{pid}/emergency-access"
    for reason in ("help", "emergency emergency emergency", "x" * 501):
        r = await care.client.post(url, headers=doctor, json={"reason": reason})
        assert r.status_code == 422, reason
    assert (await care.client.post(url, headers=doctor, json={})).status_code == 422
    assert (await care.client.post(url, headers=doctor, json={"reason": REASON, "minutes": 999})).status_code == 422
    for who in (CLERK, ADMIN, bearer(uuid.uuid4(), "PATIENT"), bearer(billing, "BILLING")):
        assert (await care.client.post(url, headers=who, json={"reason": REASON})).status_code == 403
    missing = await care.client.post(
        f"/patients/{uuid.uuid4()}/emergency-access", headers=doctor, json={"reason": REASON}
    )
    assert missing.status_code == 404
    assert care.fake.state.grants == {} and care.fake.events(EmergencyAccessGranted) == []

    r = await care.client.post(url, headers=doctor, json={"reason": REASON})
    assert r.status_code == 201, r.text
    grant = r.json()
    assert grant["patient_id"] == pid and set(grant) == {"grant_id", "patient_id", "expires_at"}
    expires_at = datetime.fromisoformat(grant["expires_at"])
    assert expires_at == granted_at + timedelta(minutes=MINUTES)
    assert (await care.client.get(f"/patients/{pid}", headers=doctor)).status_code == 200
    assert (await care.client.get(f"/patients/{pid}/care-team", headers=doctor)).status_code == 200
    assert (await care.client.get(f"/patients/{other}", headers=doctor)).status_code == 403  # that one patient only
    assert (await care.client.get(f"/patients/{pid}", headers=nurse)).status_code == 403  # that one clinician only
    care.clock.now = expires_at - timedelta(seconds=1)
    assert (await care.client.get(f"/patients/{pid}", headers=doctor)).status_code == 200
    care.clock.now = expires_at
    expired = await care.client.get(f"/patients/{pid}", headers=doctor)
    assert expired.status_code == 403 and "emergency_access" in expired.json()

    # Audited and flagged: the grant and every read under it; the denial after it is not.
    mine = [
        (action, resource, purpose, outcome, flagged)
        for actor, action, resource, purpose, outcome, flagged in care.audit(pid)
        if actor == doctor_id
    ]
    assert mine == [
        ("break_glass", "patient", "emergency", "allowed", True),
        ("read", "patient", "emergency", "allowed", True),
        ("read", "care_team", "emergency", "allowed", True),
        ("read", "patient", "emergency", "allowed", True),
        ("read", "patient", "care", "denied", False),
    ]
    refused = [
        (action, outcome) for actor, action, *_, outcome, _ in care.audit(pid) if actor in (CLERK.sub, ADMIN.sub)
    ]
    assert refused == [("create", "allowed"), ("break_glass", "denied"), ("break_glass", "denied")]

    # Announced to administrators by ids, never with the reason or the patient's name.
    (event,) = care.fake.events(EmergencyAccessGranted)
    assert event.model_dump() == {
        "grant_id": uuid.UUID(grant["grant_id"]),
        "patient_id": uuid.UUID(pid),
        "granted_to": doctor_id,
        "roles": ["DOCTOR"],
        "granted_at": granted_at,
        "expires_at": expires_at,
    }
    published = care.published_text()
    assert grant["grant_id"] in published and "his.patients.emergency_access.granted.v1" in published
    for fragment in ("Unconscious", "relatives", "Glass-One", "glass-one@"):
        assert fragment not in published

    # The reason: readable by ADMIN and AUDITOR, each reading audited as oversight.
    for who in (ADMIN, AUDITOR):
        r = await care.client.get("/patients/emergency-access", params={"patient_id": pid}, headers=who)
        assert r.status_code == 200
        (record,) = r.json()["items"]
        assert record["reason"] == REASON and record["user_id"] == str(doctor_id) and record["active"] is False
        assert record["roles"] == ["DOCTOR"] and datetime.fromisoformat(record["granted_at"]) == granted_at
    for who in (doctor, CLERK, bearer(uuid.uuid4(), "PATIENT")):
        r = await care.client.get("/patients/emergency-access", params={"patient_id": pid}, headers=who)
        assert r.status_code == 403 and REASON not in r.text
    oversight = [
        (actor, purpose, outcome)
        for actor, _, resource, purpose, outcome, _ in care.audit(pid)
        if resource == "emergency_access"
    ]
    assert oversight[:2] == [(ADMIN.sub, "oversight", "allowed"), (AUDITOR.sub, "oversight", "allowed")]
    assert [outcome for *_, outcome in oversight[2:]] == ["denied"] * 3


async def test_a_grant_is_active_while_it_lasts_in_the_oversight_list(care: Care) -> None:
    pid = await care.patient("Glass-Active")
    doctor = bearer(await care.account("NURSE"), "NURSE")
    granted = (
        await care.client.post(f"/patients/{pid}/emergency-access", headers=doctor, json={"reason": REASON})
    ).json()

    async def listed() -> dict[str, Any]:
        r = await care.client.get("/patients/emergency-access", headers=AUDITOR)
        assert r.status_code == 200
        (record,) = r.json()["items"]
        return dict(record)

    assert (await listed())["grant_id"] == granted["grant_id"] and (await listed())["active"] is True
    assert (await listed())["roles"] == ["NURSE"]
    care.clock.advance(timedelta(minutes=MINUTES))
    assert (await listed())["active"] is False
