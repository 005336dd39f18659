"""The audit log on a real PostgreSQL: append-only for its role, tampering named by the verifier."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from his.audit import store
from his.audit.domain import NewRecord
from his.audit.store import PgChain
from his.cli import audit as audit_cli
from his.kernel import migrations


@pytest.fixture
async def chain(admin_dsn: str, tmp_path: Path) -> tuple[str, Path]:
    """An audit schema with 20 records and a checkpoint at the head; returns (admin dsn, data dir)."""
    data = tmp_path / "data"
    (data / "secrets").mkdir(parents=True)
    (data / "secrets" / "db-audit").write_text("pw-audit-test")
    dsn = await migrations.provision(admin_dsn, "audit", "pw-audit-test")
    await migrations.upgrade(admin_dsn, "audit")
    await fresh_audit(admin_dsn)
    conn = await asyncpg.connect(dsn)
    try:
        for i in range(20):
            async with conn.transaction():
                await PgChain(conn).append(
                    NewRecord(
                        event_id=uuid.uuid4(),
                        at=datetime.now(UTC),
                        source="his.patients",
                        actor_id=uuid.uuid4(),
                        actor_roles=("DOCTOR",),
                        patient_id=uuid.uuid4(),
                        action="read",
                        resource="patient",
                        purpose="care",
                        outcome="allowed" if i % 5 else "denied",
                        trace_id=None,
                    )
                )
    finally:
        await conn.close()
    await audit_cli.write_checkpoint(admin_dsn, data)
    return admin_dsn, data


async def fresh_audit(admin_dsn: str) -> None:
    """An empty chain, no witness count, and every producer's counter back at 0: a new hospital's
    audit trail (another test's numbered accesses are not this chain's to hold)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("TRUNCATE audit.audit_log, audit.checkpoint_count")
        for (schema,) in await conn.fetch(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'producer_seq'"
        ):
            await conn.execute(f'UPDATE "{schema}".producer_seq SET last = 0')
    finally:
        await conn.close()


async def test_the_runtime_role_may_only_append(chain: tuple[str, Path]) -> None:
    admin, data = chain
    conn = await asyncpg.connect(audit_cli.audit_dsn(admin, data))
    try:
        for sql in ("UPDATE audit_log SET outcome = 'allowed'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    finally:
        await conn.close()
    assert (await audit_cli.verify_chain(admin, data)).ok


TAMPERING = {
    "update": ("UPDATE audit.audit_log SET outcome = 'allowed' WHERE seq = 6", 6, "altered"),
    "delete": ("DELETE FROM audit.audit_log WHERE seq = 9", 9, "missing"),
    "swap": (
        """UPDATE audit.audit_log SET seq = CASE seq WHEN 3 THEN -4 ELSE -3 END WHERE seq IN (3, 4);
           UPDATE audit.audit_log SET seq = -seq WHERE seq < 0""",
        3,
        "",
    ),
    "truncate tail": ("DELETE FROM audit.audit_log WHERE seq > 15", 16, "truncated"),
    "flag set": ("UPDATE audit.audit_log SET flagged = true WHERE seq = 7", 7, "altered"),
    "flag cleared": ("UPDATE audit.audit_log SET flagged = NULL WHERE seq = 8", 8, "altered"),
    # A forged access below the chain's first record, which a patient's "who saw my record" lists.
    "inserted before the first": (
        f"""INSERT INTO audit.audit_log ({store.ROW})
            SELECT 0, gen_random_uuid(), at, source, actor_id, actor_roles, patient_id, action, resource, purpose,
                   outcome, trace_id, flagged, producer_seq, account_id, prev_hash, hash
            FROM audit.audit_log WHERE seq = 5""",
        0,
        "outside the chain",
    ),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
async def test_tampering_by_a_superuser_is_named(chain: tuple[str, Path], kind: str) -> None:
    admin, data = chain
    sql, first_bad, words = TAMPERING[kind]
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute("ALTER TABLE audit.audit_log DROP CONSTRAINT IF EXISTS audit_log_seq_check")
        await conn.execute(sql)
    finally:
        await conn.close()
    verdict = await audit_cli.verify_chain(admin, data)
    assert not verdict.ok
    assert verdict.first_bad_seq == first_bad
    assert words in verdict.problem


async def test_a_reforged_head_is_caught_by_the_checkpoint(chain: tuple[str, Path]) -> None:
    from his.audit.domain import GENESIS, link

    admin, data = chain
    conn = await asyncpg.connect(admin)
    try:
        rows = [dict(r) for r in await conn.fetch(f"SELECT {store.ROW} FROM audit.audit_log ORDER BY seq")]
        rows[6]["outcome"] = "allowed" if rows[6]["outcome"] == "denied" else "denied"
        prev = GENESIS
        async with conn.transaction():
            for r in rows:  # recompute every hash after the edit: internally consistent again
                h = link(prev, r)
                await conn.execute(
                    "UPDATE audit.audit_log SET outcome = $2, prev_hash = $3, hash = $4 WHERE seq = $1",
                    r["seq"],
                    r["outcome"],
                    prev,
                    h,
                )
                prev = h
    finally:
        await conn.close()
    verdict = await audit_cli.verify_chain(admin, data)
    assert not verdict.ok and "re-forged" in verdict.problem


async def test_records_from_before_the_flag_verify_next_to_flagged_ones(chain: tuple[str, Path]) -> None:
    """Rows written before the ``flagged`` column (NULL there, hashed without it) still verify."""
    from his.audit.domain import GENESIS, link

    admin, data = chain
    conn = await asyncpg.connect(audit_cli.audit_dsn(admin, data))
    try:
        await fresh_audit(admin)
        audit_cli.checkpoint_file(data).unlink()  # a new chain: a new witness
        prev = GENESIS
        for seq in (1, 2, 3):  # as the code before the flag wrote them
            old = {
                "seq": seq,
                "event_id": uuid.uuid4(),
                "at": datetime.now(UTC),
                "source": "his.patients",
                "actor_id": uuid.uuid4(),
                "actor_roles": ["NURSE"],
                "patient_id": uuid.uuid4(),
                "action": "read",
                "resource": "patient",
                "purpose": "care",
                "outcome": "allowed",
                "trace_id": None,
            }
            h = link(prev, old)
            await conn.execute(
                """INSERT INTO audit_log (seq, event_id, at, source, actor_id, actor_roles, patient_id, action,
                   resource, purpose, outcome, trace_id, prev_hash, hash)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)""",
                *old.values(),
                prev,
                h,
            )
            prev = h
        for flagged in (True, False):
            async with conn.transaction():
                await PgChain(conn).append(
                    NewRecord(
                        event_id=uuid.uuid4(),
                        at=datetime.now(UTC),
                        source="his.patients",
                        actor_id=uuid.uuid4(),
                        actor_roles=("DOCTOR",),
                        patient_id=uuid.uuid4(),
                        action="break_glass" if flagged else "read",
                        resource="patient",
                        purpose="emergency" if flagged else "care",
                        outcome="allowed",
                        trace_id=None,
                        flagged=flagged,
                    )
                )
        flags = [r["flagged"] for r in await conn.fetch("SELECT flagged FROM audit_log ORDER BY seq")]
    finally:
        await conn.close()
    assert flags == [None, None, None, True, False]
    await audit_cli.write_checkpoint(admin, data)
    assert (await audit_cli.verify_chain(admin, data)).ok


async def _append_one(admin: str, data: Path) -> None:
    conn = await asyncpg.connect(audit_cli.audit_dsn(admin, data))
    try:
        async with conn.transaction():
            await PgChain(conn).append(
                NewRecord(
                    event_id=uuid.uuid4(),
                    at=datetime.now(UTC),
                    source="his.audit",
                    actor_id=uuid.uuid4(),
                    actor_roles=("AUDITOR",),
                    patient_id=uuid.uuid4(),
                    action="read",
                    resource="audit_trail",
                    purpose="oversight",
                    outcome="allowed",
                    trace_id=None,
                )
            )
    finally:
        await conn.close()


async def test_a_witness_cut_short_is_named(chain: tuple[str, Path]) -> None:
    """Checkpoints as ``his up`` writes them (one connection kept), chained and counted in the
    database: cutting the file's last line is named, though every line left is authentic."""
    admin, data = chain
    for _ in range(2):
        await _append_one(admin, data)
        await audit_cli.write_checkpoint(admin, data, keep=True)
    assert (await audit_cli.write_checkpoint(admin, data, keep=True)).n == 3  # the head did not move: none new
    await audit_cli._kept.pop(str(data)).close()
    assert [c.n for c in audit_cli.checkpoints(data)] == [1, 2, 3]
    assert audit_cli.checkpoint_file(data).stat().st_mode & 0o777 == 0o600  # its owner's alone
    assert (await audit_cli.verify_chain(admin, data, grace=0)).ok
    path = audit_cli.checkpoint_file(data)
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    verdict = await audit_cli.verify_chain(admin, data, grace=0)
    assert not verdict.ok
    assert verdict.problem.startswith("the witness was rolled back: checkpoint 3 cut off its end"), verdict
