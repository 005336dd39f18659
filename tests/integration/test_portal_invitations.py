"""Portal invitations on the real database: reception invites, the patient links their own record.

The patients router runs in-process with a clock the tests move; the code a patient would read in
their mail is derived from the invitation's id with the router's key (``tests.support.portal``),
and notifications' real gRPC adapter asks a real patients gRPC server for it over mutual TLS.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import httpx
import orjson
import pytest

from his.kernel import migrations, rpc
from his.kernel.db import Database
from his.kernel.pki import LocalCA, spiffe_id
from his.notifications.contacts import GrpcContacts
from his.patients.api import grpc as patients_grpc
from his.patients.app import http as patients_http
from his.proto.patients.v1 import patients_pb2 as pb
from his.proto.patients.v1 import patients_pb2_grpc as pb_grpc
from tests.support.api import Bearer, bearer, serve
from tests.support.portal import CODES

CLERK_ID = uuid.uuid4()
CLERK = Bearer(CLERK_ID, "RECEPTIONIST")
MINUTES = 60


@dataclass
class Portal:
    client: httpx.AsyncClient
    db: Database
    now: list[datetime] = field(default_factory=lambda: [datetime.now(UTC)])

    async def register(self, **extra: Any) -> str:
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

    async def invite(self, patient_id: str, **body: Any) -> httpx.Response:
        return await self.client.post(f"/patients/{patient_id}/invitations", headers=CLERK, json=body)

    async def invited(self, patient_id: str) -> tuple[str, str]:
        r = await self.invite(patient_id)
        assert r.status_code == 201, r.text
        return r.json()["id"], CODES.code(uuid.UUID(r.json()["id"]))

    async def redeem(self, code: str, account: uuid.UUID, *roles: str) -> httpx.Response:
        headers = bearer(account, *(roles or ("PATIENT",)))
        return await self.client.post("/patients/invitations/redeem", headers=headers, json={"code": code})

    async def events(self, subject: str) -> list[dict[str, Any]]:
        rows = await self.db.pool.fetch("SELECT payload FROM outbox WHERE subject = $1 ORDER BY id", subject)
        return [orjson.loads(r["payload"])["data"] for r in rows]

    async def outbox_text(self) -> str:
        return "\n".join(
            r["p"] for r in await self.db.pool.fetch("SELECT convert_from(payload, 'UTF8') AS p FROM outbox")
        )


@pytest.fixture
async def portal(admin_dsn: str) -> AsyncIterator[Portal]:
    dsn = await migrations.provision(admin_dsn, "patients", "pw-patients-portal")
    await migrations.upgrade(admin_dsn, "patients")
    db = Database(dsn, schema="patients", max_size=16)
    await db.open()
    world = Portal(None, db)  # type: ignore[arg-type]
    service = patients_http(
        db,
        clock=lambda: world.now[0],
        invitation_codes=CODES,
        invitation_minutes=MINUTES,
    )
    async with serve(service, base_url="http://patients") as client:
        world.client = client
        yield world
    await db.close()


async def test_reception_invites_and_the_patient_links_their_own_record(
    portal: Portal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pid, account = await portal.register(), uuid.uuid4()
    assert (await portal.client.get("/patients/me", headers=bearer(account, "PATIENT"))).status_code == 404
    issued = await portal.invite(pid)
    assert issued.status_code == 201, issued.text
    body = issued.json()
    assert set(body) == {"id", "patient_id", "channel", "expires_at"}
    assert (body["patient_id"], body["channel"]) == (pid, "email")
    assert datetime.fromisoformat(body["expires_at"]) == portal.now[0] + timedelta(minutes=MINUTES)
    code = CODES.code(uuid.UUID(body["id"]))

    # As typed from the mail: lower case, blanks instead of dashes.
    linked = await portal.redeem(f" {code.lower().replace('-', ' ')} ", account)
    assert linked.status_code == 200, linked.text
    assert (linked.json()["id"], linked.json()["user_id"]) == (pid, str(account))
    me = await portal.client.get("/patients/me", headers=bearer(account, "PATIENT"))
    assert me.status_code == 200 and me.json()["id"] == pid

    # Announced by ids only; the code is in no event, response or log line.
    (ev,) = [e for e in await portal.events("his.patients.invitation.issued.v1") if e["patient_id"] == pid]
    assert ev == {
        "invitation_id": body["id"],
        "patient_id": pid,
        "channel": "email",
        "expires_at": ev["expires_at"],
        "issued_by": str(CLERK_ID),
    }
    (done,) = [e for e in await portal.events("his.patients.invitation.redeemed.v1") if e["patient_id"] == pid]
    assert done == {"invitation_id": body["id"], "patient_id": pid, "account_id": str(account)}
    for secret in (code, code.replace("-", "")):
        assert secret not in await portal.outbox_text()
        assert secret not in issued.text and secret not in caplog.text
    # Issue and redemption are audited, each as its actor.
    audited = [
        (a["resource"], a["action"], a["outcome"], a["actor_id"])
        for a in await portal.events("his.patients.record.accessed.v1")
        if a["patient_id"] == pid
    ]
    assert ("patient/invitation", "create", "allowed", str(CLERK_ID)) in audited
    assert ("patient/account", "update", "allowed", str(account)) in audited


async def test_a_code_is_refused_when_used_expired_replaced_wrong_or_redeemed_by_staff(portal: Portal) -> None:
    pid = await portal.register()
    _, code = await portal.invited(pid)
    for roles in (("RECEPTIONIST",), ("ADMIN",), ("DOCTOR",), ("PATIENT", "RECEPTIONIST"), ("PATIENT", "ADMIN")):
        r = await portal.redeem(code, uuid.uuid4(), *roles)
        assert r.status_code == 403 and "role PATIENT only" in r.json()["detail"], (roles, r.text)
    assert (await portal.redeem("12345", uuid.uuid4())).status_code == 422
    wrong = await portal.redeem(CODES.code(uuid.uuid4()), uuid.uuid4())
    assert wrong.status_code == 404 and wrong.json()["reason"] == "unknown"
    assert wrong.headers["content-type"] == "application/problem+json"

    owner = uuid.uuid4()
    assert (await portal.redeem(code, owner)).status_code == 200  # staff attempts left the code usable
    again = await portal.redeem(code, uuid.uuid4())
    assert again.status_code == 409 and again.json()["reason"] == "redeemed"
    mine_again = await portal.redeem(code, owner)
    assert mine_again.status_code == 409 and "linked to a patient record already" in mine_again.json()["detail"]

    # Expired: redeemable up to, not at, its expiry.
    other = await portal.register()
    _, late = await portal.invited(other)
    portal.now[0] += timedelta(minutes=MINUTES)
    expired = await portal.redeem(late, uuid.uuid4())
    assert expired.status_code == 409 and expired.json()["reason"] == "expired"
    assert datetime.fromisoformat(expired.json()["expired_at"]) == portal.now[0]

    # A newer invitation replaces the outstanding one.
    _, first = await portal.invited(other)
    _, second = await portal.invited(other)
    replaced = await portal.redeem(first, uuid.uuid4())
    assert replaced.status_code == 409 and replaced.json()["reason"] == "superseded"
    assert (await portal.redeem(second, uuid.uuid4())).status_code == 200

    # A linked record cannot be invited again; an account links to one record only.
    assert (await portal.invite(pid)).status_code == 409
    third = await portal.register()
    _, code3 = await portal.invited(third)
    assert (await portal.redeem(code3, owner)).status_code == 409
    # Every refused attempt left an audit record, denied.
    denied = [
        a
        for a in await portal.events("his.patients.record.accessed.v1")
        if a["resource"] == "patient/account" and a["outcome"] == "denied"
    ]
    assert {a["patient_id"] for a in denied} >= {None, pid, other}


async def test_reception_invites_on_a_channel_the_patient_has_an_address_for(portal: Portal) -> None:
    no_mail = await portal.register(email=None, phone="+90 555 010 2030")
    r = await portal.invite(no_mail)
    assert r.status_code == 422 and "no e-mail address" in r.json()["detail"]
    assert (await portal.invite(no_mail, channel="sms")).status_code == 201
    assert (await portal.invite(await portal.register(), channel="sms")).status_code == 422  # no phone
    assert (await portal.invite(no_mail, channel="fax")).status_code == 422
    assert (await portal.invite(str(uuid.uuid4()))).status_code == 404
    for roles in (("PATIENT",), ("DOCTOR",), ("BILLING",)):
        r = await portal.client.post(f"/patients/{no_mail}/invitations", headers=bearer(uuid.uuid4(), *roles), json={})
        assert r.status_code == 403, roles


async def test_an_invitation_is_decided_by_the_patients_policy_and_a_refusal_audited(portal: Portal) -> None:
    """Reception and ADMIN invite (policy INVITE); any other role is refused with 403 whatever
    the id, the patient on their own record too, and each refusal on a patient is audited, denied."""
    pid, owner = await portal.register(), uuid.uuid4()
    _, code = await portal.invited(pid)
    assert (await portal.redeem(code, owner)).status_code == 200
    other = await portal.register()
    refused = {
        uuid.uuid4(): ("DOCTOR",),
        uuid.uuid4(): ("NURSE",),
        uuid.uuid4(): ("BILLING",),
        uuid.uuid4(): ("AUDITOR",),
        owner: ("PATIENT",),
    }
    for account, roles in refused.items():
        for target in (pid, other, str(uuid.uuid4())):
            r = await portal.client.post(f"/patients/{target}/invitations", headers=bearer(account, *roles), json={})
            assert r.status_code == 403, (roles, target, r.text)
            assert r.json()["detail"] == "not allowed for your role"
    admin = bearer(uuid.uuid4(), "ADMIN")
    assert (await portal.client.post(f"/patients/{other}/invitations", headers=admin, json={})).status_code == 201
    assert (await portal.client.post(f"/patients/{uuid.uuid4()}/invitations", headers=admin)).status_code == 404
    audited = [
        (a["actor_id"], a["patient_id"], a["outcome"], a["purpose"])
        for a in await portal.events("his.patients.record.accessed.v1")
        if a["resource"] == "patient/invitation" and a["patient_id"] in (pid, other)
    ]
    denied = {(actor, patient) for actor, patient, outcome, _ in audited if outcome == "denied"}
    assert denied == {(str(a), p) for a in refused for p in (pid, other)}
    assert {purpose for *_, purpose in audited} == {"portal_invitation"}


async def test_registration_no_longer_links_a_record_to_an_account(portal: Portal) -> None:
    """Reception could link a record to any account, even an ADMIN's; now only the patient links."""
    admin_account = uuid.uuid4()
    for who in (CLERK, bearer(uuid.uuid4(), "ADMIN")):
        r = await portal.client.post(
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
    assert await portal.db.pool.fetchval("SELECT count(*) FROM patient WHERE user_id = $1", admin_account) == 0


async def test_a_code_links_one_account_and_an_account_one_record_under_races(portal: Portal) -> None:
    pid = await portal.register()
    _, code = await portal.invited(pid)
    accounts = [uuid.uuid4() for _ in range(8)]
    answers = await asyncio.gather(*(portal.redeem(code, a) for a in accounts))
    assert sorted(r.status_code for r in answers) == [200] + [409] * 7
    winner = next(a for a, r in zip(accounts, answers, strict=True) if r.status_code == 200)
    assert await portal.db.pool.fetchval("SELECT user_id FROM patient WHERE id = $1", uuid.UUID(pid)) == winner

    one = uuid.uuid4()
    codes = [(await portal.invited(await portal.register()))[1] for _ in range(2)]
    answers = await asyncio.gather(*(portal.redeem(c, one) for c in codes))
    assert sorted(r.status_code for r in answers) == [200, 409]
    assert await portal.db.pool.fetchval("SELECT count(*) FROM patient WHERE user_id = $1", one) == 1


async def test_only_notifications_gets_the_code_and_only_while_it_can_be_redeemed(
    portal: Portal, tmp_path: Path
) -> None:
    ca = LocalCA(tmp_path / "pki").ensure()
    server = rpc.RpcServer(
        ca.issue("patients", spiffe_id("patients")),
        patients_grpc.services(SimpleNamespace(db=portal.db), CODES),  # type: ignore[arg-type]
    )
    port = await server.start()
    sender = GrpcContacts(f"127.0.0.1:{port}", ca.issue("notifications", spiffe_id("notifications")))
    try:
        pid = await portal.register()
        invitation, code = await portal.invited(pid)
        assert await sender.invitation_code(uuid.UUID(invitation)) == code
        assert await sender.invitation_code(uuid.uuid4()) is None
        accesses = await portal.events("his.patients.record.accessed.v1")
        read = [
            a for a in accesses if (a["patient_id"], a["resource"], a["action"]) == (pid, "patient/invitation", "read")
        ]
        assert [a["actor_roles"] for a in read] == [[spiffe_id("notifications")]]

        billing = rpc.channel(f"127.0.0.1:{port}", ca.issue("billing", spiffe_id("billing")))
        stub = pb_grpc.PatientDirectoryStub(billing)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetInvitation(pb.GetInvitationRequest(invitation_id=invitation), timeout=5)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await billing.close()

        assert (await portal.redeem(code, uuid.uuid4())).status_code == 200
        assert await sender.invitation_code(uuid.UUID(invitation)) is None  # used: nothing left to send
    finally:
        await sender.directory.client.channel.close()
        await server.stop(0)


async def test_issuing_while_the_patient_redeems_never_deadlocks(portal: Portal) -> None:
    """Issuing locks the patient, then their invitations; redeeming takes them in the same order,
    so the two racing end as one of the two outcomes, never as an aborted transaction."""
    for _ in range(80):
        pid = await portal.register()
        _, code = await portal.invited(pid)
        issued, redeemed = await asyncio.gather(portal.invite(pid), portal.redeem(code, uuid.uuid4()))
        outcome = (issued.status_code, redeemed.status_code)
        assert outcome in ((201, 409), (409, 200)), (issued.text, redeemed.text)
        if redeemed.status_code == 409:
            assert redeemed.json().get("reason") == "superseded", redeemed.text  # not a deadlock's 409
