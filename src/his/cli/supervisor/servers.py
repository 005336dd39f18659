"""PostgreSQL and NATS under ``his up``: the embedded ones started (and PostgreSQL started again
when it dies), or external ones (``HIS_DATABASE_URL``, ``HIS_NATS_URL``) reached; then their
durability checked before any service starts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from urllib.parse import urlsplit

import asyncpg

from his.cli.settings import OperatorSettings
from his.cli.supervisor.console import console
from his.cli.supervisor.datadir import save_state, secret
from his.cli.supervisor.stack import Stack
from his.infra import nats as nats_infra
from his.infra import postgres as pg_infra
from his.infra.procs import RotatingLog, ServerStartError
from his.kernel import bus, migrations, safety
from his.kernel.pki import WorkloadIdentity


def server_log(s: OperatorSettings, name: str) -> RotatingLog:
    """PostgreSQL's or NATS's output, in ``<data dir>/logs/<name>.log``, rotated as the services' are."""
    return RotatingLog(s.data_path / "logs" / f"{name}.log", max_bytes=int(s.log_max_mb * 2**20), keep=s.log_files)


async def start_postgres(stack: Stack) -> None:
    s, data = stack.settings, stack.settings.data_path
    if s.database_url:
        stack.admin_dsn = s.database_url
        where = urlsplit(s.database_url).hostname or "unix socket"
        try:
            await migrations.ensure_database(s.database_url)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise ServerStartError(f"cannot reach PostgreSQL at {where} (HIS_DATABASE_URL): {exc}") from None
        return
    proc, loc = await asyncio.to_thread(
        pg_infra.start, data / "pg", echo=server_log(s, "postgres"), notice=lambda m: console.print(f"note: {m}")
    )
    stack.infra.append(proc)
    stack.admin_dsn = loc.url()
    await migrations.ensure_database(stack.admin_dsn)


def exit_reason(code: int | None) -> str:
    """How a process ended, in an operator's words."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed ({name})"
    return f"exited with code {code}"


async def restart_postgres(stack: Stack, stop: asyncio.Event) -> None:
    """Start the embedded PostgreSQL again if it died, on the same data, socket and port.

    Its crash recovery replays the write-ahead log, so every transaction that answered COMMIT is
    kept. Services need nothing: their requests answer 503 meanwhile and their pools, relays and
    consumers reconnect on their own. The server's old backends may hold its shared memory for a
    moment after the postmaster died; until they are gone it refuses to start, so this retries.
    """
    dead = [n for n, p in enumerate(stack.infra) if p.name == "postgres" and p.poll() is not None]
    if not dead:
        return
    n, proc = dead[0], stack.infra[dead[0]]
    s = stack.settings
    console.print(
        f"[red]PostgreSQL (pid {proc.pid}) {exit_reason(proc.returncode)}; restarting it. Requests answer 503 "
        "until it is back; services reconnect on their own[/]"
    )
    t0, delay = time.monotonic(), 0.2
    while not stop.is_set():
        try:
            new, _ = await asyncio.to_thread(pg_infra.start, s.data_path / "pg", echo=server_log(s, "postgres"))
        except ServerStartError as exc:
            console.print(f"[yellow]PostgreSQL did not start again yet ({exc}); retrying in {delay:.1f}s[/]")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(5.0, delay * 2)
            continue
        stack.infra[n] = new
        save_state(stack)
        console.print(
            f"[green]PostgreSQL is back (pid {new.pid}) after {time.monotonic() - t0:.1f}s; it recovered every "
            "committed transaction from its write-ahead log[/]"
        )
        return


async def start_nats(stack: Stack, consumers: dict[str, dict[str, str]]) -> None:
    s, data = stack.settings, stack.settings.data_path
    if s.nats_url:
        stack.nats_url = s.nats_url
        stack.nats_monitor = os.environ.get("HIS_NATS_MONITOR_URL")
        await probe_nats(s.nats_url, stack.operator)
        return
    port = int(os.environ.get("HIS_NATS_PORT", "0")) or None
    tls = nats_infra.NatsTls(stack.identities["nats"], bus.users(consumers))
    # JetStream's files are encrypted with a key kept in the secrets directory, not beside them.
    store_key = secret(data, "nats-store-key", make=lambda: secrets.token_hex(32))
    proc, loc = await asyncio.to_thread(
        nats_infra.start,
        data / "nats",
        host=s.host,
        port=port,
        echo=server_log(s, "nats"),
        tls=tls,
        store_key=store_key,
    )
    stack.infra.append(proc)
    stack.nats_url, stack.nats_monitor = loc.url, loc.monitor_url


async def probe_nats(url: str, identity: WorkloadIdentity, timeout: float = 5.0) -> None:
    async def quiet(_: Exception) -> None:
        return None

    try:
        nc = await asyncio.wait_for(
            bus.connect(
                url,
                name="his-up",
                identity=identity,
                connect_timeout=2,
                max_reconnect_attempts=0,
                allow_reconnect=False,
                error_cb=quiet,
            ),
            timeout,
        )
        await nc.close()
    except Exception as exc:  # noqa: BLE001 - nats-py raises many types for "unreachable"
        reason = str(exc) or f"no answer within {timeout:.0f}s"
        raise ServerStartError(f"cannot reach NATS at {url} (HIS_NATS_URL): {reason}") from None


async def check_durability(stack: Stack) -> None:
    """Refuse to start on settings that can lose acknowledged writes: read what a real unit of
    work commits with (each service checks its own again at its start), and NATS's sync policy."""
    from his.kernel.db import Database

    db = Database(stack.admin_dsn, schema="public", min_size=1, max_size=1)
    await db.open()
    try:
        problems = await safety.commit_problems(db)
    finally:
        await db.close()
    problems += await asyncio.to_thread(safety.nats_problems, stack.nats_monitor, stack.operator.ca)
    for p in safety.enforce(problems, allow_unsafe=stack.settings.allow_unsafe_durability):
        console.print(f"[yellow]warning:[/] {p}")
