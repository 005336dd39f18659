"""The services and the gateway under ``his up``: migrated and launched (forked by the fork
server, or each as its own interpreter), waited for until ready, started again when one exits,
and stopped in order: gateway and services first, then NATS, then PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx

from his.cli import state
from his.cli.services import CONSOLE, SERVICES
from his.cli.supervisor.console import ChildOutput, console, fail
from his.cli.supervisor.datadir import save_state, secret
from his.cli.supervisor.servers import restart_postgres
from his.cli.supervisor.stack import Child, Stack
from his.infra import postgres as pg_infra
from his.infra.forkserver import ForkedProcess, ForkServerError
from his.infra.procs import ManagedProcess
from his.infra.users import Account
from his.kernel import bus, migrations, streams


async def bootstrap_and_launch(stack: Stack) -> None:
    """Declare the streams, then migrate each service and start it at once (start-up overlaps
    the remaining migrations). Migrations run one at a time: Alembic's context is global."""
    nc = await bus.connect(stack.nats_url, name="his-up", identity=stack.operator, connect_timeout=5)
    try:
        await streams.declare(nc.jetstream(), SERVICES, replicas=stack.settings.stream_replicas)
    finally:
        await nc.close()
    data = stack.settings.data_path
    for child in stack.children:
        if child.name in SERVICES or child.name == CONSOLE:
            await migrations.provision(stack.admin_dsn, child.name, secret(data, f"db-{child.name}"))
            await migrations.upgrade(stack.admin_dsn, child.name)
        launch(stack, child)
    save_state(stack)


def launch(stack: Stack, child: Child) -> None:
    if child.output is not None:
        child.output.close()
    s = stack.settings
    child.output = ChildOutput(
        Path(child.env["HIS_DATA_DIR"]) / "logs" / f"{child.name}.log",
        max_bytes=int(s.log_max_mb * 2**20),
        keep=s.log_files,
    )
    child.proc = spawn(stack, child.name, child.module, child.env, child.output, user=child.user)
    child.started_at = time.monotonic()


def spawn(
    stack: Stack,
    name: str,
    module: str,
    env: dict[str, str],
    echo: Callable[[str, str], None],
    *,
    user: Account | None = None,
) -> ManagedProcess | ForkedProcess:
    """Start ``python -m <module>`` with exactly ``env`` (as ``user`` when given): forked by the
    fork server, or, without one (it could not start, or it died), as its own interpreter."""
    ids = (user.uid, user.gid) if user is not None else None
    if stack.forks is not None and not stack.forks_off:
        try:
            return stack.forks.spawn(name, module, env=env, echo=echo, user=ids)
        except ForkServerError as exc:
            console.print(f"[yellow]warning:[/] {exc}; starting each service as its own interpreter")
            stack.forks_off = True
    return ManagedProcess.spawn(name, [sys.executable, "-m", module], env=env, echo=echo, user=ids)


async def run_once(
    stack: Stack, name: str, module: str, env: dict[str, str], timeout: float = 60.0, *, user: Account | None = None
) -> tuple[int | None, list[str]]:
    """Run ``python -m <module>`` to its end (stopped after ``timeout``, as ``user`` when given):
    its exit code and its output lines, which are kept here, neither printed nor logged."""
    lines: list[str] = []
    proc = spawn(stack, name, module, env, lambda _, line: lines.append(line), user=user)

    def finish() -> int | None:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return proc.stop(signal.SIGTERM, timeout=5.0)  # once it exited: waits for its last lines

    return await asyncio.to_thread(finish), lines


async def wait_healthy(stack: Stack, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1.0, verify=stack.operator.client_context()) as client:
        pending = {c.name: c for c in stack.children}
        while pending and time.monotonic() < deadline:
            for name, child in list(pending.items()):
                try:
                    if (await client.get(f"{child.url}/readyz")).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            if pending:
                await asyncio.sleep(0.1)
        if pending:
            fail(f"not ready after {timeout:.0f}s: {', '.join(sorted(pending))}")
        return not pending


async def supervise(stack: Stack, stop: asyncio.Event) -> None:
    from his.cli.audit import CHECKPOINT_EVERY, write_checkpoint

    next_checkpoint = 0.0
    while not stop.is_set():
        await restart_postgres(stack, stop)
        now = time.monotonic()
        if now >= next_checkpoint:
            next_checkpoint = now + CHECKPOINT_EVERY  # the witness trails the chain by about a second
            try:
                await write_checkpoint(stack.admin_dsn, stack.settings.data_path, keep=True)
            except (OSError, asyncpg.PostgresError) as exc:
                console.print(f"[yellow]warning:[/] audit checkpoint failed: {exc}")
        for child in stack.children:
            proc = child.proc
            if proc is not None and proc.poll() is not None:
                uptime = now - child.started_at
                child.restarts = 0 if uptime > 60 else child.restarts + 1
                delay = min(30.0, 0.5 * 2**child.restarts)
                console.print(f"[red]{child.name} exited with code {proc.returncode}; restarting in {delay:.1f}s[/]")
                child.proc, child.next_start = None, now + delay
            if child.proc is None and now >= child.next_start:
                launch(stack, child)
                save_state(stack)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


def shutdown(stack: Stack) -> None:
    if not stack.infra and not stack.children:
        if stack.forks is not None:
            stack.forks.close()
        return
    console.print("stopping…")
    running = [c.proc for c in stack.children if c.proc is not None]
    for p in running:
        p.signal(signal.SIGTERM)
    for p in running:
        p.stop(signal.SIGTERM, timeout=10)
    if stack.forks is not None:
        stack.forks.close()
    for p in reversed(stack.infra):
        if p.name == "postgres":
            pg_infra.stop(p)
        else:
            p.stop()
    state.remove(stack.settings.data_path)
    console.print("stopped")
