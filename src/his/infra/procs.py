"""Child processes owned by the supervisor: own process group, logs captured, clean stop."""

from __future__ import annotations

import collections
import contextlib
import os
import signal as _signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO


class ServerStartError(RuntimeError):
    """A server could not be started; the message is one line meant for the operator."""


def pump(name: str, stream: IO[bytes], tail: collections.deque[str], echo: Callable[[str, str], None] | None) -> None:
    """Read a child's output line by line until it closes: keep the last lines, echo each."""
    for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        tail.append(line)
        if echo is not None:
            echo(name, line)
        else:
            sys.stderr.write(f"{name:>14} | {line}\n")


def private_opener(path: str, flags: int) -> int:
    """``open``'s opener for a file only its owner may read or write (0600 when created)."""
    return os.open(path, flags, 0o600)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner alone (0600), from its first byte on."""
    with open(path, "w", encoding="utf-8", opener=private_opener) as fh:
        fh.write(text)
    path.chmod(0o600)  # a file an earlier version created keeps its mode otherwise


class RotatingLog:
    """A child's output lines appended to ``path``, rotated when the file reaches ``max_bytes``:
    ``<name>.1`` is the newest of at most ``keep`` rotated files and the oldest is dropped, so a
    long-running hospital's logs stay bounded. Callable as a ``ManagedProcess`` echo; a write that
    fails (a full disk) is dropped rather than stopping the child's output."""

    def __init__(self, path: Path, *, max_bytes: int = 50 * 2**20, keep: int = 5) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.file = open(path, "a", encoding="utf-8", buffering=1, opener=private_opener)  # noqa: SIM115
        path.chmod(0o600)  # logs say who did what when: their owner's alone
        self.size = path.stat().st_size

    def __call__(self, name: str, line: str) -> None:
        self.write(line)

    def write(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.file.write(line + "\n")
            self.size += len(line.encode()) + 1
            if self.size >= self.max_bytes:
                self.rotate()

    def rotate(self) -> None:
        self.file.close()
        for n in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self.file = open(self.path, "a", encoding="utf-8", buffering=1, opener=private_opener)  # noqa: SIM115
        self.size = 0

    def close(self) -> None:
        self.file.close()


class ManagedProcess:
    """A child process in its own session, whose output is prefixed or written to a file."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_file: Path | None) -> None:
        self.name = name
        self.popen = popen
        self.log_file = log_file
        self._tail: collections.deque[str] = collections.deque(maxlen=40)
        self._reader: threading.Thread | None = None

    @classmethod
    def spawn(
        cls,
        name: str,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log_file: Path | None = None,
        echo: Callable[[str, str], None] | None = None,
        user: tuple[int, int] | None = None,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        out: int | IO[bytes]
        out = open(log_file, "ab") if log_file is not None else subprocess.PIPE  # noqa: SIM115
        popen = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            user=user[0] if user else None,
            group=user[1] if user else None,
            extra_groups=[] if user else None,  # a server run as another user keeps none of root's groups
            cwd=cwd,
        )
        if log_file is not None:
            assert not isinstance(out, int)
            out.close()
        proc = cls(name, popen, log_file)
        if popen.stdout is not None:
            proc._reader = threading.Thread(target=proc._pump, args=(echo,), daemon=True)
            proc._reader.start()
        return proc

    def _pump(self, echo: Callable[[str, str], None] | None) -> None:
        assert self.popen.stdout is not None
        pump(self.name, self.popen.stdout, self._tail, echo)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()

    def tail(self, lines: int = 8) -> str:
        if self.log_file is not None and self.log_file.exists():
            text = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        else:
            text = list(self._tail)[-lines:]
        return " / ".join(t.strip() for t in text if t.strip())

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, sig)

    def stop(self, sig: int = _signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Ask the process to stop, then kill it (and its group) if it does not."""
        self.signal(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, _signal.SIGKILL)
            self.popen.wait(5)
        if self._reader is not None:
            self._reader.join(timeout=2)
        return self.popen.returncode
