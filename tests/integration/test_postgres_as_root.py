"""Run as root, the embedded PostgreSQL runs as its own system user, and a checkout or data
directory under a private (0700) directory is out of that user's reach. His lets that user, and
nobody else, through such a directory with an ACL entry; where the filesystem has no ACLs (a
ramfs here) ``his up`` stops at once with one line naming the directory, never an initdb
traceback. These run only as root (as CI does)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from his.infra import acl
from his.infra import postgres as pg_infra
from his.infra.nats import free_port
from his.infra.procs import ServerStartError

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="PostgreSQL runs as a system user, and private directories matter, only under root"
)


@pytest.fixture
def private() -> Iterator[Path]:
    """A private directory (0700), as a home or a CI workspace is."""
    path = Path(tempfile.mkdtemp(prefix="his-private-"))
    path.chmod(0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def no_acls() -> Iterator[Path]:
    """A private directory on a filesystem without ACLs (a ramfs mounted for the test)."""
    path = Path(tempfile.mkdtemp(prefix="his-noacl-"))
    mount = ["mount", "-t", "ramfs", "-o", "mode=0700", "none", str(path)]
    mounted = subprocess.run(mount, capture_output=True, check=False)
    if mounted.returncode:
        path.rmdir()
        pytest.skip(f"cannot mount a ramfs here: {mounted.stderr.decode().strip()}")
    yield path
    subprocess.run(["umount", str(path)], check=True)
    path.rmdir()


def server_user() -> int:
    return pwd.getpwnam(pg_infra.SYSTEM_USER).pw_uid


def may_list(path: Path) -> bool:
    """Whether the server's user can list ``path`` (search alone does not allow it)."""
    uid = server_user()
    probe = subprocess.run(
        ["ls", str(path)],
        user=uid,
        group=pwd.getpwuid(uid).pw_gid,
        extra_groups=[],
        capture_output=True,
        cwd="/",
        check=False,
    )
    return probe.returncode == 0


async def select_one(loc: pg_infra.PostgresLocation) -> int:
    conn = await asyncpg.connect(loc.url(database="postgres"))
    try:
        return int(await conn.fetchval("SELECT 1"))
    finally:
        await conn.close()


def test_programs_and_data_under_a_private_directory_are_reached_through_an_acl_for_the_server_alone(
    private: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The virtual environment (its PostgreSQL programs) and the data both under a 0700
    directory, as in a fresh clone in a private workspace: the server starts, the directory
    gains one ACL entry (search, for the server's user), others gain nothing, nothing is listable."""
    checkout = private / "his"
    checkout.mkdir()
    (checkout / "pginstall").symlink_to(pg_infra.bin_dir().parent)
    monkeypatch.setattr(pg_infra, "bin_dir", lambda: checkout / "pginstall" / "bin")
    notes: list[str] = []
    proc, loc = pg_infra.start(checkout / ".his" / "pg", port=free_port(), notice=notes.append)
    try:
        assert asyncio.run(select_one(loc)) == 1
    finally:
        pg_infra.stop(proc, loc)
    assert len(notes) == 1 and str(private) in notes[0] and "nobody else" in notes[0], notes
    assert acl.Entry(acl.USER, server_user(), acl.SEARCH) in acl.current(private)
    assert stat.S_IMODE(private.stat().st_mode) & 0o007 == 0  # others: still nothing
    assert not may_list(private)
    # A restart finds the way open and changes nothing.
    again: list[str] = []
    proc, loc = pg_infra.start(checkout / ".his" / "pg", port=free_port(), notice=again.append)
    pg_infra.stop(proc, loc)
    assert again == []


def test_where_the_filesystem_has_no_acls_the_start_stops_at_once_in_one_line(no_acls: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ServerStartError) as refused:
        pg_infra.start(no_acls / "data" / "pg", port=free_port())
    message = str(refused.value)
    assert time.monotonic() - started < 5
    assert "\n" not in message
    assert f"cannot reach {no_acls}: it is private, and its filesystem has no ACLs" in message
    assert "Run his as an ordinary user" in message and f"chmod o+x {no_acls}" in message
    assert not (no_acls / "data" / "pg" / "PG_VERSION").exists()  # initdb never ran


def test_his_up_refuses_such_a_data_directory_with_one_line_and_no_traceback(no_acls: Path) -> None:
    his = Path(sys.executable).parent / "his"
    env = {
        **os.environ,
        "HIS_DATA_DIR": str(no_acls / "data"),
        "HIS_GATEWAY_PORT": str(free_port()),
        "HIS_ADMIN_PASSWORD": "a-Long-enough-Passphrase-for-2027",
        "COLUMNS": "400",
    }
    started = time.monotonic()
    done = subprocess.run(
        [str(his), "up"], env=env, capture_output=True, text=True, timeout=120, cwd=no_acls, check=False
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - started < 30
    out = done.stdout + done.stderr
    assert "Traceback" not in out and "initdb" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"cannot reach {no_acls}: " in errors[0], out
