"""The caller's side: start a fork server, ask it for children, follow them."""

from __future__ import annotations

import collections
import contextlib
import os
import signal as _signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from his.infra.forkserver.protocol import (
    MAX_MESSAGE,
    Exited,
    Kill,
    Message,
    ProtocolError,
    Refused,
    Spawn,
    Started,
    decode,
    encode,
)
from his.infra.procs import pump

#: The exit status reported for a child whose fork server went away before it could report it.
UNKNOWN_EXIT = 255


class ForkServerError(RuntimeError):
    """The fork server cannot (or can no longer) fork a child; start it another way."""


class ForkServer:
    """The caller's handle on a running fork server (``start``); ``spawn`` forks a child."""

    def __init__(self, sock: socket.socket, popen: subprocess.Popen[bytes]) -> None:
        self.sock = sock
        self.popen = popen
        self.lost = False
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()  # not _lock: a send may wait for the server to read
        self._next_id = 0
        self._replies: dict[int, Started | Refused | None] = {}
        self._replied = threading.Condition(self._lock)
        self._procs: dict[int, ForkedProcess] = {}
        self._early_exits: dict[int, int] = {}
        self._reader = threading.Thread(target=self._read, name="fork-server", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, preload: Sequence[str], *, env: dict[str, str] | None = None) -> ForkServer:
        """Start a server that imports ``preload`` (it is ready once it has: requests wait)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            popen = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from his.infra.forkserver.server import main; main()",
                    str(theirs.fileno()),
                    *preload,
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C reaches the caller only, which stops the children in order
            )
        except OSError as exc:
            ours.close()
            raise ForkServerError(f"cannot start the fork server: {exc}") from None
        finally:
            theirs.close()
        return cls(ours, popen)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def spawn(
        self,
        name: str,
        module: str,
        *,
        env: dict[str, str],
        echo: Callable[[str, str], None] | None = None,
        timeout: float = 60.0,
        user: tuple[int, int] | None = None,
    ) -> ForkedProcess:
        """Fork a child running ``module`` as ``__main__`` with exactly ``env`` (as ``user``, a
        uid and gid, when given); its output is pumped to ``echo`` line by line. Waits for the
        server (it may still be importing)."""
        r, w = os.pipe()
        try:
            with self._lock:
                self._next_id += 1
                uid, gid = user or (-1, -1)
                req = Spawn(self._next_id, name, module, dict(env), uid, gid)
                self._replies[req.id] = None
            self._send(req, [w])
        except (OSError, ProtocolError) as exc:
            os.close(r)
            raise ForkServerError(f"cannot reach the fork server: {exc}") from None
        finally:
            os.close(w)
        reply = self._wait_reply(req.id, timeout)
        if not isinstance(reply, Started):
            os.close(r)
            raise ForkServerError(reply.error if isinstance(reply, Refused) else "the fork server is gone")
        proc = ForkedProcess(name, reply.pid, self, os.fdopen(r, "rb"), echo)
        with self._lock:
            self._procs[proc.pid] = proc
            if proc.pid in self._early_exits:
                proc._exited(self._early_exits.pop(proc.pid))
        return proc

    def kill(self, pid: int, sig: int, *, group: bool = False) -> bool:
        """Ask the server to signal its child; False when the server is gone."""
        try:
            self._send(Kill(pid, sig, group), [])
        except OSError:
            return False
        return True

    def close(self, timeout: float = 15.0) -> None:
        """Stop the server and wait for it: it stops any child still running and reports their
        exits before it exits (a server still importing just ends)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(_signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        self._reader.join(timeout=2)
        self.sock.close()

    def _send(self, message: Message, fds: list[int]) -> None:
        if self.lost:
            raise OSError("the fork server is gone")
        data = encode(message)
        with self._send_lock:
            if fds:
                socket.send_fds(self.sock, [data], fds)
            else:
                self.sock.send(data)

    def _wait_reply(self, req_id: int, timeout: float) -> Started | Refused | None:
        deadline = time.monotonic() + timeout
        with self._replied:
            while self._replies.get(req_id) is None and not self.lost:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._replied.wait(left)
            return self._replies.pop(req_id, None)

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(MAX_MESSAGE)
                message = decode(data) if data else None
            except (OSError, ProtocolError):
                message = None
            if message is None:
                break
            with self._replied:
                if isinstance(message, Started | Refused):
                    self._replies[message.id] = message
                    self._replied.notify_all()
                elif isinstance(message, Exited):
                    proc = self._procs.pop(message.pid, None)
                    if proc is None:
                        self._early_exits[message.pid] = message.code
                    else:
                        proc._exited(message.code)
        with self._replied:
            self.lost = True
            self._replied.notify_all()


class ForkedProcess:
    """A child of a fork server, with what a supervisor uses of a subprocess: pid,
    ``poll``/``returncode``, ``signal``, ``stop`` and the ``tail`` of its output."""

    def __init__(
        self,
        name: str,
        pid: int,
        server: ForkServer,
        stdout: IO[bytes],
        echo: Callable[[str, str], None] | None,
    ) -> None:
        self.name = name
        self.pid = pid
        self.server = server
        self.returncode: int | None = None
        self._done = threading.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=40)
        self._reader = threading.Thread(target=self._pump, args=(stdout, echo), daemon=True)
        self._reader.start()

    def _pump(self, stdout: IO[bytes], echo: Callable[[str, str], None] | None) -> None:
        with stdout:
            pump(self.name, stdout, self._tail, echo)

    def _exited(self, code: int) -> None:
        self.returncode = code
        self._done.set()

    def poll(self) -> int | None:
        if self.returncode is None and self.server.lost and not _alive(self.pid):
            self._exited(UNKNOWN_EXIT)  # the server went away before it could tell
        return self.returncode

    def tail(self, lines: int = 8) -> str:
        return " / ".join(t.strip() for t in list(self._tail)[-lines:] if t.strip())

    def signal(self, sig: int, *, group: bool = False) -> None:
        if self.poll() is not None:
            return
        if self.server.kill(self.pid, sig, group=group):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):  # no server: no reuse guard either
            (os.killpg if group else os.kill)(self.pid, sig)

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            self._done.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        return self.returncode

    def stop(self, sig: int = _signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Ask the process to stop, then kill it (and its group) if it does not."""
        self.signal(sig)
        if self.wait(timeout) is None:
            self.signal(_signal.SIGKILL, group=True)
            self.wait(5)
        self._reader.join(timeout=2)
        return self.returncode


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
