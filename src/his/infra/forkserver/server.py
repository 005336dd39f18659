"""The fork server process: preload, then fork a child per request and report its exit."""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import os
import runpy
import selectors
import signal as _signal
import socket
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

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
    exit_code,
)

#: The signals the server handles (through its wake-up fd); its children get default handlers.
HANDLED = frozenset({_signal.SIGCHLD, _signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP})


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """``python -c 'from his.infra.forkserver.server import main; main()' FD MODULE…``"""
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
            drop_privileges(req)
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


def drop_privileges(req: Spawn) -> None:
    """Become the user the request names, if any: root's groups first, then the group, then the
    user (after which none of them can be taken back). Raises ``OSError`` if any step fails: the
    child then exits rather than run with more rights than it was given."""
    if req.uid < 0:
        return
    os.setgroups([])
    os.setgid(req.gid)
    os.setuid(req.uid)
    if os.getuid() != req.uid or os.geteuid() != req.uid or os.getegid() != req.gid:
        raise OSError(f"{req.name}: still runs as {os.geteuid()}:{os.getegid()}, not {req.uid}:{req.gid}")


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
