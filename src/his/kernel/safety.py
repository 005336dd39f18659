"""Startup check: refuse unsafe durability settings unless explicitly allowed."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from his.kernel.db import Connection, Database
from his.kernel.pki import monitor_context


class UnsafeDurabilityError(RuntimeError):
    """A server runs with settings that can lose acknowledged data."""


#: ``synchronous_commit`` values that wait for the commit to be flushed to disk before answering.
DURABLE_COMMIT = ("on", "remote_apply", "remote_write")


async def postgres_problems(conn: Connection) -> list[str]:
    """What is unsafe about the settings of ``conn``'s session (see ``commit_problems`` for what a
    service's writes actually commit with)."""
    problems = []
    sync = await conn.fetchval("SHOW synchronous_commit")
    if sync not in DURABLE_COMMIT:
        problems.append(f"PostgreSQL synchronous_commit={sync} (must be on)")
    fsync = await conn.fetchval("SHOW fsync")
    if fsync != "on":
        problems.append(f"PostgreSQL fsync={fsync} (must be on)")
    return problems


async def commit_problems(db: Database) -> list[str]:
    """What is unsafe about what ``db``'s writes commit with, read where they commit: inside a
    real unit of work and on the grouped writer's connection (``Database.commit_settings``).

    A session's ``SHOW`` is not enough: a ``SET LOCAL synchronous_commit = off`` in the unit of
    work, or a pool's session setting, weakens every commit while a fresh session reads ``on``.
    """
    problems = []
    for where, (sync, fsync) in (await db.commit_settings()).items():
        if sync not in DURABLE_COMMIT:
            problems.append(f"PostgreSQL synchronous_commit={sync} in {where} (must be on)")
        if fsync != "on":
            problems.append(f"PostgreSQL fsync={fsync} in {where} (must be on)")
    return problems


def nats_problems(monitor_url: str | None, ca: Path | None = None) -> list[str]:
    """What is unsafe about a NATS server, read from its monitoring port (https verified with ``ca``)."""
    if not monitor_url:
        return ["NATS durability cannot be verified: set HIS_NATS_MONITOR_URL to its monitoring port"]
    context = monitor_context(ca) if monitor_url.startswith("https") else None
    try:
        with urllib.request.urlopen(f"{monitor_url.rstrip('/')}/varz", timeout=5, context=context) as resp:  # noqa: S310
            varz = json.load(resp)
    except OSError as exc:
        return [f"NATS monitoring endpoint {monitor_url} unreachable: {exc}"]
    js = (varz.get("jetstream") or {}).get("config") or {}
    if not js:
        return ["NATS JetStream is not enabled"]
    if not js.get("sync_always"):
        return ["NATS JetStream sync_interval is not 'always' (acknowledged messages may not be on disk)"]
    return []


def enforce(problems: list[str], *, allow_unsafe: bool) -> list[str]:
    """Raise on problems unless allowed; returns them so the caller can warn."""
    if problems and not allow_unsafe:
        raise UnsafeDurabilityError(
            "; ".join(problems) + " — fix it, or set HIS_ALLOW_UNSAFE_DURABILITY=1 to run anyway"
        )
    return problems
