"""The administrator is identity's business: `his up` asks identity's own program,
``python -m his.identity.admin``, and reads its one-line JSON answer. Before anything starts it
asks whether the administrator of ``HIS_ADMIN_EMAIL`` / ``HIS_ADMIN_PASSWORD`` could be created
(``check``, no database); once the services are ready the supervisor has it created
(``his.cli.supervisor.admin``). Nothing here imports identity or reads its tables."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import TypeAdapter

from his.cli.settings import OperatorSettings

#: Identity's program that checks and creates the administrator (run as ``python -m``).
PROGRAM = "his.identity.admin"
#: Its exit status when it refuses the address or the password (its answer says why).
REFUSED = 2


class AdminProgramError(RuntimeError):
    """Identity's program gave no answer (it failed, or did not finish); the message is for the operator."""


@dataclass(frozen=True)
class Answer:
    """What identity's program said: ``{"created": true}``, ``{"created": false}`` (the hospital
    has one), ``{"ok": true}`` (``check``) or ``{"refused": "<why>"}``; nothing, if it said none."""

    created: bool | None = None
    ok: bool = False
    refused: str | None = None


_ANSWER = TypeAdapter(Answer)


def read_answer(lines: Iterable[str]) -> Answer:
    """The program's answer: its last line that is a JSON object of one (``Answer()`` if none is)."""
    for line in reversed(list(lines)):
        try:
            return _ANSWER.validate_json(line)
        except ValueError:  # not JSON, or not an answer (pydantic's ValidationError is a ValueError)
            continue
    return Answer()


def admin_env(settings: OperatorSettings, password: str | None, *, generated: bool = False) -> dict[str, str]:
    """``HIS_ADMIN_EMAIL`` and ``HIS_ADMIN_PASSWORD``: given to identity's program, and to no other
    process. ``generated``: the password was made by `his up`, not chosen by the operator, so the
    administrator must change it at the first sign-in (``HIS_ADMIN_PASSWORD_GENERATED``)."""
    env = {"HIS_ADMIN_EMAIL": settings.admin_email}
    if password is not None:
        env["HIS_ADMIN_PASSWORD"] = password
    if generated:
        env["HIS_ADMIN_PASSWORD_GENERATED"] = "1"  # noqa: S105 - a flag, not a password
    return env


def refusal(settings: OperatorSettings, timeout: float = 60.0) -> str | None:
    """Why identity would refuse to create the administrator of ``settings``, or None: its answer
    to ``python -m his.identity.admin check`` (which imports only identity's rules).
    ``AdminProgramError`` if it gave none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIS_")}
    env.update(admin_env(settings, settings.admin_password))
    try:
        done = subprocess.run(
            [sys.executable, "-m", PROGRAM, "check"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AdminProgramError(f"identity's check of the administrator gave no answer in {timeout:.0f}s") from None
    lines = done.stdout.splitlines()
    said = read_answer(lines)
    if done.returncode == REFUSED and said.refused is not None:
        return said.refused
    if done.returncode == 0 and said.ok:
        return None
    tail = " / ".join(line.strip() for line in lines[-8:] if line.strip())
    raise AdminProgramError(f"identity's check of the administrator failed (exit code {done.returncode}): {tail}")
