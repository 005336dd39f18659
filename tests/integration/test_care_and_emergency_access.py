"""Care relationships and break-the-glass on real PostgreSQL and JetStream.

The patients and notifications APIs run in-process on their real runtime roles, with a clock the
test moves; patients' relay publishes to JetStream; the audit service's and notifications'
consumers apply what arrives; patients learns clinician accounts from identity's events.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NATS

from his.audit import handlers as audit_handlers
from his.events.audit import NotificationsRecordAccessed, PatientsRecordAccessed
from his.events.identity import UserRegistered
from his.events.patients import EmergencyAccessGranted
from his.identity.keys import SigningKey, sign_access_token
from his.kernel import migrations, problems, streams
from his.kernel.consumer import ConsumerLoop, Subscription
from his.kernel.db import Database
from his.kernel.events import Envelope
from his.kernel.outbox import OutboxRelay
from his.kernel.security import AUDIENCE, ISSUER, TokenVerifier
from his.kernel.web import mount
from his.notifications import handlers as notification_handlers
from his.notifications.app import http as notifications_http
from his.patients import handlers as patient_handlers
from his.patients.app import http as patients_http
from tests.support.waiting import wait_for

KEY = SigningKey.generate(datetime.now(UTC))
MINUTES = 30.0
REASON = "Unconscious patient brought to the ED, no relatives reachable"


def bearer(sub: uuid.UUID, *roles: str) -> dict[str, str]:
    token, _ = sign_access_token(
        KEY, subject=str(sub), roles=list(roles), issuer=ISSUER, audience=AUDIENCE, now=datetime.now(UTC)
    )
    return {"authorization": f"Bearer {token}"}


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    client: httpx.AsyncClient
    clock: Clock
    js: Any
    audit: Database
    notifications: Database
    clerk: dict[str, str]
    admin: dict[str, str]
    auditor: dict[str, str]
    doctors: list[tuple[uuid.UUID, dict[str, str]]]
    nurse: tuple[uuid.UUID, dict[str, str]]
    billing: uuid.UUID

    async def patient(self, family: str) -> str:
        r = await self.client.post(
            "/patients",
            headers=self.clerk,
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

    async def audit_rows(self, patient_id: str) -> list[dict[str, Any]]:
        rows = await self.audit.pool.fetch(
            "SELECT action, resource, purpose, outcome, flagged, actor_id FROM audit_log WHERE patient_id = $1 "
            "ORDER BY seq",
            uuid.UUID(patient_id),
        )
        return [dict(r) for r in rows]


@pytest.fixture
async def world(admin_dsn: str, nc: NATS) -> AsyncIterator[World]:
    dsns = {}
    for svc in ("patients", "audit", "notifications"):
        dsns[svc] = await migrations.provision(admin_dsn, svc, f"pw-{svc}-care")
        await migrations.upgrade(admin_dsn, svc)
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute(
        "TRUNCATE audit.audit_log, audit.inbox, patients.outbox, notifications.inbox, notifications.alert"
    )
    await conn.close()
    js = nc.jetstream(timeout=5.0)
    await streams.declare(js, ["patients", "identity"])
    dbs = {svc: Database(dsn, schema=svc, max_size=4) for svc, dsn in dsns.items()}
    for d in dbs.values():
        await d.open()

    async def jwks() -> dict[str, Any]:
        return {"keys": [KEY.public_jwk()]}

    clock = Clock()
    verifier = TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE)
    app = FastAPI()
    problems.install(app)
    mount(app, patients_http(dbs["patients"], clock=clock, emergency_minutes=MINUTES), verifier=verifier)
    mount(app, notifications_http(dbs["notifications"]), verifier=verifier)
    tag = uuid.uuid4().hex[:8]
    subs = [
        (
            dbs["audit"],
            Subscription.of(f"audit_p_{tag}", PatientsRecordAccessed, audit_handlers.on_record_accessed),
        ),
        (
            dbs["audit"],
            Subscription.of(f"audit_n_{tag}", NotificationsRecordAccessed, audit_handlers.on_record_accessed),
        ),
        (
            dbs["notifications"],
            Subscription.of(
                f"notif_bg_{tag}",
                EmergencyAccessGranted,
                notification_handlers.on_emergency_access_granted,
            ),
        ),
        (
            dbs["patients"],
            Subscription.of(f"patients_users_{tag}", UserRegistered, patient_handlers.on_user_registered),
        ),
    ]
    await streams.declare(js, ["notifications"])
    tasks = [
        asyncio.create_task(OutboxRelay(dbs[s].dsn, js, schema=s, signal=dbs[s].signal, poll_seconds=0.2).run())
        for s in ("patients", "notifications")
    ]
    tasks += [asyncio.create_task(ConsumerLoop(db, nc, js, sub).run()) for db, sub in subs]

    # Clinician accounts, announced by identity as it does when an administrator creates them.
    doctors = [(uuid.uuid4(), ("DOCTOR",)), (uuid.uuid4(), ("DOCTOR",)), (uuid.uuid4(), ("NURSE",))]
    billing = uuid.uuid4()
    for user_id, roles in [*doctors, (billing, ("BILLING",))]:
        env = Envelope.wrap(UserRegistered(user_id=user_id, roles=list(roles)), aggregate_id=user_id)
        await js.publish(env.type, env.to_json(), headers={"Nats-Msg-Id": str(env.id)})

    async def known() -> bool:
        query = "SELECT count(*) FROM clinician WHERE user_id = ANY($1::uuid[])"
        return int(await dbs["patients"].pool.fetchval(query, [d[0] for d in doctors])) == len(doctors)

    await wait_for(known, what="the clinician accounts")
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://his"
        ) as client:
            yield World(
                client,
                clock,
                js,
                dbs["audit"],
                dbs["notifications"],
                clerk=bearer(uuid.uuid4(), "RECEPTIONIST"),
                admin=bearer(uuid.uuid4(), "ADMIN"),
                auditor=bearer(uuid.uuid4(), "AUDITOR"),
                doctors=[(d, bearer(d, *roles)) for d, roles in doctors[:2]],
                nurse=(doctors[2][0], bearer(doctors[2][0], "NURSE")),
                billing=billing,
            )
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for d in dbs.values():
            await d.close()


async def test_a_clinician_needs_a_care_relationship_and_a_denial_offers_emergency_access(world: World) -> None:
    pid = await world.patient("Care-One")
    (doctor_id, doctor), _ = world.doctors
    denied = await world.client.get(f"/patients/{pid}", headers=doctor)
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    body = denied.json()
    assert "care relationship" in body["detail"]
    assert body["emergency_access"]["href"] == f"/api/patients/{pid}/emergency-access"
    assert body["emergency_access"]["method"] == "POST" and "reason" in body["emergency_access"]["requires"]
    assert "Care-One" not in denied.text and "care-one@" not in denied.text
    assert (await world.client.get(f"/patients/{pid}/care-team", headers=doctor)).status_code == 403

    r = await world.client.post(f"/patients/{pid}/care-team", headers=world.clerk, json={"user_id": str(doctor_id)})
    assert r.status_code == 201, r.text
    rel = r.json()
    assert rel["source"] == "assignment" and rel["user_id"] == str(doctor_id) and rel["valid_until"] is None
    ok = await world.client.get(f"/patients/{pid}", headers=doctor)
    assert ok.status_code == 200 and ok.json()["family_name"] == "Care-One"
    team = await world.client.get(f"/patients/{pid}/care-team", headers=doctor)
    assert [m["id"] for m in team.json()["items"]] == [rel["id"]]

    async def audited() -> bool:
        return len(await world.audit_rows(pid)) >= 6

    await wait_for(audited, what="the audit records")
    rows = await world.audit_rows(pid)
    reads = [(r["resource"], r["outcome"]) for r in rows if r["actor_id"] == doctor_id]
    assert reads == [("patient", "denied"), ("care_team", "denied"), ("patient", "allowed"), ("care_team", "allowed")]
    assert not any(r["flagged"] for r in rows)


async def test_care_team_rules(world: World) -> None:
    pid, other = await world.patient("Team-A"), await world.patient("Team-B")
    (doctor_id, doctor), (_, doctor2) = world.doctors
    assign = {"user_id": str(doctor_id)}
    for who in (doctor, bearer(uuid.uuid4(), "PATIENT"), bearer(world.billing, "BILLING")):
        assert (await world.client.post(f"/patients/{pid}/care-team", headers=who, json=assign)).status_code == 403
    r = await world.client.post(f"/patients/{pid}/care-team", headers=world.admin, json=assign)
    assert r.status_code == 201
    rel = r.json()["id"]
    assert (await world.client.post(f"/patients/{pid}/care-team", headers=world.clerk, json=assign)).status_code == 409
    for user in (world.billing, uuid.uuid4()):  # not a clinician; not a user at all
        r = await world.client.post(f"/patients/{pid}/care-team", headers=world.clerk, json={"user_id": str(user)})
        assert r.status_code == 422 and "clinician" in r.json()["detail"]
    missing = await world.client.post(f"/patients/{uuid.uuid4()}/care-team", headers=world.clerk, json=assign)
    assert missing.status_code == 404
    for body in ({"user_id": str(doctor_id), "id": str(uuid.uuid4())}, {"user_id": str(doctor_id), "source": "x"}):
        assert (
            await world.client.post(f"/patients/{pid}/care-team", headers=world.clerk, json=body)
        ).status_code == 422
    past = {"user_id": str(doctor_id), "until": "2020-01-01T00:00:00+00:00"}
    assert (await world.client.post(f"/patients/{other}/care-team", headers=world.clerk, json=past)).status_code == 422

    # A relationship with an end date ends by itself.
    until = (world.clock.now + timedelta(hours=2)).isoformat()
    r = await world.client.post(
        f"/patients/{other}/care-team", headers=world.clerk, json={"user_id": str(doctor_id), "until": until}
    )
    assert r.status_code == 201
    assert (await world.client.get(f"/patients/{other}", headers=doctor)).status_code == 200
    world.clock.now += timedelta(hours=2)
    assert (await world.client.get(f"/patients/{other}", headers=doctor)).status_code == 403
    assert (await world.client.get(f"/patients/{pid}", headers=doctor)).status_code == 200  # open-ended

    # Ending one: the id must belong to the patient in the path.
    assert (await world.client.delete(f"/patients/{other}/care-team/{rel}", headers=world.clerk)).status_code == 404
    assert (await world.client.delete(f"/patients/{pid}/care-team/{rel}", headers=doctor)).status_code == 403
    assert (await world.client.delete(f"/patients/{pid}/care-team/{rel}", headers=doctor2)).status_code == 403
    assert (await world.client.delete(f"/patients/{pid}/care-team/{rel}", headers=world.clerk)).status_code == 204
    assert (await world.client.delete(f"/patients/{pid}/care-team/{rel}", headers=world.clerk)).status_code == 204
    assert (await world.client.get(f"/patients/{pid}", headers=doctor)).status_code == 403
    assert (await world.client.get(f"/patients/{pid}/care-team", headers=world.admin)).json()["items"] == []


async def test_no_one_puts_themself_on_a_care_team(world: World) -> None:
    """An account that is both a clinician and a receptionist or administrator would otherwise
    give itself care, unflagged: it is refused (403, pointing to emergency access, which is
    flagged), the attempt is audited as denied, and nothing changes; another registrar may assign
    it, and it may assign other clinicians."""
    pid = await world.patient("Self-Assign")
    (doctor_id, _), (colleague, _) = world.doctors
    for roles in (("DOCTOR", "RECEPTIONIST"), ("DOCTOR", "ADMIN")):
        me = bearer(doctor_id, *roles)
        r = await world.client.post(f"/patients/{pid}/care-team", headers=me, json={"user_id": str(doctor_id)})
        assert r.status_code == 403, r.text
        assert "yourself" in r.json()["detail"] and "emergency access" in r.json()["detail"]
        records = await world.client.get(f"/patients/{pid}/lab-results", headers=me)
        assert records.status_code == 403 and "emergency_access" in records.json()  # still no care
    assert (await world.client.get(f"/patients/{pid}/care-team", headers=world.admin)).json()["items"] == []
    me = bearer(doctor_id, "DOCTOR", "RECEPTIONIST")
    r = await world.client.post(f"/patients/{pid}/care-team", headers=me, json={"user_id": str(colleague)})
    assert r.status_code == 201, r.text
    r = await world.client.post(f"/patients/{pid}/care-team", headers=world.clerk, json={"user_id": str(doctor_id)})
    assert r.status_code == 201, r.text
    assert (await world.client.get(f"/patients/{pid}/lab-results", headers=me)).status_code == 200

    async def audited() -> bool:
        return len([r for r in await world.audit_rows(pid) if r["resource"] == "care_team"]) >= 4

    await wait_for(audited, what="the audit records")
    teams = [
        (r["actor_id"], r["action"], r["outcome"]) for r in await world.audit_rows(pid) if r["resource"] == "care_team"
    ]
    assert teams[:2] == [(doctor_id, "create", "denied")] * 2


async def test_search_shows_a_clinician_only_a_lookup_of_patients_outside_their_care(world: World) -> None:
    mine, theirs = await world.patient("Lookup-Mine"), await world.patient("Lookup-Theirs")
    (doctor_id, doctor), _ = world.doctors
    await world.client.post(f"/patients/{mine}/care-team", headers=world.clerk, json={"user_id": str(doctor_id)})
    found = await world.client.get("/patients", params={"q": "Lookup-"}, headers=doctor)
    items = {i["id"]: i for i in found.json()["items"]}
    assert items[mine]["email"] == "lookup-mine@example.org" and "restricted" not in items[mine]
    assert items[theirs]["restricted"] is True
    assert set(items[theirs]) == {"id", "mrn", "given_name", "family_name", "birth_date", "sex", "restricted"}
    clerk_view = await world.client.get("/patients", params={"q": "Lookup-"}, headers=world.clerk)
    assert all("restricted" not in i for i in clerk_view.json()["items"])

    # Under an emergency grant the full record shows, and the search is audited as emergency access.
    r = await world.client.post(f"/patients/{theirs}/emergency-access", headers=doctor, json={"reason": REASON})
    assert r.status_code == 201
    found = await world.client.get("/patients", params={"q": "Lookup-Theirs"}, headers=doctor)
    # Name search is fuzzy: "Lookup-Mine" may show too; the one asked for comes first.
    item = found.json()["items"][0]
    assert item["id"] == theirs
    assert item["email"] == "lookup-theirs@example.org" and "restricted" not in item

    async def searches() -> list[tuple[str, bool]]:
        return [
            (r["purpose"], r["flagged"])
            for r in await world.audit_rows(theirs)
            if r["actor_id"] == doctor_id and r["action"] == "search"
        ]

    async def both() -> bool:
        return len(await searches()) == 2

    await wait_for(both, what="the audit records of both searches")
    assert await searches() == [("care", False), ("emergency", True)]


async def test_break_the_glass_is_time_limited_to_one_patient_audited_flagged_and_alerted(world: World) -> None:
    pid, other = await world.patient("Glass-One"), await world.patient("Glass-Two")
    _, (doctor_id, doctor) = world.doctors
    url = f"/patients/{pid}/emergency-access"
    for reason in ("help", "emergency emergency emergency", "x" * 501):
        r = await world.client.post(url, headers=doctor, json={"reason": reason})
        assert r.status_code == 422, reason
    assert (await world.client.post(url, headers=doctor, json={})).status_code == 422
    assert (await world.client.post(url, headers=doctor, json={"reason": REASON, "minutes": 999})).status_code == 422
    for who in (world.clerk, world.admin, bearer(uuid.uuid4(), "PATIENT"), bearer(world.billing, "BILLING")):
        assert (await world.client.post(url, headers=who, json={"reason": REASON})).status_code == 403
    missing = await world.client.post(
        f"/patients/{uuid.uuid4()}/emergency-access", headers=doctor, json={"reason": REASON}
    )
    assert missing.status_code == 404

    granted_at = world.clock.now
    r = await world.client.post(url, headers=doctor, json={"reason": REASON})
    assert r.status_code == 201, r.text
    grant = r.json()
    assert grant["patient_id"] == pid and set(grant) == {"grant_id", "patient_id", "expires_at"}
    assert datetime.fromisoformat(grant["expires_at"]) == granted_at + timedelta(minutes=MINUTES)
    assert (await world.client.get(f"/patients/{pid}", headers=doctor)).status_code == 200
    assert (await world.client.get(f"/patients/{pid}/care-team", headers=doctor)).status_code == 200
    assert (await world.client.get(f"/patients/{other}", headers=doctor)).status_code == 403  # that one patient only
    _, nurse = world.nurse
    assert (await world.client.get(f"/patients/{pid}", headers=nurse)).status_code == 403  # that one clinician only
    world.clock.now = granted_at + timedelta(minutes=MINUTES) - timedelta(seconds=1)
    assert (await world.client.get(f"/patients/{pid}", headers=doctor)).status_code == 200
    world.clock.now = granted_at + timedelta(minutes=MINUTES)
    expired = await world.client.get(f"/patients/{pid}", headers=doctor)
    assert expired.status_code == 403 and "emergency_access" in expired.json()

    # Audited and flagged: the grant and both reads under it; the denials are not flagged.
    async def audited() -> bool:
        return len([r for r in await world.audit_rows(pid) if r["actor_id"] == doctor_id]) >= 5

    await wait_for(audited, what="the audit records of the emergency access")
    mine = [
        (r["action"], r["resource"], r["purpose"], r["outcome"], r["flagged"])
        for r in await world.audit_rows(pid)
        if r["actor_id"] == doctor_id
    ]
    assert mine == [
        ("break_glass", "patient", "emergency", "allowed", True),
        ("read", "patient", "emergency", "allowed", True),
        ("read", "care_team", "emergency", "allowed", True),
        ("read", "patient", "emergency", "allowed", True),
        ("read", "patient", "care", "denied", False),
    ]

    # Administrators are alerted; others may not see the alerts.
    async def alerted() -> list[dict[str, Any]]:
        r = await world.client.get("/notifications/alerts", headers=world.admin)
        assert r.status_code == 200, r.text
        return [a for a in r.json()["items"] if a["patient_id"] == pid]

    async def has_alert() -> bool:
        return bool(await alerted())

    await wait_for(has_alert, what="the administrators' alert")
    (alert,) = await alerted()
    assert alert["kind"] == "break_glass" and alert["actor_id"] == str(doctor_id)
    assert alert["detail"]["grant_id"] == grant["grant_id"] and alert["detail"]["roles"] == ["DOCTOR"]
    # A doctor sees only alerts addressed to them (their lab orders' results), not this one.
    own_alerts = await world.client.get("/notifications/alerts", headers=doctor)
    assert own_alerts.status_code == 200 and all(a["kind"] != "break_glass" for a in own_alerts.json()["items"])
    for who in (world.clerk, world.auditor):
        assert (await world.client.get("/notifications/alerts", headers=who)).status_code == 403

    # The reason: readable by ADMIN and AUDITOR in patients, never on the bus.
    for who in (world.admin, world.auditor):
        r = await world.client.get("/patients/emergency-access", params={"patient_id": pid}, headers=who)
        assert r.status_code == 200
        (record,) = r.json()["items"]
        assert record["reason"] == REASON and record["user_id"] == str(doctor_id) and record["active"] is False
    for who in (doctor, world.clerk, bearer(uuid.uuid4(), "PATIENT")):
        r = await world.client.get("/patients/emergency-access", params={"patient_id": pid}, headers=who)
        assert r.status_code == 403 and REASON not in r.text
    published = await stream_text(world.js, "HIS_PATIENTS") + await stream_text(world.js, "HIS_NOTIFICATIONS")
    assert grant["grant_id"] in published and "his.patients.emergency_access.granted.v1" in published
    for fragment in ("Unconscious", "relatives", "Glass-One", "glass-one@"):
        assert fragment not in published


async def stream_text(js: Any, stream: str) -> str:
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        out.append(msg.data.decode())
    return "\n".join(out)


async def test_a_refused_read_of_a_patients_messages_is_audited(world: World) -> None:
    """Notifications decide as every service: ADMIN reads the delivery history, reception and ADMIN
    the preferences; a clinician, in care or not, is refused (403); another patient is told
    nothing exists (404); every refusal reaches the audit log as denied."""
    pid = await world.patient("Messages")
    (doctor_id, doctor), _ = world.doctors
    await world.client.post(f"/patients/{pid}/care-team", headers=world.clerk, json={"user_id": str(doctor_id)})
    stranger = bearer(uuid.uuid4(), "PATIENT")
    for path in ("/notifications", "/notifications/preferences"):
        assert (await world.client.get(path, params={"patient_id": pid}, headers=doctor)).status_code == 403
        assert (await world.client.get(path, params={"patient_id": pid}, headers=stranger)).status_code == 404
        assert (await world.client.get(path, params={"patient_id": pid}, headers=world.admin)).status_code == 200
    r = await world.client.put(
        "/notifications/preferences",
        params={"patient_id": pid},
        headers=doctor,
        json={"email": False, "sms": False, "opted_out": True},
    )
    assert r.status_code == 403
    assert (
        await world.client.get("/notifications/preferences", params={"patient_id": pid}, headers=world.clerk)
    ).json()["opted_out"] is False

    async def audited() -> bool:
        return len([r for r in await world.audit_rows(pid) if r["outcome"] == "denied"]) >= 5

    await wait_for(audited, what="the refusals in the audit log")
    denied = [
        (r["resource"], r["actor_id"] == doctor_id) for r in await world.audit_rows(pid) if r["outcome"] == "denied"
    ]
    assert sorted(denied) == [
        ("delivery", False),
        ("delivery", True),
        ("preference", False),
        ("preference", True),
        ("preference", True),
    ]
