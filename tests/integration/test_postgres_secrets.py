"""The embedded PostgreSQL's superuser password never sits in a file other local users can read."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from his.infra import postgres as pg_infra


def test_initdb_password_file_is_private(open_tmp: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """initdb reads the password from a file: only its own user may read that file meanwhile."""
    real_run = subprocess.run
    seen: list[tuple[int, str]] = []

    def run(args: list[str], *a: Any, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        if args and str(args[0]).endswith("initdb"):
            pwfile = Path(args[args.index("--pwfile") + 1])
            seen.append((stat.S_IMODE(pwfile.stat().st_mode), pwfile.read_text()))
        return real_run(args, *a, **kw)

    monkeypatch.setattr(subprocess, "run", run)
    password = pg_infra.init_cluster(open_tmp("pgsecret") / "data")
    assert [text for _, text in seen] == [password]
    mode = seen[0][0]
    assert mode & 0o077 == 0, f"initdb's password file had mode {mode:o}: other users could read the password"
