"""The install steps of `make up` and `make test`, run by make itself with a stand-in for uv that
records what it is asked (the real sync is what every other test runs in)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[2]


def checkout(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the files the install steps read, and a venv whose uv only logs its arguments."""
    for name in ("Makefile", "pyproject.toml", "uv.lock"):
        shutil.copy2(ROOT / name, tmp_path / name)
    log = tmp_path / "uv-calls.log"
    uv = tmp_path / ".venv" / "bin" / "uv"
    uv.parent.mkdir(parents=True)
    uv.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    uv.chmod(0o755)
    return tmp_path, log


def make(where: Path, target: str) -> str:
    done = subprocess.run(
        ["make", "--no-print-directory", target], cwd=where, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout + done.stderr


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_up_installs_the_runtime_only_saying_so_and_test_adds_the_tools(tmp_path: Path) -> None:
    where, log = checkout(tmp_path)
    said = make(where, ".venv/.synced-runtime")  # what `make up` runs before `his up`
    assert "==> installing the runtime packages" in said
    assert calls(log) == ["sync --frozen --no-dev --inexact --compile-bytecode"]
    said = make(where, ".venv/.synced")  # what `make test` runs before the tools
    assert "==> installing the runtime, test, lint and type-check packages" in said
    assert calls(log)[1:] == ["sync --frozen --compile-bytecode"]
    # `make up` after `make test` has nothing left to install (and would not remove the tools).
    assert "up to date" in make(where, ".venv/.synced-runtime") and len(calls(log)) == 2


def test_test_first_then_up(tmp_path: Path) -> None:
    where, log = checkout(tmp_path)
    make(where, ".venv/.synced")
    assert "up to date" in make(where, ".venv/.synced-runtime")
    assert calls(log) == ["sync --frozen --compile-bytecode"]


def test_up_starts_the_hospital_after_the_runtime_install(tmp_path: Path) -> None:
    where, _ = checkout(tmp_path)
    plan = subprocess.run(["make", "-n", "up"], cwd=where, capture_output=True, text=True, check=True).stdout
    lines = plan.splitlines()
    sync = next(i for i, line in enumerate(lines) if "sync --frozen --no-dev" in line)
    start = next(i for i, line in enumerate(lines) if line.endswith(".venv/bin/his up"))
    assert sync < start and not any("sync --frozen --compile-bytecode" in line for line in lines)
