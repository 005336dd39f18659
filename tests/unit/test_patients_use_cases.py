"""The patients' use cases through their routes, over the in-memory ports (no database, no
network): who may read and change a patient and their record, registration with likely
duplicates, master data, the medical record (encrypted, bound to its patient and entry), and
portal invitations' rules, each audited.

The routes are the service's own, mounted in-process over ``his.testing.patients``, whose
contract with the PostgreSQL store is ``tests/integration/test_patients_contract.py``; what needs
the database or NATS (trigram search ranking, LIKE's wildcards, concurrent redemptions, the
ciphertext in the table, events through JetStream, the gRPC code for notifications) stays in the
integration suite. Every test runs on a hard date: the clock half an hour after local midnight
of new year's day, or of the day the clocks go back.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from his.clients.billing import FakeBillingTerms
from his.events.audit import PatientsRecordAccessed
from his.events.patients import (
    CoverageChanged,
    InvitationIssued,
    InvitationRedeemed,
    PatientUpdated,
    RecordEntryAdded,
)
from his.kernel.clock import FakeClock
from his.kernel.crypto import FieldCipher
from his.patients.app import http_over
from his.testing.patients import FakeChart
from tests.support.api import Bearer, bearer, serve
from tests.support.calendar import HARD_DATES, HardDate
from tests.support.portal import CODES, link_account

CLERK_ID = uuid.uuid4()
CLERK = Bearer(CLERK_ID, "RECEPTIONIST")
TEXT = "Allergic to penicillin: anaphylaxis in 2019; carries an adrenaline pen"
MINUTES = 60


@dataclass
class Chart:
    client: httpx.AsyncClient
    fake: FakeChart
    clock: FakeClock
    hard: HardDate

    async def register(self, given: str, family: str, born: str, **extra: Any) -> httpx.Response:
        body = {"given_name": given, "family_name": family, "birth_date": born, "sex": "female", **extra}
        return await self.client.post("/patients", headers=CLERK, json=body)

    async def patient(self, **extra: Any) -> str:
        tag = uuid.uuid4().hex[:8]
        body = {
            "given_name": "Deniz",
            "family_name": f"Portal{tag}",
            "birth_date": "1985-04-03",
            "sex": "other",
            "email": f"deniz.{tag}@example.org",
            "confirm_duplicate": True,
        } | extra
        r = await self.client.post("/patients", headers=CLERK, json={k: v for k, v in body.items() if v is not None})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def clinician(self, *roles: str) -> uuid.UUID:
        """A clinician account, as identity announces it."""
        user = uuid.uuid4()
        async with self.fake.uow() as u:
            await u.clinicians.remember(user, sorted(roles or ("DOCTOR",)), u.clock())
        return user

    async def invite(self, patient_id: str, **body: Any) -> httpx.Response:
        return await self.client.post(f"/patients/{patient_id}/invitations", headers=CLERK, json=body)

    async def invited(self, patient_id: str) -> tuple[str, str]:
        r = await self.invite(patient_id)
        assert r.status_code == 201, r.text
        return r.json()["id"], CODES.code(uuid.UUID(r.json()["id"]))

    async def redeem(self, code: str, account: uuid.UUID, *roles: str) -> httpx.Response:
        headers = bearer(account, *(roles or ("PATIENT",)))
        return await self.client.post("/patients/invitations/redeem", headers=headers, json={"code": code})

    def accesses(self) -> list[PatientsRecordAccessed]:
        return [a for a in self.fake.events(PatientsRecordAccessed) if isinstance(a, PatientsRecordAccessed)]

    def published_text(self) -> str:
        return "\n".join(e.to_json().decode() for e in self.fake.published)


@pytest.fixture(params=[HARD_DATES[0], HARD_DATES[4]], ids=str)
def hard(request: pytest.FixtureRequest) -> HardDate:
    """A new year's day, or the day the clocks go back."""
    day: HardDate = request.param
    return day


@pytest.fixture
async def chart(hard: HardDate) -> AsyncIterator[Chart]:
    """The patients' routes, half an hour after local midnight of ``hard`` (UTC is still on the
    day before)."""
    clock = hard.clock(0, 30)
    fake = FakeChart(clock)
    routes = http_over(
        fake,
        clock=clock,
        cipher=FieldCipher([os.urandom(32)]),
        payers=FakeBillingTerms(),
        invitation_codes=CODES,
        invitation_minutes=MINUTES,
        emergency_minutes=30.0,
        timezone=hard.zone,
    )
    async with serve(routes, base_url="http://patients") as client:
        yield Chart(client, fake, clock, hard)


# --- the medical record ---------------------------------------------------------------------------


async def test_records_are_for_carers_and_the_patient_and_bound_to_their_row(chart: Chart) -> None:
    client = chart.client
    account = uuid.uuid4()
    carer, stranger = await chart.clinician(), await chart.clinician()
    r = await chart.register("Ece", "Records", "1990-05-06", email="ece@example.org")
    pid = r.json()["id"]
    await link_account(client, pid, account)
    assert (
        await client.post(f"/patients/{pid}/care-team", headers=CLERK, json={"user_id": str(carer)})
    ).status_code == 201

    entry = {"kind": "allergy", "code": "Z88.0", "text": TEXT}
    written = await client.post(f"/patients/{pid}/records", headers=bearer(carer, "DOCTOR"), json=entry)
    assert written.status_code == 201, written.text
    for who in (bearer(carer, "DOCTOR"), bearer(account, "PATIENT")):
        items = (await client.get(f"/patients/{pid}/records", headers=who)).json()["items"]
        assert [(i["kind"], i["code"], i["text"]) for i in items] == [("allergy", "Z88.0", TEXT)]
    outside = await client.get(f"/patients/{pid}/records", headers=bearer(stranger, "DOCTOR"))
    assert outside.status_code == 403 and "emergency_access" in outside.json()
    assert (
        await client.post(f"/patients/{pid}/records", headers=bearer(stranger, "DOCTOR"), json=entry)
    ).status_code == 403
    for role in ("RECEPTIONIST", "BILLING", "ADMIN"):
        refused = await client.get(f"/patients/{pid}/records", headers=bearer(uuid.uuid4(), role))
        assert refused.status_code == 403 and TEXT not in refused.text
    assert (
        await client.post(f"/patients/{pid}/records", headers=bearer(account, "PATIENT"), json=entry)
    ).status_code == 403
    assert (await client.get(f"/patients/{pid}/records", headers=bearer(uuid.uuid4(), "PATIENT"))).status_code == 404
    assert (await client.get(f"/patients/{uuid.uuid4()}/records", headers=bearer(carer, "DOCTOR"))).status_code == 404

    # Kept encrypted; the event names the kind, never the code (a diagnosis) or the text.
    (stored,) = chart.fake.state.entries.values()
    assert b"penicillin" not in stored.text_cipher and stored.created_at == chart.clock()
    (added,) = chart.fake.events(RecordEntryAdded)
    assert isinstance(added, RecordEntryAdded) and added.kind == "allergy" and stored.code == "Z88.0"
    assert "penicillin" not in chart.published_text() and "Z88.0" not in chart.published_text()
    # A ciphertext moved to another patient's row does not decrypt there: the read refuses.
    other = await chart.register("Kaan", "Other", "1980-01-01", sex="male")
    other_id = uuid.UUID(other.json()["id"])
    await client.post(f"/patients/{other_id}/care-team", headers=CLERK, json={"user_id": str(carer)})
    moved = replace(stored, id=uuid.uuid4(), patient_id=other_id)
    chart.fake.state.entries[moved.id] = moved
    read = await client.get(f"/patients/{other_id}/records", headers=bearer(carer, "DOCTOR"))
    assert read.status_code == 503 and TEXT not in read.text


async def test_a_second_staff_role_does_not_lift_a_clinicians_care_requirement(chart: Chart) -> None:
    """A doctor who also holds a role-based role (reception, lab, billing, admin) reads and writes
    clinical entries only with a care relationship or an emergency grant, like any doctor: the
    other role gives master data, not the chart."""
    client = chart.client
    carer, dual = await chart.clinician(), await chart.clinician("DOCTOR", "RECEPTIONIST")
    r = await chart.register("Deniz", "Dual", "1975-02-03")
    pid = r.json()["id"]
    await client.post(f"/patients/{pid}/care-team", headers=CLERK, json={"user_id": str(carer)})
    entry = {"kind": "note", "text": TEXT}
    assert (
        await client.post(f"/patients/{pid}/records", headers=bearer(carer, "DOCTOR"), json=entry)
    ).status_code == 201
    for roles in (("DOCTOR", "RECEPTIONIST"), ("NURSE", "ADMIN"), ("DOCTOR", "LAB_TECH"), ("DOCTOR", "BILLING")):
        who = bearer(dual, *roles)
        read = await client.get(f"/patients/{pid}/records", headers=who)
        assert read.status_code == 403 and TEXT not in read.text, (roles, read.status_code)
        wrote = await client.post(f"/patients/{pid}/records", headers=who, json={"kind": "note", "text": "x"})
        assert wrote.status_code == 403, (roles, wrote.status_code)
        assert (await client.get(f"/patients/{pid}", headers=who)).status_code == 200  # master data by role


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "gossip", "text": "x"},
        {"kind": "note", "text": ""},
        {"kind": "note", "text": "x" * 20_001},
        {"kind": "note", "text": "x", "code": "<b>"},
        {"kind": "note", "text": "x", "author_id": str(uuid.uuid4())},
    ],
)
async def test_bad_entries_are_422(chart: Chart, body: dict[str, str]) -> None:
    r = await chart.client.post(f"/patients/{uuid.uuid4()}/records", headers=bearer(uuid.uuid4(), "DOCTOR"), json=body)
    assert r.status_code == 422


# --- registration and master data ---------------------------------------------------------------


async def test_a_likely_duplicate_needs_confirmation(chart: Chart) -> None:
    first = (await chart.register("Elif", "Şahin", "1991-09-10", phone="+90 532 111 2233")).json()
    again = await chart.register("Elif", "Sahin", "1991-09-10")
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    assert [d["id"] for d in again.json()["possible_duplicates"]] == [first["id"]]
    assert "phone" not in again.json()["possible_duplicates"][0]
    same_phone = await chart.register("Someone", "Else", "2001-01-01", phone="+905321112233")
    assert same_phone.status_code == 409
    confirmed = await chart.register("Elif", "Sahin", "1991-09-10", confirm_duplicate=True)
    assert confirmed.status_code == 201
    assert (await chart.register("Elif", "Doğan", "1991-09-10")).status_code == 201  # a different person
    # Showing the duplicates was an audited read of the patient shown.
    shown = [a for a in chart.accesses() if a.patient_id == uuid.UUID(first["id"])]
    assert len(shown) >= 3  # created, and shown twice
    assert [(a.action, a.purpose) for a in shown] == [("create", "registration")] + [("search", "registration")] * 2


async def test_updates_are_checked_announced_and_limited_for_patients(chart: Chart) -> None:
    c = chart.client
    account = uuid.uuid4()
    p = (await chart.register("Can", "Ak", "1970-01-01", email="can@example.org")).json()
    await link_account(c, p["id"], account)
    r = await c.patch(f"/patients/{p['id']}", headers=CLERK, json={"family_name": "Akın", "phone": "+90 555 000 1111"})
    assert r.status_code == 200 and r.json()["family_name"] == "Akın"
    (event,) = chart.fake.events(PatientUpdated)
    assert event.model_dump()["fields"] == ["family_name", "phone"]
    assert "Akın" not in chart.published_text()
    me = bearer(account, "PATIENT")
    assert (await c.patch(f"/patients/{p['id']}", headers=me, json={"email": "can.ak@example.org"})).status_code == 200
    assert (await c.patch(f"/patients/{p['id']}", headers=me, json={"birth_date": "1999-01-01"})).status_code == 403
    assert (await c.patch(f"/patients/{p['id']}", headers=CLERK, json={"birth_date": "2999-01-01"})).status_code == 422
    assert (await c.patch(f"/patients/{p['id']}", headers=CLERK, json={"email": "nope"})).status_code == 422
    assert (await c.patch(f"/patients/{p['id']}", headers=CLERK, json={"mrn": "X"})).status_code == 422
    other = bearer(uuid.uuid4(), "PATIENT")
    assert (await c.patch(f"/patients/{p['id']}", headers=other, json={"email": "x@example.org"})).status_code == 404
    assert (await c.patch(f"/patients/{uuid.uuid4()}", headers=CLERK, json={"phone": "+90 555 1"})).status_code == 404


@pytest.mark.parametrize("q", ["%%", "__", "  ", "%_", "\\\\", "a%", "_ _", "%%%%%%"])
async def test_a_search_without_real_characters_lists_no_one_but_is_a_422(chart: Chart, q: str) -> None:
    """``q=%%``, ``__`` or blanks listed every patient."""
    await chart.register("Nur", "Everyone", "1960-01-01")
    r = await chart.client.get("/patients", params={"q": q}, headers=CLERK)
    assert r.status_code == 422 and "at least 2 letters or digits" in r.text, r.text


async def test_a_page_of_patients_holds_up_to_the_shared_maximum(chart: Chart) -> None:
    """The service's page was at most 50 while the gateway let 200 through: one rule for both."""
    await chart.register("Sayfa", "Limit", "1950-05-05")
    assert (await chart.client.get("/patients", params={"q": "limit", "limit": 200}, headers=CLERK)).status_code == 200
    r = await chart.client.get("/patients", params={"q": "limit", "limit": 201}, headers=CLERK)
    assert r.status_code == 422 and "limit must be a whole number from 1 to 200" in r.text, r.text


async def test_a_baby_born_after_local_midnight_is_registered_that_night(chart: Chart) -> None:
    """Born at 00:20 and registered at 00:30, hospital time: the birth date is today there, though
    UTC is still on the day before; its coverage starts today too. Tomorrow is still the future."""
    hard = chart.hard
    r = await chart.register("Bebek", "Yıldız", hard.day.isoformat(), coverage={"payer": "SGK", "member_id": "N-1"})
    assert r.status_code == 201, r.text
    (since,) = [c for c in chart.fake.events(CoverageChanged) if str(c.model_dump()["patient_id"]) == r.json()["id"]]
    assert since.model_dump()["effective_from"] == hard.day
    r = await chart.register("Bebek", "Ay", (hard.day + timedelta(days=1)).isoformat(), confirm_duplicate=True)
    assert r.status_code == 422 and "future" in r.json()["detail"]


# --- portal invitations ---------------------------------------------------------------------------


async def test_reception_invites_and_the_patient_links_their_own_record(
    chart: Chart, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pid, account = await chart.patient(), uuid.uuid4()
    assert (await chart.client.get("/patients/me", headers=bearer(account, "PATIENT"))).status_code == 404
    issued = await chart.invite(pid)
    assert issued.status_code == 201, issued.text
    body = issued.json()
    assert set(body) == {"id", "patient_id", "channel", "expires_at"}
    assert (body["patient_id"], body["channel"]) == (pid, "email")
    assert datetime.fromisoformat(body["expires_at"]) == chart.clock() + timedelta(minutes=MINUTES)
    code = CODES.code(uuid.UUID(body["id"]))

    # As typed from the mail: lower case, blanks instead of dashes.
    linked = await chart.redeem(f" {code.lower().replace('-', ' ')} ", account)
    assert linked.status_code == 200, linked.text
    assert (linked.json()["id"], linked.json()["user_id"]) == (pid, str(account))
    me = await chart.client.get("/patients/me", headers=bearer(account, "PATIENT"))
    assert me.status_code == 200 and me.json()["id"] == pid

    # Announced by ids only; the code is in no event, response or log line.
    (ev,) = [e for e in chart.fake.events(InvitationIssued) if str(e.model_dump()["patient_id"]) == pid]
    assert ev.model_dump(mode="json") == {
        "invitation_id": body["id"],
        "patient_id": pid,
        "channel": "email",
        "expires_at": ev.model_dump(mode="json")["expires_at"],
        "issued_by": str(CLERK_ID),
    }
    (done,) = [e for e in chart.fake.events(InvitationRedeemed) if str(e.model_dump()["patient_id"]) == pid]
    assert done.model_dump(mode="json") == {"invitation_id": body["id"], "patient_id": pid, "account_id": str(account)}
    for secret in (code, code.replace("-", "")):
        assert secret not in chart.published_text()
        assert secret not in issued.text and secret not in caplog.text
    # Issue and redemption are audited, each as its actor.
    audited = [(a.resource, a.action, a.outcome, str(a.actor_id)) for a in chart.accesses() if str(a.patient_id) == pid]
    assert ("patient/invitation", "create", "allowed", str(CLERK_ID)) in audited
    assert ("patient/account", "update", "allowed", str(account)) in audited


async def test_a_code_is_refused_when_used_expired_replaced_wrong_or_redeemed_by_staff(chart: Chart) -> None:
    pid = await chart.patient()
    _, code = await chart.invited(pid)
    for roles in (("RECEPTIONIST",), ("ADMIN",), ("DOCTOR",), ("PATIENT", "RECEPTIONIST"), ("PATIENT", "ADMIN")):
        r = await chart.redeem(code, uuid.uuid4(), *roles)
        assert r.status_code == 403 and "role PATIENT only" in r.json()["detail"], (roles, r.text)
    assert (await chart.redeem("12345", uuid.uuid4())).status_code == 422
    wrong = await chart.redeem(CODES.code(uuid.uuid4()), uuid.uuid4())
    assert wrong.status_code == 404 and wrong.json()["reason"] == "unknown"
    assert wrong.headers["content-type"] == "application/problem+json"

    owner = uuid.uuid4()
    assert (await chart.redeem(code, owner)).status_code == 200  # staff attempts left the code usable
    again = await chart.redeem(code, uuid.uuid4())
    assert again.status_code == 409 and again.json()["reason"] == "redeemed"
    mine_again = await chart.redeem(code, owner)
    assert mine_again.status_code == 409 and "linked to a patient record already" in mine_again.json()["detail"]

    # Expired: redeemable up to, not at, its expiry.
    other = await chart.patient()
    _, late = await chart.invited(other)
    chart.clock.advance(timedelta(minutes=MINUTES) - timedelta(seconds=1))
    _, on_time = await chart.invited(await chart.patient())
    chart.clock.advance(timedelta(seconds=1))
    expired = await chart.redeem(late, uuid.uuid4())
    assert expired.status_code == 409 and expired.json()["reason"] == "expired"
    assert datetime.fromisoformat(expired.json()["expired_at"]) == chart.clock()
    assert (await chart.redeem(on_time, uuid.uuid4())).status_code == 200

    # A newer invitation replaces the outstanding one.
    _, first = await chart.invited(other)
    _, second = await chart.invited(other)
    replaced = await chart.redeem(first, uuid.uuid4())
    assert replaced.status_code == 409 and replaced.json()["reason"] == "superseded"
    assert (await chart.redeem(second, uuid.uuid4())).status_code == 200

    # A linked record cannot be invited again; an account links to one record only.
    assert (await chart.invite(pid)).status_code == 409
    third = await chart.patient()
    _, code3 = await chart.invited(third)
    assert (await chart.redeem(code3, owner)).status_code == 409
    # Every refused attempt left an audit record, denied.
    denied = [a for a in chart.accesses() if a.resource == "patient/account" and a.outcome == "denied"]
    assert {None if a.patient_id is None else str(a.patient_id) for a in denied} >= {None, pid, other}


async def test_reception_invites_on_a_channel_the_patient_has_an_address_for(chart: Chart) -> None:
    no_mail = await chart.patient(email=None, phone="+90 555 010 2030")
    r = await chart.invite(no_mail)
    assert r.status_code == 422 and "no e-mail address" in r.json()["detail"]
    assert (await chart.invite(no_mail, channel="sms")).status_code == 201
    assert (await chart.invite(await chart.patient(), channel="sms")).status_code == 422  # no phone
    assert (await chart.invite(no_mail, channel="fax")).status_code == 422
    assert (await chart.invite(str(uuid.uuid4()))).status_code == 404
    for roles in (("PATIENT",), ("DOCTOR",), ("BILLING",)):
        r = await chart.client.post(f"/patients/{no_mail}/invitations", headers=bearer(uuid.uuid4(), *roles), json={})
        assert r.status_code == 403, roles


async def test_an_invitation_is_decided_by_the_patients_policy_and_a_refusal_audited(chart: Chart) -> None:
    """Reception and ADMIN invite (policy INVITE); any other role is refused with 403 whatever
    the id, the patient on their own record too, and each refusal on a patient is audited, denied."""
    pid, owner = await chart.patient(), uuid.uuid4()
    _, code = await chart.invited(pid)
    assert (await chart.redeem(code, owner)).status_code == 200
    other = await chart.patient()
    refused = {
        uuid.uuid4(): ("DOCTOR",),
        uuid.uuid4(): ("NURSE",),
        uuid.uuid4(): ("BILLING",),
        uuid.uuid4(): ("AUDITOR",),
        owner: ("PATIENT",),
    }
    for account, roles in refused.items():
        for target in (pid, other, str(uuid.uuid4())):
            r = await chart.client.post(f"/patients/{target}/invitations", headers=bearer(account, *roles), json={})
            assert r.status_code == 403, (roles, target, r.text)
            assert r.json()["detail"] == "not allowed for your role"
    admin = bearer(uuid.uuid4(), "ADMIN")
    assert (await chart.client.post(f"/patients/{other}/invitations", headers=admin, json={})).status_code == 201
    assert (await chart.client.post(f"/patients/{uuid.uuid4()}/invitations", headers=admin)).status_code == 404
    audited = [
        (str(a.actor_id), str(a.patient_id), a.outcome, a.purpose)
        for a in chart.accesses()
        if a.resource == "patient/invitation" and str(a.patient_id) in (pid, other)
    ]
    denied = {(actor, patient) for actor, patient, outcome, _ in audited if outcome == "denied"}
    assert denied == {(str(a), p) for a in refused for p in (pid, other)}
    assert {purpose for *_, purpose in audited} == {"portal_invitation"}


async def test_registration_no_longer_links_a_record_to_an_account(chart: Chart) -> None:
    """Reception could link a record to any account, even an ADMIN's; now only the patient links."""
    admin_account = uuid.uuid4()
    for who in (CLERK, bearer(uuid.uuid4(), "ADMIN")):
        r = await chart.client.post(
            "/patients",
            headers=who,
            json={
                "given_name": "Ali",
                "family_name": "Linked",
                "birth_date": "1970-01-01",
                "sex": "male",
                "user_id": str(admin_account),
                "confirm_duplicate": True,
            },
        )
        assert r.status_code == 422 and "invitation" in r.json()["detail"], r.text
    assert [p for p in chart.fake.state.patients.values() if p.user_id == admin_account] == []
