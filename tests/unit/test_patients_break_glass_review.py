"""The break-the-glass review (ADR 0030) over the patients' routes and the in-memory fakes: a
placeholder reason is a 422 naming its rule, the review queue lists each grant with the patient's
MRN, its reason, how long it lasted and what patients gave under it, an administrator's decision
is an event and an audit record, and a clinician over the limit is marked and announced while the
grant stands. Notifications turns that announcement into an alert for administrators.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from his.audit.domain import is_flagged
from his.events.audit import PatientsRecordAccessed
from his.events.patients import EmergencyAccessGranted, EmergencyAccessOverLimit, EmergencyAccessReviewed
from his.kernel.clock import FakeClock
from his.kernel.events import Envelope
from his.notifications import handlers as notifications
from his.notifications.app import http_over as notifications_http
from his.patients.app import http_over
from his.patients.domain import EmergencyLimit
from his.testing.notifications import FakeNotifications
from his.testing.patients import FakeChart
from tests.support.api import Bearer, bearer, serve
from tests.support.calendar import HARD_DATES, HardDate

CLERK = Bearer(uuid.uuid4(), "RECEPTIONIST")
ADMIN = Bearer(uuid.uuid4(), "ADMIN")
AUDITOR = Bearer(uuid.uuid4(), "AUDITOR")
MINUTES = 30.0
LIMIT = EmergencyLimit(grants=3, window=timedelta(hours=24))
REASONS = [
    "Unconscious patient brought to the ED, no relatives reachable",
    "Chest pain on the ward at night, cardiology asks for earlier ECGs",
    "Hasta acilde bilinci kapalı, yakınlarına ulaşılamıyor",
    "Fall from stairs, on anticoagulants, drug history unknown",
    "Transferred from another hospital without notes, septic shock",
]


@dataclass
class Glass:
    client: httpx.AsyncClient
    fake: FakeChart
    clock: FakeClock

    async def patient(self, family: str) -> dict[str, Any]:
        r = await self.client.post(
            "/patients",
            headers=CLERK,
            json={
                "given_name": "Deniz",
                "family_name": family,
                "birth_date": "1970-05-06",
                "sex": "female",
                "confirm_duplicate": True,
            },
        )
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def glass(self, who: Mapping[str, str], patient: dict[str, Any], reason: str) -> httpx.Response:
        return await self.client.post(
            f"/patients/{patient['id']}/emergency-access", headers=who, json={"reason": reason}
        )

    async def queue(self, who: Mapping[str, str] = ADMIN, **params: str) -> list[dict[str, Any]]:
        r = await self.client.get("/patients/emergency-access", headers=who, params=params)
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    def audit(self, actor: uuid.UUID) -> list[tuple[str, str, str, str, bool]]:
        """The actor's access records, in order: action, resource, purpose, outcome, flagged."""
        found = [a for a in self.fake.events(PatientsRecordAccessed) if isinstance(a, PatientsRecordAccessed)]
        return [
            (a.action, a.resource, a.purpose, a.outcome, is_flagged(a.action, a.purpose))
            for a in found
            if a.actor_id == actor
        ]


@pytest.fixture(params=[HARD_DATES[0], HARD_DATES[1]], ids=str)
async def glass(request: pytest.FixtureRequest) -> AsyncIterator[Glass]:
    hard: HardDate = request.param
    clock = hard.clock(23, 50)
    fake = FakeChart(clock)
    routes = http_over(fake, clock=clock, emergency_minutes=MINUTES, emergency_limit=LIMIT, timezone=hard.zone)
    async with serve(routes, base_url="http://patients") as client:
        yield Glass(client, fake, clock)


@pytest.mark.parametrize(
    ("reason", "rule"),
    [
        ("test", "placeholder"),
        ("x", "placeholder"),
        ("n/a", "placeholder"),
        (".", "placeholder"),
        ("acil acil acil acil acil", "placeholder"),
        ("deneme deneme deneme", "placeholder"),
        ("Emergency access needed for this patient", "placeholder"),
        ("asdfghjkl qwertyuiop", "keyboard_run"),
        ("aaaaaaaaaaaaaaaaaaaaaaaa", "repeated_characters"),
        ("fell, hip pain", "too_short"),
    ],
)
async def test_a_placeholder_reason_is_a_422_naming_its_rule(glass: Glass, reason: str, rule: str) -> None:
    patient = await glass.patient("Glass-Placeholder")
    r = await glass.glass(bearer(uuid.uuid4(), "DOCTOR"), patient, reason)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["rule"] == rule and r.json()["detail"]
    assert glass.fake.state.grants == {} and glass.fake.events(EmergencyAccessGranted) == []


async def test_the_same_reason_for_another_patient_within_a_day_is_refused(glass: Glass) -> None:
    a, b = await glass.patient("Glass-Same-A"), await glass.patient("Glass-Same-B")
    doctor, other = bearer(uuid.uuid4(), "DOCTOR"), bearer(uuid.uuid4(), "NURSE")
    assert (await glass.glass(doctor, a, REASONS[0])).status_code == 201
    assert (await glass.glass(doctor, a, REASONS[0])).status_code == 201  # the same patient again
    again = await glass.glass(doctor, b, f"  {REASONS[0].upper()}  ")
    assert again.status_code == 422 and again.json()["rule"] == "reused"
    assert (await glass.glass(other, b, REASONS[0])).status_code == 201  # another clinician's own words
    glass.clock.advance(timedelta(days=1, seconds=1))
    assert (await glass.glass(doctor, b, REASONS[0])).status_code == 201  # a day later


async def test_the_queue_lists_each_grant_with_what_was_read_and_an_admin_reviews_it(glass: Glass) -> None:
    patient, bystander = await glass.patient("Glass-Queue"), await glass.patient("Glass-Bystander")
    doctor_id = uuid.uuid4()
    doctor = bearer(doctor_id, "DOCTOR")
    granted = await glass.glass(doctor, patient, REASONS[0])
    assert granted.status_code == 201
    grant_id = granted.json()["grant_id"]
    pid = patient["id"]
    glass.clock.advance(timedelta(minutes=2))
    assert (await glass.client.get(f"/patients/{pid}", headers=doctor)).status_code == 200
    glass.clock.advance(timedelta(minutes=3))
    assert (await glass.client.get(f"/patients/{pid}/care-team", headers=doctor)).status_code == 200
    found = await glass.client.get("/patients", headers=doctor, params={"q": "Glass-"})
    assert found.status_code == 200
    assert (await glass.client.get(f"/patients/{bystander['id']}", headers=doctor)).status_code == 403

    (item,) = await glass.queue(AUDITOR)
    assert item["grant_id"] == grant_id and item["patient_id"] == pid and item["mrn"] == patient["mrn"]
    assert item["user_id"] == str(doctor_id) and item["reason"] == REASONS[0] and item["roles"] == ["DOCTOR"]
    assert item["lasted_minutes"] == 5.0 and item["active"] is True and item["over_limit"] is False
    assert [(r["resource"], r["action"]) for r in item["reads"]] == [
        ("patient", "read"),
        ("care_team", "read"),
        ("patient", "search"),
    ]
    assert item["audit_trail"] == f"/api/audit?patient_id={pid}"
    assert (item["review_state"], item["reviewed_by"], item["review_note"]) == ("pending", None, None)
    assert [i["grant_id"] for i in await glass.queue(state="pending")] == [grant_id]
    assert await glass.queue(state="reviewed") == []

    url = f"/patients/emergency-access/{grant_id}/review"
    for who in (AUDITOR, doctor, CLERK):
        refused = await glass.client.post(url, headers=who, json={"decision": "reviewed"})
        assert refused.status_code == 403
    missing = await glass.client.post(
        f"/patients/emergency-access/{uuid.uuid4()}/review", headers=ADMIN, json={"decision": "reviewed"}
    )
    assert missing.status_code == 404
    silent = await glass.client.post(url, headers=ADMIN, json={"decision": "escalated"})
    assert silent.status_code == 422 and "note" in silent.json()["detail"]
    assert (await glass.client.post(url, headers=ADMIN, json={"decision": "pending"})).status_code == 422
    assert glass.fake.events(EmergencyAccessReviewed) == []

    note = "Not on the ED rota that night; asked the clinical lead"
    escalated = await glass.client.post(url, headers=ADMIN, json={"decision": "escalated", "note": note})
    assert escalated.status_code == 200, escalated.text
    assert escalated.json()["review_state"] == "escalated" and escalated.json()["review_note"] == note
    closed = await glass.client.post(url, headers=ADMIN, json={"decision": "reviewed", "note": "Cover confirmed"})
    assert closed.status_code == 200 and closed.json()["reviewed_by"] == str(ADMIN.sub)
    again = await glass.client.post(url, headers=ADMIN, json={"decision": "escalated", "note": "Again"})
    assert again.status_code == 409 and "reviewed" in again.json()["detail"]
    (item,) = await glass.queue(state="reviewed")
    assert item["review_note"] == "Cover confirmed" and item["reviewed_at"] is not None

    # Each decision is an event (ids and the decision, never the note) and an audit record.
    decisions = glass.fake.events(EmergencyAccessReviewed)
    assert [(e.grant_id, e.reviewed_by, e.decision) for e in decisions if isinstance(e, EmergencyAccessReviewed)] == [
        (uuid.UUID(grant_id), ADMIN.sub, "escalated"),
        (uuid.UUID(grant_id), ADMIN.sub, "reviewed"),
    ]
    reviews = [r for r in glass.audit(ADMIN.sub) if r[1] == "emergency_access" and r[0] == "update"]
    assert reviews == [("update", "emergency_access", "review", "allowed", False)] * 2 + [
        ("update", "emergency_access", "review", "denied", False)  # the decision the grant no longer takes
    ]
    for refused_by in (AUDITOR.sub, doctor_id, CLERK.sub):  # and each refused attempt, under the grant's patient
        refusals = [r for r in glass.audit(refused_by) if r[1] == "emergency_access" and r[0] == "update"]
        assert refusals == [("update", "emergency_access", "review", "denied", False)], refused_by
    published = "\n".join(e.to_json().decode() for e in glass.fake.published)
    for secret in ("rota", "clinical lead", "Cover confirmed", "Unconscious"):
        assert secret not in published


async def test_nobody_reviews_their_own_emergency_access(glass: Glass) -> None:
    patient = await glass.patient("Glass-Own")
    both = uuid.uuid4()
    granted = await glass.glass(bearer(both, "DOCTOR", "ADMIN"), patient, REASONS[1])
    assert granted.status_code == 201
    r = await glass.client.post(
        f"/patients/emergency-access/{granted.json()['grant_id']}/review",
        headers=bearer(both, "ADMIN"),
        json={"decision": "reviewed"},
    )
    assert r.status_code == 403 and "own" in r.json()["detail"]


async def test_more_grants_than_the_limit_within_the_window_are_marked_and_announced(glass: Glass) -> None:
    """Three grants in a day are within the limit; the fourth stands, marked and announced; once
    two of them have left the window, a new one is within it again."""
    patients = [await glass.patient(f"Glass-Limit-{n}") for n in range(5)]
    doctor_id = uuid.uuid4()
    doctor = bearer(doctor_id, "DOCTOR")
    for n in range(3):
        assert (await glass.glass(doctor, patients[n], REASONS[n])).status_code == 201
        glass.clock.advance(timedelta(hours=1))
    assert glass.fake.events(EmergencyAccessOverLimit) == []
    fourth = await glass.glass(doctor, patients[3], REASONS[3])
    assert fourth.status_code == 201  # an emergency is never refused for the count
    assert (await glass.client.get(f"/patients/{patients[3]['id']}", headers=doctor)).status_code == 200
    (event,) = glass.fake.events(EmergencyAccessOverLimit)
    assert isinstance(event, EmergencyAccessOverLimit)
    assert (event.grant_id, event.granted_to, event.grants_in_window, event.limit, event.window_hours) == (
        uuid.UUID(fourth.json()["grant_id"]),
        doctor_id,
        4,
        3,
        24.0,
    )
    marked = {i["grant_id"]: i["over_limit"] for i in await glass.queue()}
    assert marked[fourth.json()["grant_id"]] is True and sum(marked.values()) == 1

    # Another clinician's grants are their own count.
    nurse = bearer(uuid.uuid4(), "NURSE")
    assert (await glass.glass(nurse, patients[4], REASONS[4])).status_code == 201
    assert len(glass.fake.events(EmergencyAccessOverLimit)) == 1

    # Just over 24 hours after the second grant, the first two have left the window: three in it.
    glass.clock.advance(timedelta(hours=22, seconds=1))
    assert (await glass.glass(doctor, patients[4], REASONS[4])).status_code == 201
    assert len(glass.fake.events(EmergencyAccessOverLimit)) == 1


async def test_notifications_alerts_administrators_of_a_clinician_over_the_limit(glass: Glass) -> None:
    clock = glass.clock
    fake = FakeNotifications(clock)
    patient, doctor = uuid.uuid4(), uuid.uuid4()
    ev = EmergencyAccessOverLimit(
        grant_id=uuid.uuid4(),
        patient_id=patient,
        granted_to=doctor,
        granted_at=clock.now,
        grants_in_window=4,
        limit=3,
        window_hours=24.0,
    )
    async with fake.uow() as u:
        await notifications.emergency_access_over_limit(u, Envelope.wrap(ev, aggregate_id=ev.grant_id), ev)
    async with serve(notifications_http(fake)) as client:
        admins = await client.get("/notifications/alerts", headers=bearer(uuid.uuid4(), "ADMIN"))
        (alert,) = admins.json()["items"]
        assert alert["kind"] == "break_glass_limit" and alert["actor_id"] == str(doctor)
        assert alert["patient_id"] == str(patient)
        assert alert["detail"] == {
            "grant_id": str(ev.grant_id),
            "granted_at": clock.now.isoformat(),
            "grants_in_window": 4,
            "limit": 3,
            "window_hours": 24.0,
        }
        own = await client.get("/notifications/alerts", headers=bearer(doctor, "DOCTOR"))
        assert own.json()["items"] == []
