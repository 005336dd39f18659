"""Portal invitations on the real database: redemptions racing for one code or one account, issuing
while the patient redeems, and the code notifications asks for over gRPC. The invitations' rules
are tested over the in-memory ports (``tests/unit/test_patients_use_cases.py``).

The patients router runs in-process with a clock the tests move; the code a patient would read in
their mail is derived from the invitation's id with the router's key (``tests.support.portal``),
and notifications' real gRPC adapter asks a real patients gRPC server for it over mutual TLS.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
