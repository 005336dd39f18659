"""A fork server: one process imports a program's modules once, then forks its children.

Why: a program made of many Python processes that import the same heavy modules (web
framework, validation, messaging and database clients) pays for those imports once per
process. Started as separate interpreters on a machine with few cores, that repeated import
work is most of the start. A process that has already imported them forks a child in
milliseconds, and the children share the imported modules' memory copy-on-write
(docs/adr/0015-fork-server.md has the measurements).

How: ``ForkServer.start(preload)`` starts ``python -c …`` with one end of a Unix
``SOCK_SEQPACKET`` socket pair. The server imports ``preload``, runs ``gc.collect()`` and
``gc.freeze()`` (so the children's collections do not touch, and copy, the shared objects),
and waits. Each packet is one JSON message (``encode`` / ``decode``). A spawn request carries
the child's output fd (``SCM_RIGHTS``): the caller creates the pipe and reads it as it would a
subprocess's. The forked child starts its own session, reads /dev/null, writes to that fd, gets
exactly the environment it was given, default signal handlers, and runs its module as
``__main__``, as ``python -m module`` would.

Rules the server keeps:
- It starts no thread and no event loop before forking: forking a process with threads is
  unsafe (locks held by other threads stay held), and gRPC warns when forked after it started.
  Importing is fine; what the preloaded modules do at import time must stay passive.
- Only it can wait for its children: it reports each exit status (``Exited``), and it signals
  only children it has not reaped yet, so a pid that was reused is never signalled.
- When its caller goes away (end of file on the socket) or on SIGTERM, it stops its children
  (SIGTERM, then SIGKILL after a grace period) and exits.

A forked child's ``/proc/<pid>/environ`` and ``cmdline`` are the server's (what the kernel
recorded at exec); the child's ``os.environ`` is what the caller sent. Its ``comm`` is its name.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import gc
import importlib
import json
import os
import runpy
import selectors
import signal as _signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, NoReturn

from his.kernel.infra.procs import pump

#: Largest message (a spawn request with its environment); larger ones are refused.
MAX_MESSAGE = 1 << 20
#: The signals the server handles (through its wake-up fd); its children get default handlers.
HANDLED = frozenset({_signal.SIGCHLD, _signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP})
#: The exit status reported for a child whose fork server went away before it could report it.
UNKNOWN_EXIT = 255


class ForkServerError(RuntimeError):
    """The fork server cannot (or can no longer) fork a child; start it another way."""


class ProtocolError(ValueError):
    """A message that is not one of the protocol's."""


@dataclass(frozen=True)
class Spawn:
    """Caller → server: fork a child that runs ``module`` as ``__main__``; the packet carries its output fd."""

    id: int
    name: str
    module: str
    env: dict[str, str]


@dataclass(frozen=True)
class Kill:
    """Caller → server: send ``sig`` to a child (its whole process group if ``group``)."""

    pid: int
    sig: int
    group: bool = False


@dataclass(frozen=True)
class Started:
    """Server → caller: the child of request ``id`` runs as ``pid``."""

    id: int
    pid: int


@dataclass(frozen=True)
class Refused:
    """Server → caller: request ``id`` could not be carried out."""

    id: int
    error: str


@dataclass(frozen=True)
class Exited:
    """Server → caller: child ``pid`` exited; ``code`` as ``Popen.returncode`` (negative: a signal)."""

    pid: int
    code: int


Message = Spawn | Kill | Started | Refused | Exited
_OPS: dict[str, type[Message]] = {
    "spawn": Spawn,
    "kill": Kill,
    "started": Started,
    "refused": Refused,
    "exited": Exited,
}
_FIELDS: dict[str, dict[str, type]] = {
    "spawn": {"id": int, "name": str, "module": str, "env": dict},
    "kill": {"pid": int, "sig": int, "group": bool},
    "started": {"id": int, "pid": int},
    "refused": {"id": int, "error": str},
    "exited": {"pid": int, "code": int},
}


def encode(message: Message) -> bytes:
    """One packet: ``{"op": …, fields…}`` as UTF-8 JSON."""
    op = next(name for name, cls in _OPS.items() if isinstance(message, cls))
    data = json.dumps({"op": op, **asdict(message)}, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"{op} message of {len(data)} bytes is larger than {MAX_MESSAGE}")
    return data


def decode(data: bytes) -> Message:
    """The message in one packet; ``ProtocolError`` for anything else."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("op") not in _OPS:
        raise ProtocolError("no known op")
    op = raw.pop("op")
    fields = _FIELDS[op]
    if set(raw) != set(fields):
        raise ProtocolError(f"{op}: fields {sorted(raw)}, expected {sorted(fields)}")
    for key, kind in fields.items():
        value = raw[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ProtocolError(f"{op}.{key}: {type(value).__name__}, expected {kind.__name__}")
    if op == "spawn" and not all(isinstance(k, str) and isinstance(v, str) for k, v in raw["env"].items()):
        raise ProtocolError("spawn.env: names and values must be strings")
    return _OPS[op](**raw)


def exit_code(code: object) -> int:
    """The status a ``SystemExit(code)`` gives a process, as the interpreter computes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


# ---- the server -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """``python -c 'from his.kernel.infra.forkserver import main; main()' FD MODULE…``"""
    args = list(sys.argv[1:] if argv is None else argv)
    sock = socket.socket(fileno=int(args[0]))
    for module in args[1:]:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - any failure: the caller starts its children itself
            print(f"fork server: cannot import {module}: {type(exc).__name__}: {exc}", file=sys.stderr)
            sys.exit(1)
    gc.collect()
    gc.freeze()
    sys.exit(_Server(sock).run())


class _Server:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.children: dict[int, str] = {}
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.selector = selectors.DefaultSelector()

    def run(self) -> int:
        for sig in HANDLED:
            _signal.signal(sig, lambda *_: None)  # only to be woken through the wake-up fd
        _signal.set_wakeup_fd(self.wake_w)
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        running = True
        while running:
            for key, _ in self.selector.select():
                if key.fileobj is self.sock:
                    running = self.receive()
                else:
                    signals = os.read(self.wake_r, 512)
                    self.reap()
                    running = not ({_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP} & set(signals))
        self.stop_children()
        return 0

    def receive(self) -> bool:
        try:
            data, fds, flags, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 4)
        except OSError:
            return False
        if not data:
            for fd in fds:
                os.close(fd)
            return False  # the caller is gone
        try:
            if flags & socket.MSG_TRUNC:
                raise ProtocolError("message too large")
            message = decode(data)
        except ProtocolError as exc:
            print(f"fork server: {exc}", file=sys.stderr)
            for fd in fds:
                os.close(fd)
            return True
        if isinstance(message, Spawn):
            self.spawn(message, fds)  # it owns the fds
            return True
        for fd in fds:
            os.close(fd)
        if isinstance(message, Kill):
            self.kill(message)
        return True

    def send(self, message: Message) -> None:
        with contextlib.suppress(OSError):  # a caller that is gone is noticed on the next read
            self.sock.send(encode(message))

    def spawn(self, req: Spawn, fds: list[int]) -> None:
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            self.send(Refused(req.id, f"expected one output fd, got {len(fds)}"))
            return
        sys.stdout.flush()
        sys.stderr.flush()
        # Signals stay blocked across the fork until the child has restored default handlers:
        # a SIGTERM sent to a child that just forked would otherwise reach the server's handler.
        _signal.pthread_sigmask(_signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
        except OSError as exc:
            _signal.pthread_sigmask(_signal.SIG_UNBLOCK, HANDLED)
            os.close(fds[0])
            self.send(Refused(req.id, f"fork: {exc}"))
            return
        if pid == 0:
            self.become(req, fds[0])
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, HANDLED)
        os.close(fds[0])
        self.children[pid] = req.name
        self.send(Started(req.id, pid))

    def become(self, req: Spawn, out: int) -> NoReturn:
        """In the forked child: detach from the server, then run the module."""
        code = 1
        try:
            os.setsid()
            _signal.set_wakeup_fd(-1)
            for sig in (_signal.SIGCHLD, _signal.SIGTERM, _signal.SIGHUP):
                _signal.signal(sig, _signal.SIG_DFL)
            _signal.signal(_signal.SIGINT, _signal.default_int_handler)  # as in any interpreter
            _signal.pthread_sigmask(_signal.SIG_UNBLOCK, HANDLED)
            self.selector.close()
            self.sock.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.close(out)
            os.environ.clear()
            os.environ.update(req.env)
            with contextlib.suppress(OSError):
                Path("/proc/self/comm").write_text(req.name[:15])
            code = run_module(req.module)
        except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into the server
            with contextlib.suppress(BaseException):
                traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                atexit._run_exitfuncs()  # as at an interpreter's exit (logging.shutdown, …)
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def kill(self, req: Kill) -> None:
        if req.pid not in self.children:  # exited (reaped) or never ours: the pid may be reused
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if req.group:
                os.killpg(req.pid, req.sig)
            else:
                os.kill(req.pid, req.sig)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.children.pop(pid, None) is not None:
                self.send(Exited(pid, os.waitstatus_to_exitcode(status)))

    def stop_children(self, grace: float = 10.0) -> None:
        for pid in self.children:
            self.kill(Kill(pid, _signal.SIGTERM))
        deadline = time.monotonic() + grace
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        for pid in list(self.children):
            self.kill(Kill(pid, _signal.SIGKILL, group=True))
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.children.pop(pid)


def run_module(module: str) -> int:
    """Run ``module`` as ``python -m module`` would; its exit status."""
    sys.argv = [module]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exit_code(exc.code)
    except KeyboardInterrupt:
        return 128 + _signal.SIGINT
    except BaseException:  # noqa: BLE001 - reported like an uncaught exception
        traceback.print_exc()
        return 1
    return 0


# ---- the caller's side --------------------------------------------------------------------------


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
                    "from his.kernel.infra.forkserver import main; main()",
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
    ) -> ForkedProcess:
        """Fork a child running ``module`` as ``__main__`` with exactly ``env``; its output is
        pumped to ``echo`` line by line. Waits for the server (it may still be importing)."""
        r, w = os.pipe()
        try:
            with self._lock:
                self._next_id += 1
                req = Spawn(self._next_id, name, module, dict(env))
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
