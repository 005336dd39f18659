"""``his audit checkpoint | verify``: witness the head of the audit chain, and check the chain.

Checkpoints live outside the database (``$HIS_DATA_DIR/audit/checkpoints.jsonl``), each one
MAC'd with a key from the secrets directory (not beside them, readable by its owner only) and
chained to the one before; the number and MAC of the last one are also kept in the audit schema,
so cutting lines off the file's end is seen as well (ADR 0028). ``his up`` writes one every
``CHECKPOINT_EVERY`` seconds while the chain grows; in a cluster, ``his audit checkpoint --every 1``
does the same (``witness``: the Deployment ``his-audit-witness`` of ``deploy/``, with the key from a
Secret and the file on a volume of its own), and the file may be shipped to write-once storage.

``verify`` also asks every producer of access records for its latest number (its
``producer_seq`` counter, and the last access event its stream holds) and names each number the
chain lacks: a record deleted from the table or from a stream before audit read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import asyncpg
import nats.errors
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from his.audit.domain import Checkpoint, Verdict, check_witness, verify
from his.audit.store import PgChain
from his.kernel import bus
from his.kernel.db import SEQ_TABLE
from his.kernel.events import SEQ_FIELD, Envelope, stream_name
from his.kernel.migrations import runtime_role, with_credentials
from his.kernel.pki import WorkloadIdentity

log = logging.getLogger("his.audit.witness")

#: Seconds between the checkpoints ``his up`` writes while records are appended: the longest a
#: record stays unwitnessed outside the database.
CHECKPOINT_EVERY = 1.0
#: Seconds ``verify`` waits for access records still on their way (committed by their producer,
#: not yet appended by audit) before it names them missing.
GRACE = 10.0

COUNT_UPSERT = """
INSERT INTO checkpoint_count (n, mac) VALUES ($1, $2)
ON CONFLICT (one) DO UPDATE SET n = excluded.n, mac = excluded.mac WHERE checkpoint_count.n < excluded.n
"""


def checkpoint_file(data: Path) -> Path:
    return data / "audit" / "checkpoints.jsonl"


def audit_dsn(admin_dsn: str, data: Path) -> str:
    password = (data / "secrets" / "db-audit").read_text().strip()
    return with_credentials(admin_dsn, runtime_role("audit"), password)


def checkpoint_key(data: Path) -> bytes:
    from his.cli.supervisor.datadir import secret

    return secret(data, "audit-checkpoint-key").encode()


async def _audit(admin_dsn: str, data: Path) -> asyncpg.Connection[asyncpg.Record]:
    return await asyncpg.connect(audit_dsn(admin_dsn, data), server_settings={"search_path": "audit"})


#: The connection ``write_checkpoint`` keeps between calls (``his up`` calls it every second):
#: one query a second rather than a new session a second.
_kept: dict[str, asyncpg.Connection[asyncpg.Record]] = {}


async def write_checkpoint(admin_dsn: str, data: Path, *, keep: bool = False) -> Checkpoint:
    """Witness the chain's head: a checkpoint after the file's last one (none if the head has not
    moved), then its number and MAC in the audit schema. With ``keep`` the connection stays open
    for the next call (dropped if it fails)."""
    conn = _kept.pop(str(data), None) if keep else None
    if conn is None or conn.is_closed():
        conn = await _audit(admin_dsn, data)
    try:
        cp = await _witness(conn, data)
    except BaseException:
        await conn.close(timeout=2)
        raise
    if keep:
        _kept[str(data)] = conn
    else:
        await conn.close()
    return cp


async def _witness(conn: asyncpg.Connection[asyncpg.Record], data: Path) -> Checkpoint:
    seq, head = await PgChain(conn).head()
    path = checkpoint_file(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created readable by its owner alone, like everything under the data directory.
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # one writer at a time: each line follows the last
        last = _last(fh)
        if last is not None and last.seq == seq and last.hash == head and last.n:
            return last
        cp = Checkpoint.make(checkpoint_key(data), seq, head, after=last)
        fh.write(cp.to_json().encode() + b"\n")
        fh.flush()
    await conn.execute(COUNT_UPSERT, cp.n, cp.mac)
    return cp


def witness_heartbeat(data: Path) -> Path:
    """The file the witness touches at each turn (its liveness, for a cluster's probes)."""
    return data / "audit" / "witness.alive"


class NoCheckpointKeyError(Exception):
    """The witness's key is not where it must be: a new one would witness nothing."""


async def witness(admin_dsn: str, data: Path, every: float, stop: asyncio.Event) -> int:
    """Write a checkpoint every ``every`` seconds until ``stop`` is set, as ``his up`` does for its
    own hospital (a cluster's witness); a failure (the database away) is logged and tried again at
    the next turn. The key must exist already: a witness that made its own would vouch for
    nothing. The number of turns that failed."""
    if not (data / "secrets" / "audit-checkpoint-key").is_file():
        raise NoCheckpointKeyError(f"no audit checkpoint key at {data / 'secrets' / 'audit-checkpoint-key'}")
    failed = 0
    alive = witness_heartbeat(data)
    while not stop.is_set():
        try:
            await write_checkpoint(admin_dsn, data, keep=True)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            failed += 1
            log.warning("audit checkpoint failed (trying again in %.1fs): %r", every, exc)
        with contextlib.suppress(OSError):
            alive.touch()  # each turn, done or failed: what the pod's probes look at
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
    conn = _kept.pop(str(data), None)
    if conn is not None:
        await conn.close(timeout=2)
    return failed


def _last(fh: BinaryIO) -> Checkpoint | None:
    """The witness file's last checkpoint, read from its end (a line is far shorter than 4 KiB)."""
    end = fh.seek(0, os.SEEK_END)
    fh.seek(max(0, end - 4096))
    lines = [line for line in fh.read().splitlines() if line.strip()]
    return Checkpoint.from_json(lines[-1].decode()) if lines else None


def checkpoints(data: Path) -> list[Checkpoint]:
    """Every checkpoint of the witness file, in order."""
    path = checkpoint_file(data)
    if not path.exists():
        return []
    return [Checkpoint.from_json(line) for line in path.read_text().splitlines() if line.strip()]


def latest_checkpoint(data: Path) -> Checkpoint | None:
    found = checkpoints(data)
    return found[-1] if found else None


async def producers_latest(admin_dsn: str) -> dict[str, int]:
    """Each producer's latest access record number (``his.<schema>`` → its counter), read on the
    producers' own schemas."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        schemas = await conn.fetch(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = $1 ORDER BY 1", SEQ_TABLE
        )
        return {f"his.{s[0]}": int(await conn.fetchval(f'SELECT last FROM "{s[0]}".{SEQ_TABLE}') or 0) for s in schemas}
    finally:
        await conn.close()


async def _wait_for_arrivals(conn: asyncpg.Connection[asyncpg.Record], latest: dict[str, int], grace: float) -> None:
    """Wait up to ``grace`` seconds for the chain to hold each producer's latest number: records
    committed just now may still be on their way through the stream."""
    deadline = time.monotonic() + grace
    query = "SELECT source, max(producer_seq) FROM audit_log WHERE producer_seq IS NOT NULL GROUP BY source"
    while True:
        have = {r[0]: int(r[1]) for r in await conn.fetch(query)}
        if all(have.get(p, 0) >= n for p, n in latest.items()) or time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.1)


async def streams_latest(js: JetStreamContext, producers: Iterable[str]) -> dict[str, int]:
    """Each producer's latest access record number as its stream still holds it: the number of
    the last access in the last single or batched access event on its subjects (kept for 30
    days), which a superuser who lowers the producer's counter in the database does not change."""
    found: dict[str, int] = {}
    for producer in producers:
        service = producer.removeprefix("his.")
        for subject in (f"his.{service}.record.accessed.v1", f"his.{service}.records.accessed.v1"):
            try:
                msg = await js.get_last_msg(stream_name(service), subject)
            except NotFoundError:
                continue
            data = Envelope.from_json(msg.data or b"").data
            first, batch = data.get(SEQ_FIELD), data.get("accesses")
            if isinstance(first, int):
                last = first + (len(batch) if isinstance(batch, list) else 1) - 1
                found[producer] = max(found.get(producer, 0), last)
    return found


async def verify_chain(
    admin_dsn: str, data: Path, *, grace: float = GRACE, js: JetStreamContext | None = None
) -> Verdict:
    """The chain's links, its head against the witness, the witness against the count kept in the
    database, and every producer's numbers (its counter's, and with ``js`` its stream's last if
    higher): the first problem of each, in one verdict."""
    latest = await producers_latest(admin_dsn)
    if js is not None:
        for producer, number in (await streams_latest(js, list(latest))).items():
            latest[producer] = max(latest.get(producer, 0), number)
    conn = await _audit(admin_dsn, data)
    try:
        await _wait_for_arrivals(conn, latest, grace)
        count = await conn.fetchrow("SELECT n, mac FROM checkpoint_count")
        records = [r async for r in PgChain(conn).rows()]
    finally:
        await conn.close()
    key = checkpoint_key(data)
    witnessed = checkpoints(data)
    verdict = verify(records, witnessed[-1] if witnessed else None, key, latest)
    problem = check_witness(witnessed, key, (int(count["n"]), bytes(count["mac"])) if count else None)
    if not problem:
        return verdict
    both = f"{problem}; {verdict.problem}" if verdict.problem else problem
    return Verdict(False, verdict.checked, both, verdict.first_bad_seq, verdict.missing)


async def verify_all(
    admin_dsn: str, data: Path, nats_url: str | None, identity: WorkloadIdentity | None, *, grace: float = GRACE
) -> tuple[Verdict, str]:
    """``verify_chain`` with the streams asked too when NATS answers; and a note when it did not
    (the chain and the producers' counters are still compared)."""
    if not nats_url:
        return await verify_chain(admin_dsn, data, grace=grace), "the streams were not asked: no NATS address"
    try:
        nc = await asyncio.wait_for(
            bus.connect(
                nats_url,
                name="his-audit-verify",
                identity=identity,
                connect_timeout=3,
                max_reconnect_attempts=0,
                allow_reconnect=False,
            ),
            5,
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        return await verify_chain(admin_dsn, data, grace=grace), f"the streams were not asked: {exc!r}"
    try:
        return await verify_chain(admin_dsn, data, grace=grace, js=nc.jetstream(timeout=5.0)), ""
    finally:
        await nc.close()
