"""``his audit checkpoint | verify``: witness the head of the audit chain, and check the chain.

Checkpoints live outside the database (``$HIS_DATA_DIR/audit/checkpoints.jsonl``), each one
authenticated with an HMAC key from the secrets directory, so an attacker who can rewrite the
database cannot also rewrite the witness. In a cluster, run ``his audit checkpoint`` on a
schedule and ship the file to write-once storage.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

from his.audit.domain import Checkpoint, Verdict, verify
from his.audit.store import PgChain
from his.kernel.migrations import runtime_role, with_credentials


def checkpoint_file(data: Path) -> Path:
    return data / "audit" / "checkpoints.jsonl"


def audit_dsn(admin_dsn: str, data: Path) -> str:
    password = (data / "secrets" / "db-audit").read_text().strip()
    return with_credentials(admin_dsn, runtime_role("audit"), password)


def checkpoint_key(data: Path) -> bytes:
    from his.cli.supervisor.datadir import secret

    return secret(data, "audit-checkpoint-key").encode()


async def write_checkpoint(admin_dsn: str, data: Path) -> Checkpoint:
    conn = await asyncpg.connect(audit_dsn(admin_dsn, data), server_settings={"search_path": "audit"})
    try:
        seq, head = await PgChain(conn).head()
    finally:
        await conn.close()
    cp = Checkpoint.make(checkpoint_key(data), seq, head)
    path = checkpoint_file(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    last = latest_checkpoint(data)
    if last is None or last.seq != cp.seq:
        with path.open("a") as fh:
            fh.write(cp.to_json() + "\n")
    return cp


def latest_checkpoint(data: Path) -> Checkpoint | None:
    path = checkpoint_file(data)
    if not path.exists():
        return None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return Checkpoint.from_json(lines[-1]) if lines else None


async def verify_chain(admin_dsn: str, data: Path) -> Verdict:
    conn = await asyncpg.connect(audit_dsn(admin_dsn, data), server_settings={"search_path": "audit"})
    try:
        records = [r async for r in PgChain(conn).rows()]
    finally:
        await conn.close()
    return verify(records, latest_checkpoint(data), checkpoint_key(data))
