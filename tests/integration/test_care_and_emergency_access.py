"""Care relationships and break-the-glass on real PostgreSQL and JetStream: what other services
make of patients' decisions once they arrive through NATS (the audit chain's flags, the
administrators' alert, notifications' own refusals) and what the streams carry.

The patients and notifications APIs run in-process on their real runtime roles, with a clock the
test moves; patients' relay publishes to JetStream; the audit service's and notifications'
consumers apply what arrives; patients learns clinician accounts from identity's events.

The care-team rules, no self-assignment, ending care, search and lookup under care, who may break
the glass and why, a grant's expiry and reach, the 403 that offers emergency access and the audit
record of every decision are the use cases' unit tests, over the in-memory ports
(``tests/unit/test_patients_care_use_cases.py``).
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
    doctors = [(uuid.uuid4(), ("DOCTOR",)), (uuid.uuid4(), ("DOCTOR",))]
    for user_id, roles in doctors:
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
                doctors=[(d, bearer(d, *roles)) for d, roles in doctors],
            )
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for d in dbs.values():
            await d.close()


async def test_break_the_glass_is_flagged_in_the_audit_chain_alerted_to_admin_and_published_by_ids(
    world: World,
) -> None:
    """The grant and every access under it reach the audit service through NATS and are flagged
    in its chain, the denial after the grant expires is not; notifications alerts ADMIN (only);
    the streams carry the grant's ids, never its reason or the patient's name. Who may break the
    glass, the reason's rules, the expiry on every hard date and who reads the reasons are the use
    cases' unit tests (``tests/unit/test_patients_care_use_cases.py``)."""
    family = f"Glass-{uuid.uuid4().hex[:8]}"
    pid = await world.patient(family)
    _, (doctor_id, doctor) = world.doctors
    granted_at = world.clock.now
    r = await world.client.post(f"/patients/{pid}/emergency-access", headers=doctor, json={"reason": REASON})
    assert r.status_code == 201, r.text
    grant = r.json()
    assert datetime.fromisoformat(grant["expires_at"]) == granted_at + timedelta(minutes=MINUTES)
    assert (await world.client.get(f"/patients/{pid}", headers=doctor)).status_code == 200
    assert (await world.client.get(f"/patients/{pid}/care-team", headers=doctor)).status_code == 200
    found = await world.client.get("/patients", params={"q": family}, headers=doctor)
    assert found.status_code == 200 and pid in [i["id"] for i in found.json()["items"]]
    world.clock.now = granted_at + timedelta(minutes=MINUTES)
    expired = await world.client.get(f"/patients/{pid}", headers=doctor)
    assert expired.status_code == 403 and "emergency_access" in expired.json()

    # Audited and flagged: the grant and the reads and search under it; the denial is not.
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
        ("search", "patient", "emergency", "allowed", True),
        ("read", "patient", "care", "denied", False),
    ]
    assert not any(r["flagged"] for r in await world.audit_rows(pid) if r["actor_id"] != doctor_id)

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

    # The reason stays in patients: never on the bus.
    published = await stream_text(world.js, "HIS_PATIENTS") + await stream_text(world.js, "HIS_NOTIFICATIONS")
    assert grant["grant_id"] in published and "his.patients.emergency_access.granted.v1" in published
    for fragment in ("Unconscious", "relatives", family, f"{family.lower()}@"):
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
