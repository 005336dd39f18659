"""What ``his up`` keeps under the data directory: its lock (one supervisor per data directory),
the run-state file that ``his status`` and ``his dlq`` read, the secrets it generates once, and
the local CA's workload certificates."""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from his.cli import state
from his.cli.services import CONSOLE, GATEWAY, SERVICES
from his.cli.supervisor.console import console
from his.cli.supervisor.stack import Stack
from his.infra.procs import ServerStartError, private_opener, write_private
from his.kernel import bus
from his.kernel.pki import LocalCA, spiffe_id

#: What ``his up`` keeps under the data directory for its owner alone (0700; their files 0600):
#: the lock and run state, the servers' and services' logs, the generated secrets, the CA and the
#: workload keys, NATS's configuration and store, the audit chain's checkpoints, the messages the
#: notifications service delivers locally (they name patients). PostgreSQL keeps its own
#: directory (``pg``) private itself.
PRIVATE = ("run", "logs", "secrets", "pki", "nats", "audit", "mail")


def make_private(data: Path) -> None:
    """Create the private directories, and take back what an earlier version left open: every
    file in them is its owner's alone, but the certificates (public by nature, in a directory
    no one else may enter)."""
    for name in PRIVATE:
        d = data / name
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
        for f in d.iterdir():
            if f.is_file() and not f.is_symlink() and f.suffix != ".crt":
                f.chmod(0o600)
    checkpoints = data / "audit" / "checkpoints.jsonl"  # appended to by his.cli.audit
    os.close(os.open(checkpoints, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))


def acquire_lock(data: Path) -> IO[str]:
    run = data / "run"
    run.mkdir(parents=True, exist_ok=True)
    fh = open(run / "up.lock", "w", opener=private_opener)  # noqa: SIM115 - held for the life of the supervisor
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ServerStartError(f"another `his up` is already running on data directory {data}") from None
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def reap_leftovers(data: Path) -> None:
    """Stop servers left by a supervisor that was killed (its lock is free, its pids may live)."""
    old = state.read(data)
    for pid in old.infra_pids if old is not None else ():
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
    write_private(p, value)
    return value


def pki_dir(data: Path) -> Path:
    return data / "pki"


def issue_identities(stack: Stack) -> None:
    """Create the local CA on first start and issue fresh workload certificates at every start."""
    ca = LocalCA(pki_dir(stack.settings.data_path)).ensure()
    ids = stack.identities
    ids["operator"] = ca.issue("operator", bus.OPERATOR)
    ids["nats"] = ca.issue("nats", spiffe_id("nats", kind="infra"))
    for name in (*SERVICES, CONSOLE, GATEWAY):
        ids[name] = ca.issue(name, spiffe_id(name), dns=("localhost", name))


def save_state(stack: Stack) -> None:
    state.write(
        stack.settings.data_path,
        state.RunState(
            supervisor_pid=os.getpid(),
            gateway_url=f"http://{stack.settings.host}:{stack.settings.gateway_port}",
            admin_dsn=stack.admin_dsn,
            nats_url=stack.nats_url,
            nats_monitor_url=stack.nats_monitor,
            pki_dir=str(pki_dir(stack.settings.data_path)),
            infra_pids=tuple(p.pid for p in stack.infra),
            forkserver_pid=stack.forks.pid if stack.forks is not None and stack.forks.popen.poll() is None else None,
            services={
                c.name: state.ServiceProcess(
                    url=c.url,
                    pid=c.proc.pid if c.proc else None,
                    grpc_port=int(c.env["HIS_GRPC_PORT"]) if "HIS_GRPC_PORT" in c.env else None,
                )
                for c in stack.children
            },
        ),
    )
