"""A change an administrator makes to an account reaches the audit chain, numbered, and a record of
it deleted afterwards is named by ``his audit verify`` (ADR 0031, ADR 0028).

Real PostgreSQL and NATS: identity's use case commits the change, its event and its access record
in one transaction, its database numbers the record (identity's ``producer_seq``), its outbox
relay publishes it, the audit service's consumer appends it to the chain, and the verifier
(``his.cli.audit.verify_chain``, what ``his audit verify`` runs) checks the chain's links and
identity's numbers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NATS

from his.access import Role
from his.audit import handlers as audit_handlers
from his.audit.domain import Missing
from his.cli import audit as audit_cli
from his.events.audit import IdentityRecordAccessed
from his.identity.accounts import Accounts
from his.identity.app import use_cases
from his.identity.store import IdentityStore
from his.kernel import migrations, streams
from his.kernel.consumer import ConsumerLoop, Subscription
from his.kernel.db import Database
from his.kernel.outbox import OutboxRelay
from his.kernel.security import Principal
from tests.support.waiting import wait_for

IDENTITY = "his.identity"
PASSWORD = "violet kettle under the moon"


@dataclass
class Hospital:
    identity: Database
    audit: Database
    accounts: Accounts
    admin: Principal
    nurse: uuid.UUID
    data: Path
    admin_dsn: str

    async def recorded(self, n: int) -> list[asyncpg.Record]:
        async def enough() -> bool:
            return int(await self.audit.pool.fetchval("SELECT count(*) FROM audit_log")) >= n

        await wait_for(enough, timeout=30, what=f"{n} audit records")
        return list(await self.audit.pool.fetch("SELECT * FROM audit_log ORDER BY seq"))


@pytest.fixture
async def hospital(admin_dsn: str, nc: NATS, tmp_path: Path) -> AsyncIterator[Hospital]:
    data = tmp_path / "data"
    (data / "secrets").mkdir(parents=True)
    dsns = {}
    for svc in ("identity", "audit"):
        dsns[svc] = await migrations.provision(admin_dsn, svc, f"pw-{svc}-account-records")
        await migrations.upgrade(admin_dsn, svc)
    (data / "secrets" / "db-audit").write_text("pw-audit-account-records")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("TRUNCATE audit.audit_log, audit.inbox, audit.checkpoint_count, identity.outbox")
        for (schema,) in await conn.fetch(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'producer_seq'"
        ):
            await conn.execute(f'UPDATE "{schema}".producer_seq SET last = 0')  # a new hospital's counters
    finally:
        await conn.close()
    js = nc.jetstream(timeout=5.0)
    await streams.declare(js, ["identity"])
    identity = Database(dsns["identity"], schema="identity", max_size=4)
    audit = Database(dsns["audit"], schema="audit", max_size=4)
    await identity.open()
    await audit.open()
    tasks = [
        asyncio.create_task(
            OutboxRelay(identity.dsn, js, schema="identity", signal=identity.signal, poll_seconds=0.2).run()
        ),
        asyncio.create_task(
            ConsumerLoop(
                audit,
                nc,
                js,
                Subscription.of("audit_account_records", IdentityRecordAccessed, audit_handlers.on_record_accessed),
            ).run()
        ),
    ]
    try:
        users = use_cases(identity, b"a passphrase for the test keys")
        tag = uuid.uuid4().hex[:8]
        admin_id = await users.register(
            email=f"chief-{tag}@his.local", password=PASSWORD, full_name="Chief Admin", roles=[Role.ADMIN]
        )
        nurse = await users.register(
            email=f"nurse-{tag}@his.local", password=PASSWORD, full_name="Night Nurse", roles=[Role.NURSE]
        )
        admin = Principal(subject=str(admin_id), roles=frozenset({"ADMIN"}), token_id="t", expires_at=0.0)
        yield Hospital(identity, audit, Accounts(IdentityStore(identity)), admin, nurse, data, admin_dsn)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await identity.close()
        await audit.close()


async def test_a_role_change_reaches_the_chain_numbered_and_its_deletion_is_named(hospital: Hospital) -> None:
    await hospital.accounts.update(hospital.nurse, by=hospital.admin, roles=[Role.NURSE, Role.LAB_TECH])
    await hospital.accounts.update(hospital.nurse, by=hospital.admin, active=False)
    rows = await hospital.recorded(2)
    assert [(r["source"], r["producer_seq"], r["resource"], r["account_id"], r["patient_id"]) for r in rows] == [
        (IDENTITY, 1, "account/roles", hospital.nurse, None),
        (IDENTITY, 2, "account/disabled", hospital.nurse, None),
    ]
    assert {(str(r["actor_id"]), tuple(r["actor_roles"]), r["purpose"]) for r in rows} == {
        (hospital.admin.subject, ("ADMIN",), "account_administration")
    }
    await audit_cli.write_checkpoint(hospital.admin_dsn, hospital.data)
    verdict = await audit_cli.verify_chain(hospital.admin_dsn, hospital.data, grace=5)
    assert verdict.ok, verdict

    conn = await asyncpg.connect(hospital.admin_dsn)  # the superuser removes the role change
    try:
        await conn.execute("DELETE FROM audit.audit_log WHERE source = $1 AND producer_seq = 1", IDENTITY)
    finally:
        await conn.close()
    verdict = await audit_cli.verify_chain(hospital.admin_dsn, hospital.data, grace=0.5)
    assert not verdict.ok
    assert verdict.missing == (Missing(IDENTITY, 1, 1),)
    assert f"access records missing: {IDENTITY} 1" in verdict.problem


async def test_the_account_named_by_a_record_cannot_be_cleared_unseen(hospital: Hospital) -> None:
    await hospital.accounts.unlock(hospital.nurse, by=hospital.admin)
    (row,) = await hospital.recorded(1)
    assert row["account_id"] == hospital.nurse and row["resource"] == "account/unlocked"
    conn = await asyncpg.connect(hospital.admin_dsn)
    try:
        await conn.execute("UPDATE audit.audit_log SET account_id = NULL WHERE seq = $1", row["seq"])
    finally:
        await conn.close()
    verdict = await audit_cli.verify_chain(hospital.admin_dsn, hospital.data, grace=0.5)
    assert not verdict.ok and verdict.first_bad_seq == row["seq"] and "altered" in verdict.problem
