"""``his up``: start PostgreSQL and NATS (unless external), provision, migrate, run every service.

Children run in their own sessions so that Ctrl-C reaches only the supervisor, which then
stops them in order: gateway and services first, then NATS, then PostgreSQL.

The services and the gateway are forked by a fork server that has imported their modules once
(``his.infra.forkserver``, docs/adr/0013-fork-server.md); without it (it could not start,
or it died) each is started as its own interpreter, ``python -m his.<name>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar
from urllib.parse import urlsplit

import asyncpg
import httpx
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from rich.console import Console

from his.cli import state
from his.cli.services import GATEWAY, SERVICES, durables
from his.infra import nats as nats_infra
from his.infra import postgres as pg_infra
from his.infra.forkserver import ForkedProcess, ForkServer, ForkServerError
from his.infra.procs import ManagedProcess, RotatingLog, ServerStartError
from his.kernel import bus, migrations, safety, streams
from his.kernel.config import Settings
from his.kernel.crypto import new_key_text
from his.kernel.observability import render_json_line
from his.kernel.pki import LocalCA, WorkloadIdentity, spiffe_id
from his.patients.settings import PatientsSettings

console = Console(stderr=True, highlight=False, soft_wrap=True)
COLOURS = (
    "cyan",
    "magenta",
    "green",
    "yellow",
    "blue",
    "bright_cyan",
    "bright_magenta",
    "bright_green",
    "bright_yellow",
    "bright_blue",
    "white",
)


@dataclass
class Child:
    name: str
    #: What it runs as ``__main__`` (``python -m <module>``).
    module: str
    env: dict[str, str]
    url: str
    proc: ManagedProcess | ForkedProcess | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0
    output: ChildOutput | None = None

    @property
    def args(self) -> list[str]:
        return [sys.executable, "-m", self.module]


@dataclass
class Stack:
    settings: Settings
    admin_dsn: str = ""
    nats_url: str = ""
    nats_monitor: str | None = None
    infra: list[ManagedProcess] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)
    lock: IO[str] | None = None
    #: Workload identities issued by the local CA, by name ("operator", "nats", each service).
    identities: dict[str, WorkloadIdentity] = field(default_factory=dict)
    #: Forks the children; None (or ``forks_off``) starts each as its own interpreter instead.
    forks: ForkServer | None = None
    forks_off: bool = False

    @property
    def operator(self) -> WorkloadIdentity:
        return self.identities["operator"]


def echo(name: str, line: str) -> None:
    colour = COLOURS[sum(map(ord, name)) % len(COLOURS)]
    console.print(f"[{colour}]{name:>13}[/] | {line}", markup=True, highlight=False, soft_wrap=True, emoji=False)


class ChildOutput(RotatingLog):
    """Where a service's output goes: its lines as they are (JSON log lines) appended to
    ``<data dir>/logs/<name>.log`` (rotated, see ``RotatingLog``), and compactly rendered to the
    console."""

    def __call__(self, name: str, line: str) -> None:
        self.write(line)
        echo(name, render_json_line(line))


def fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)


def acquire_lock(data: Path) -> IO[str]:
    run = data / "run"
    run.mkdir(parents=True, exist_ok=True)
    fh = open(run / "up.lock", "w")  # noqa: SIM115 - held for the life of the supervisor
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ServerStartError(f"another `his up` is already running on data directory {data}") from None
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def reap_leftovers(data: Path) -> None:
    """Stop servers left by a supervisor that was killed (its lock is free, its pids may live)."""
    old = state.read(data) or {}
    for pid in old.get("infra_pids", []):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(data) in cmdline:
            console.print(f"stopping a server left over from an earlier run (pid {pid})")
            os.kill(pid, signal.SIGINT if "postgres" in cmdline else signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)


def secret(data: Path, name: str, make: Callable[[], str] = lambda: secrets.token_urlsafe(24)) -> str:
    p = data / "secrets" / name
    if p.exists():
        return p.read_text().strip()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.parent.chmod(0o700)
    value = make()
    p.write_text(value)
    p.chmod(0o600)
    return value


def pki_dir(data: Path) -> Path:
    return data / "pki"


def issue_identities(stack: Stack) -> None:
    """Create the local CA on first start and issue fresh workload certificates at every start."""
    ca = LocalCA(pki_dir(stack.settings.data_path)).ensure()
    ids = stack.identities
    ids["operator"] = ca.issue("operator", bus.OPERATOR)
    ids["nats"] = ca.issue("nats", spiffe_id("nats", kind="infra"))
    for name in (*SERVICES, GATEWAY):
        ids[name] = ca.issue(name, spiffe_id(name), dns=("localhost", name))


def server_log(s: Settings, name: str) -> RotatingLog:
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


async def start_nats(stack: Stack, consumers: dict[str, tuple[str, ...]]) -> None:
    s, data = stack.settings, stack.settings.data_path
    if s.nats_url:
        stack.nats_url = s.nats_url
        stack.nats_monitor = os.environ.get("HIS_NATS_MONITOR_URL")
        await probe_nats(s.nats_url, stack.operator)
        return
    port = int(os.environ.get("HIS_NATS_PORT", "0")) or None
    tls = nats_infra.NatsTls(stack.identities["nats"], bus.users(consumers))
    proc, loc = await asyncio.to_thread(
        nats_infra.start, data / "nats", host=s.host, port=port, echo=server_log(s, "nats"), tls=tls
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
        if child.name in SERVICES:
            await migrations.provision(stack.admin_dsn, child.name, secret(data, f"db-{child.name}"))
            await migrations.upgrade(stack.admin_dsn, child.name)
        launch(stack, child)
    save_state(stack)


def check_gateway_port(settings: Settings) -> None:
    if not nats_infra.port_free(settings.host, settings.gateway_port):
        raise ServerStartError(
            f"gateway port {settings.host}:{settings.gateway_port} is already in use (set HIS_GATEWAY_PORT)"
        )


def plan_children(stack: Stack) -> None:
    s = stack.settings
    check_gateway_port(s)
    nats_infra.taken(s.gateway_port)  # free now, but the gateway binds it after the services' picks
    base = {k: v for k, v in os.environ.items() if not k.startswith("HIS_")}
    base.update(
        {
            "HIS_DATA_DIR": str(s.data_path),
            "HIS_LOG_LEVEL": s.log_level,
            "HIS_HOST": s.host,
            "PYTHONUNBUFFERED": "1",
            "HIS_ALLOW_UNSAFE_DURABILITY": "1" if s.allow_unsafe_durability else "0",
            "HIS_TIMEZONE": hospital_timezone(s),
            "HIS_DB_TIMEOUT": str(s.db_timeout),
            "HIS_INBOX_RETENTION_DAYS": str(s.inbox_retention_days),
        }
    )
    if s.fault_points:  # test-only (his.kernel.faults); each service arms its own points
        base["HIS_FAULT_POINTS"] = s.fault_points
    if s.otlp_endpoint:  # OTEL_* variables pass through as they are
        base["HIS_OTLP_ENDPOINT"] = s.otlp_endpoint
    # Internal listeners speak mutual TLS only: the scheme says so, the certificates enforce it.
    upstreams = {svc: f"https://{s.host}:{nats_infra.free_port(s.host)}" for svc in SERVICES}
    grpc_ports = {svc: nats_infra.free_port(s.host) for svc in SERVICES}
    base["HIS_IDENTITY_URL"] = upstreams["identity"]
    base.update({f"HIS_{svc.upper()}_GRPC": f"{s.host}:{port}" for svc, port in grpc_ports.items()})
    for svc in SERVICES:  # the gateway goes last: it only watches the others
        url = upstreams[svc]
        port = int(url.rsplit(":", 1)[1])
        env = dict(
            base,
            **stack.identities[svc].env(),
            HIS_SERVICE=svc,
            HIS_SERVICE_DATABASE_URL=migrations.with_credentials(
                stack.admin_dsn, migrations.runtime_role(svc), secret(s.data_path, f"db-{svc}")
            ),
            HIS_SERVICE_NATS_URL=stack.nats_url,
            HIS_HTTP_PORT=str(port),
            HIS_GRPC_PORT=str(grpc_ports[svc]),
        )
        if svc == "identity":
            env["HIS_IDENTITY_KEY_PASSPHRASE"] = secret(s.data_path, "identity-key-passphrase")
        env.update(service_settings_env(svc))
        if svc == "patients" and "HIS_RECORDS_KEYS" not in env:  # generated once, kept under the data dir
            env["HIS_RECORDS_KEYS"] = secret(s.data_path, "records-key", make=new_key_text)
        if svc == "billing":  # the embedded TEST payment provider signs its confirmations with this
            env.setdefault("HIS_PAYMENT_WEBHOOK_SECRET", secret(s.data_path, "payment-webhook-secret"))
            env.setdefault("HIS_PAYMENT_WEBHOOK_URL", f"http://{s.host}:{s.gateway_port}/api/payments/webhooks/test")
        stack.children.append(Child(svc, f"his.{svc}", env, url))
    # The gateway's health, readiness and metrics are on its own mutual-TLS listener, not on the
    # public port: that is the address `his status` and the health checks use.
    ops_port = nats_infra.free_port(s.host)
    env = dict(
        base,
        **stack.identities[GATEWAY].env(),
        HIS_SERVICE=GATEWAY,
        HIS_HTTP_PORT=str(s.gateway_port),
        HIS_OPS_PORT=str(ops_port),
        HIS_UPSTREAMS=json.dumps(upstreams),
        HIS_GATEWAY_RATE_PER_IP=str(s.gateway_rate_per_ip),
        HIS_GATEWAY_RATE_PER_SUBJECT=str(s.gateway_rate_per_subject),
        HIS_GATEWAY_BURST=str(s.gateway_burst),
        HIS_GATEWAY_HEADER_TIMEOUT=str(s.gateway_header_timeout),
        HIS_GATEWAY_BODY_TIMEOUT=str(s.gateway_body_timeout),
        HIS_GATEWAY_MAX_CONNECTIONS=str(s.gateway_max_connections),
        HIS_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS=str(s.gateway_max_connections_per_address),
    )
    stack.children.append(Child(GATEWAY, "his.gateway", env, f"https://{s.host}:{ops_port}"))


def patients_settings() -> PatientsSettings:
    return service_settings(PatientsSettings, "patients")


S = TypeVar("S", bound=BaseSettings)


def service_settings(cls: type[S], service: str) -> S:
    """A service's own settings, read and checked here: one clear error at start, not a crash loop."""
    try:
        return cls()
    except ValidationError as exc:
        names = ", ".join(f"HIS_{str(e['loc'][0]).upper()}" for e in exc.errors())
        raise ServerStartError(f"invalid {service} settings: {names} (see README, Settings)") from None


def hospital_timezone(settings: Settings) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ServerStartError(
            f"HIS_TIMEZONE={settings.timezone!r} is not a time zone (e.g. Europe/Istanbul)"
        ) from None
    return settings.timezone


def service_settings_env(service: str) -> dict[str, str]:
    """The checked settings of a service, handed to its process (nothing else of the supervisor's
    environment is)."""
    from his.identity.settings import IdentitySettings
    from his.notifications.settings import NotificationsSettings

    classes: dict[str, type[BaseSettings]] = {
        "identity": IdentitySettings,
        "patients": PatientsSettings,
        "notifications": NotificationsSettings,
    }
    if service not in classes:
        return {}
    values = service_settings(classes[service], service).model_dump()
    return {f"HIS_{k.upper()}": str(v) for k, v in values.items() if v is not None}


def launch(stack: Stack, child: Child) -> None:
    if child.output is not None:
        child.output.close()
    s = stack.settings
    child.output = ChildOutput(
        Path(child.env["HIS_DATA_DIR"]) / "logs" / f"{child.name}.log",
        max_bytes=int(s.log_max_mb * 2**20),
        keep=s.log_files,
    )
    child.proc = None
    if stack.forks is not None and not stack.forks_off:
        try:
            child.proc = stack.forks.spawn(child.name, child.module, env=child.env, echo=child.output)
        except ForkServerError as exc:
            console.print(f"[yellow]warning:[/] {exc}; starting each service as its own interpreter")
            stack.forks_off = True
    if child.proc is None:
        child.proc = ManagedProcess.spawn(child.name, child.args, env=child.env, echo=child.output)
    child.started_at = time.monotonic()


def save_state(stack: Stack) -> None:
    state.write(
        stack.settings.data_path,
        {
            "supervisor_pid": os.getpid(),
            "gateway_url": f"http://{stack.settings.host}:{stack.settings.gateway_port}",
            "admin_dsn": stack.admin_dsn,
            "nats_url": stack.nats_url,
            "nats_monitor_url": stack.nats_monitor,
            "pki_dir": str(pki_dir(stack.settings.data_path)),
            "infra_pids": [p.pid for p in stack.infra],
            "forkserver_pid": stack.forks.pid if stack.forks is not None and stack.forks.popen.poll() is None else None,
            "services": {
                c.name: {
                    "url": c.url,
                    "pid": c.proc.pid if c.proc else None,
                    "grpc_port": int(c.env["HIS_GRPC_PORT"]) if "HIS_GRPC_PORT" in c.env else None,
                }
                for c in stack.children
            },
        },
    )


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


async def ensure_admin(stack: Stack) -> None:
    """On first start, create the administrator (from HIS_ADMIN_* or with a generated password)."""
    from his.access import Role
    from his.identity.domain import ADMIN_FULL_NAME, WeakPasswordError
    from his.identity.handlers import Identity, KeyRing
    from his.kernel.db import Database

    identity = next(c for c in stack.children if c.name == "identity")
    db = Database(identity.env["HIS_SERVICE_DATABASE_URL"], schema="identity", min_size=1, max_size=2)
    await db.open()
    try:
        if await db.pool.fetchval("SELECT 1 FROM app_user WHERE 'ADMIN' = ANY(roles) LIMIT 1"):
            return
        s = stack.settings
        password = s.admin_password or secrets.token_urlsafe(18)
        keys = KeyRing(db, identity.env["HIS_IDENTITY_KEY_PASSPHRASE"].encode())
        try:
            await Identity(db, keys).register(
                email=s.admin_email, password=password, full_name=ADMIN_FULL_NAME, roles=[Role.ADMIN]
            )
        except (WeakPasswordError, ValueError) as exc:
            raise ServerStartError(
                f"cannot create the administrator from HIS_ADMIN_EMAIL/HIS_ADMIN_PASSWORD: {exc}"
            ) from None
        shown = password if not s.admin_password else "(the one in HIS_ADMIN_PASSWORD)"
        console.print(
            f"[bold]administrator created:[/] {s.admin_email}  password: [bold]{shown}[/]"
            + ("   — shown once, store it now" if not s.admin_password else "")
        )
    finally:
        await db.close()


async def supervise(stack: Stack, stop: asyncio.Event) -> None:
    from his.cli.audit import write_checkpoint

    next_checkpoint = 0.0
    while not stop.is_set():
        await restart_postgres(stack, stop)
        now = time.monotonic()
        if now >= next_checkpoint:
            next_checkpoint = now + 30.0
            try:
                await write_checkpoint(stack.admin_dsn, stack.settings.data_path)
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


async def run_up(settings: Settings, forks: ForkServer | None = None) -> int:
    data = settings.data_path
    data.mkdir(parents=True, exist_ok=True)
    stack = Stack(settings, forks=forks)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    t0 = time.monotonic()
    try:
        stack.lock = acquire_lock(data)
        reap_leftovers(data)
        check_gateway_port(settings)
        issue_identities(stack)
        consumers = asyncio.ensure_future(asyncio.to_thread(durables))  # imports the services: meanwhile
        await start_postgres(stack)
        await start_nats(stack, await consumers)
        await check_durability(stack)
        plan_children(stack)
        await bootstrap_and_launch(stack)
        if not await wait_healthy(stack):
            raise ServerStartError("services did not become ready; see their log lines above")
        await ensure_admin(stack)
        console.print(
            f"[bold green]his is up[/] in {time.monotonic() - t0:.1f}s — console: "
            f"http://{settings.host}:{settings.gateway_port}/   (Ctrl-C stops everything)"
        )
        await supervise(stack, stop)
        return 0
    except (ServerStartError, safety.UnsafeDurabilityError) as exc:
        fail(str(exc))
        return 1
    finally:
        shutdown(stack)


def up(settings: Settings, forks: ForkServer | None = None) -> int:
    """``his up``; ``forks`` forks the children (``services.start_forkserver``), or None: each is
    started as its own interpreter."""
    return asyncio.run(run_up(settings, forks))
