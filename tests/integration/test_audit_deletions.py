"""Deleted access records are named by ``his audit verify``: which producer, which numbers.

Real PostgreSQL and NATS: the patients service's database numbers its access records as it
commits them (its ``producer_seq`` counter, ADR 0028), its outbox relay publishes them to
JetStream, the audit service's consumers append them to the chain, and the verifier
(``his.cli.audit.verify_chain``, what ``his audit verify`` runs) compares the chain with the
producer's counter. Two deletions the chain alone did not see:

- a row deleted from the audit table by the database superuser after the last checkpoint;
- an access event deleted from its stream before audit consumed it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from his.audit import handlers as audit_handlers
from his.audit.domain import Missing
from his.cli import audit as audit_cli
from his.events.audit import PatientsRecordAccessed, PatientsRecordsAccessed, batch_accesses, record_access
from his.kernel import migrations, streams
from his.kernel.consumer import ConsumerLoop, Subscription
from his.kernel.db import Database
from his.kernel.events import Envelope, stream_name
from his.kernel.outbox import OutboxRelay
from his.kernel.security import Principal
from tests.conftest import NatsServer
from tests.support.waiting import wait_for

CLERK = Principal(subject=str(uuid.uuid4()), roles=frozenset({"RECEPTIONIST"}), token_id="t", expires_at=0.0)
PATIENTS = "his.patients"


@dataclass
class Hospital:
    """The patients service's database and relay, and the audit service's consumers, in-process."""

    patients: Database
    audit: Database
    js: JetStreamContext
    nc: NATS
    data: Path
    admin_dsn: str
    nats_url: str
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    consumers: list[asyncio.Task[None]] = field(default_factory=list)

    async def access(self, n: int = 1) -> None:
        """``n`` writes' access records, each committed in its own unit of work (one event each)."""
        for _ in range(n):
            async with self.patients.uow() as uow:
                record_access(
                    uow,
                    PatientsRecordAccessed,
                    CLERK,
                    patient_id=uuid.uuid4(),
                    action="update",
                    resource="patient",
                    purpose="registration",
                )

    async def reads(self, n: int) -> None:
        """``n`` concurrent audited reads: their records commit together, as batched events."""

        async def one() -> None:
            async with self.patients.read() as uow:
                await uow.conn.fetchval("SELECT 1")
                record_access(
                    uow,
                    PatientsRecordAccessed,
                    CLERK,
                    patient_id=uuid.uuid4(),
                    action="read",
                    resource="patient",
                    purpose="registration",
                )

        await asyncio.gather(*(one() for _ in range(n)))

    def start_audit(self) -> None:
        subscriptions = (
            Subscription.of("audit_deletions_record", PatientsRecordAccessed, audit_handlers.on_record_accessed),
            Subscription.of("audit_deletions_records", PatientsRecordsAccessed, audit_handlers.on_records_accessed),
        )
        for sub in subscriptions:
            loop = ConsumerLoop(self.audit, self.nc, self.js, sub)
            self.consumers.append(asyncio.create_task(loop.run()))

    async def recorded(self, n: int) -> None:
        async def enough() -> bool:
            return int(await self.audit.pool.fetchval("SELECT count(*) FROM audit_log")) >= n

        await wait_for(enough, timeout=30, what=f"{n} audit records")

    async def published(self) -> None:
        async def all_out() -> bool:
            return not await self.patients.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")

        await wait_for(all_out, timeout=30, what="the outbox published")


@pytest.fixture
async def hospital(admin_dsn: str, nats_server: NatsServer, nc: NATS, tmp_path: Path) -> AsyncIterator[Hospital]:
    data = tmp_path / "data"
    (data / "secrets").mkdir(parents=True)
    dsns = {}
    for svc in ("patients", "audit"):
        dsns[svc] = await migrations.provision(admin_dsn, svc, f"pw-{svc}-deletions")
        await migrations.upgrade(admin_dsn, svc)
    (data / "secrets" / "db-audit").write_text("pw-audit-deletions")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("TRUNCATE audit.audit_log, audit.inbox, audit.checkpoint_count, patients.outbox")
        for (schema,) in await conn.fetch(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'producer_seq'"
        ):
            await conn.execute(f'UPDATE "{schema}".producer_seq SET last = 0')  # a new hospital's counters
    finally:
        await conn.close()
    js = nc.jetstream(timeout=5.0)
    await streams.declare(js, ["patients"])
    patients = Database(dsns["patients"], schema="patients", max_size=8, combine_reads=batch_accesses)
    audit = Database(dsns["audit"], schema="audit", max_size=4)
    await patients.open()
    await audit.open()
    relay = OutboxRelay(patients.dsn, js, schema="patients", signal=patients.signal, poll_seconds=0.2)
    h = Hospital(patients, audit, js, nc, data, admin_dsn, nats_server.url, tasks=[asyncio.create_task(relay.run())])
    try:
        yield h
    finally:
        for t in [*h.tasks, *h.consumers]:
            t.cancel()
        await asyncio.gather(*h.tasks, *h.consumers, return_exceptions=True)
        await patients.close()
        await audit.close()


async def test_numbers_are_gap_free_across_writes_and_grouped_reads_and_verify_says_intact(
    hospital: Hospital,
) -> None:
    hospital.start_audit()
    await hospital.access(3)
    await hospital.reads(40)
    await hospital.access(2)
    await hospital.recorded(45)
    numbers = [r[0] for r in await hospital.audit.pool.fetch("SELECT producer_seq FROM audit_log ORDER BY 1")]
    assert numbers == list(range(1, 46))
    assert await hospital.patients.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE subject = 'his.patients.records.accessed.v1'"
    ), "some reads travelled as batched events"
    await audit_cli.write_checkpoint(hospital.admin_dsn, hospital.data)
    verdict = await audit_cli.verify_chain(hospital.admin_dsn, hospital.data, grace=5)
    assert verdict.ok, verdict


@pytest.mark.parametrize("where", ["tail", "middle"])
async def test_a_row_deleted_by_the_superuser_after_the_last_checkpoint_is_named(
    hospital: Hospital, where: str
) -> None:
    hospital.start_audit()
    await hospital.access(4)
    await hospital.recorded(4)
    await audit_cli.write_checkpoint(hospital.admin_dsn, hospital.data)  # the last checkpoint: record 4
    await hospital.access(4)
    await hospital.recorded(8)
    gone = 8 if where == "tail" else 6
    conn = await asyncpg.connect(hospital.admin_dsn)
    try:
        await conn.execute("DELETE FROM audit.audit_log WHERE source = $1 AND producer_seq = $2", PATIENTS, gone)
    finally:
        await conn.close()
    verdict = await audit_cli.verify_chain(hospital.admin_dsn, hospital.data, grace=0.5)
    assert not verdict.ok
    assert verdict.missing == (Missing(PATIENTS, gone, gone),)
    assert f"access records missing: {PATIENTS} {gone}" in verdict.problem


async def test_an_access_event_deleted_from_its_stream_before_audit_read_it_is_named(hospital: Hospital) -> None:
    await hospital.access(6)  # audit is not reading yet
    await hospital.published()
    stream = stream_name("patients")
    by_number = {}
    for seq in range(1, (await hospital.js.stream_info(stream)).state.last_seq + 1):
        env = Envelope.from_json((await hospital.js.get_msg(stream, seq)).data or b"")
        by_number[env.data["producer_seq"]] = seq
    for number in (3, 6):  # one in the middle, the last one
        assert await hospital.js.delete_msg(stream, by_number[number])
    hospital.start_audit()
    await hospital.recorded(4)
    started = time.monotonic()
    verdict = await audit_cli.verify_chain(hospital.admin_dsn, hospital.data, grace=1.0)
    assert time.monotonic() - started < 10
    assert not verdict.ok
    assert verdict.missing == (Missing(PATIENTS, 3, 3), Missing(PATIENTS, 6, 6))
    assert f"access records missing: {PATIENTS} 3, {PATIENTS} 6" in verdict.problem
    # The operator's command says the same, and fails.
    command_env = {
        "PATH": os.environ["PATH"],
        "HIS_DATA_DIR": str(hospital.data),
        "HIS_DATABASE_URL": hospital.admin_dsn,
        "HIS_NATS_URL": hospital.nats_url,
    }
    his = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("his")),
        "audit",
        "verify",
        "--grace",
        "0",  # what is missing was found missing above
        env=command_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(his.communicate(), 60)
    assert his.returncode == 1, (out + err).decode()
    said = " ".join((out + err).decode().split())  # the console wraps long lines
    assert f"audit chain BROKEN: access records missing: {PATIENTS} 3, {PATIENTS} 6" in said
    assert "the streams were not asked" not in said  # it asked JetStream too


async def test_a_deleted_last_record_with_the_counter_lowered_to_match_is_named_by_the_stream(
    hospital: Hospital,
) -> None:
    """The superuser deletes the last record and lowers the producer's counter to match: the
    database alone no longer shows it; the producer's stream, which still holds the event, does."""
    hospital.start_audit()
    await hospital.access(3)
    await hospital.recorded(3)
    conn = await asyncpg.connect(hospital.admin_dsn)
    try:
        await conn.execute("DELETE FROM audit.audit_log WHERE source = $1 AND producer_seq = 3", PATIENTS)
        await conn.execute("UPDATE patients.producer_seq SET last = 2")
    finally:
        await conn.close()
    assert (await audit_cli.verify_chain(hospital.admin_dsn, hospital.data, grace=0)).ok  # the hole the ADR names
    verdict = await audit_cli.verify_chain(hospital.admin_dsn, hospital.data, grace=0, js=hospital.js)
    assert verdict.missing == (Missing(PATIENTS, 3, 3),), verdict


async def test_the_witness_follows_the_chain_until_stopped_and_never_makes_its_own_key(hospital: Hospital) -> None:
    """``his audit checkpoint --every``: a cluster's witness, as `his up` is its own hospital's.
    It refuses to start without the hospital's key, witnesses each new head within its period,
    and stops on its signal with the file whole."""
    stop = asyncio.Event()
    with pytest.raises(audit_cli.NoCheckpointKeyError):
        await audit_cli.witness(hospital.admin_dsn, hospital.data, 0.1, stop)
    assert not (hospital.data / "secrets" / "audit-checkpoint-key").exists()
    (hospital.data / "secrets" / "audit-checkpoint-key").write_text("the hospital's witness key, from its Secret")
    hospital.start_audit()
    running = asyncio.create_task(audit_cli.witness(hospital.admin_dsn, hospital.data, 0.1, stop))
    try:
        for more, n in ((2, 2), (3, 5)):  # more records, and the chain's length after them
            await hospital.access(more)
            await hospital.recorded(n)

            async def witnessed(n: int = n) -> bool:
                last = audit_cli.latest_checkpoint(hospital.data)
                return last is not None and last.seq == n

            await wait_for(witnessed, timeout=10, what=f"a checkpoint at record {n}")
    finally:
        stop.set()
        failed = await asyncio.wait_for(running, timeout=5)
    assert failed == 0 and audit_cli.witness_heartbeat(hospital.data).exists()  # what a pod's probes read
    seqs = [cp.seq for cp in audit_cli.checkpoints(hospital.data)]
    assert seqs[-1] == 5 and seqs == sorted(seqs)  # one line per new head, in order
    verdict = await audit_cli.verify_chain(hospital.admin_dsn, hospital.data, grace=5)
    assert verdict.ok, verdict
