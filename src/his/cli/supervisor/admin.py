"""The hospital's first administrator, created by identity once the services are ready.

The supervisor runs identity's program (``python -m his.identity.admin``, forked like the
services) with identity's environment plus ``HIS_ADMIN_EMAIL`` and ``HIS_ADMIN_PASSWORD`` (the
operator's, or one generated here), and reads its answer: it created the administrator, or the
hospital has one. A generated password is written to ``secrets/admin-password`` under the data
directory (0600, the operator's), never to the terminal or a log, and must be changed at the first
sign-in.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from his.cli.admin import PROGRAM, REFUSED, admin_env, read_answer
from his.cli.supervisor.children import run_once
from his.cli.supervisor.console import console
from his.cli.supervisor.servers import exit_reason
from his.cli.supervisor.stack import Stack
from his.infra.procs import ServerStartError, write_private


async def ensure_admin(stack: Stack) -> None:
    """On first start, create the administrator (from HIS_ADMIN_* or with a generated password,
    written to a file only the operator reads and to be changed at the first sign-in)."""
    s = stack.settings
    identity = next(c for c in stack.children if c.name == "identity")
    password = s.admin_password or secrets.token_urlsafe(18)
    env = identity.env | admin_env(s, password, generated=not s.admin_password)
    code, lines = await run_once(stack, "identity-admin", PROGRAM, env, user=identity.user)
    said = read_answer(lines)
    if code == REFUSED and said.refused is not None:
        raise ServerStartError(
            f"cannot create the administrator from HIS_ADMIN_EMAIL/HIS_ADMIN_PASSWORD: {said.refused}"
        )
    if code != 0 or said.created is None:
        tail = " / ".join(line.strip() for line in lines[-8:] if line.strip())
        raise ServerStartError(f"identity could not create the administrator: it {exit_reason(code)}: {tail}")
    if not said.created:
        return
    if s.admin_password:
        console.print(f"[bold]administrator created:[/] {s.admin_email}  password: the one in HIS_ADMIN_PASSWORD")
        return
    kept = bootstrap_password_file(s.data_path)
    write_private(kept, password + "\n")
    console.print(
        f"[bold]administrator created:[/] {s.admin_email}  password: in [bold]{kept}[/] (readable by you alone;"
        " it must be changed at the first sign-in, then delete the file)"
    )


def bootstrap_password_file(data: Path) -> Path:
    """Where a generated administrator password is written (never to the terminal or a log)."""
    return data / "secrets" / "admin-password"
