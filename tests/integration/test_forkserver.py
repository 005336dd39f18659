"""The fork server with real processes: output through the caller's pipe, exit statuses,
signals, and no child left behind when its caller dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from his.infra.forkserver import ForkServer
from tests.support.waiting import alive, wait_until

CHILD = "tests.support.forked_child"
ROOT = str(Path(__file__).parents[2])


@pytest.fixture
def server() -> Iterator[ForkServer]:
    fs = ForkServer.start(["json"], env=dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1"))
    yield fs
    fs.close()


class Lines:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, name: str, line: str) -> None:
        self.seen.append((name, line))

    def text(self) -> str:
        return "\n".join(line for _, line in self.seen)


def test_a_child_writes_through_the_callers_pipe_with_exactly_its_environment(server: ForkServer) -> None:
    out = Lines()
    child = server.spawn("greeter", CHILD, env={"GREETING": "merhaba", "EXIT_CODE": "3"}, echo=out)
    assert child.wait(30) == 3
    wait_until(lambda: "to stderr" in out.text(), what="the child's stderr line")
    assert f"greeting=merhaba ppid={server.pid} vars=2" in out.text()
    assert {name for name, _ in out.seen} == {"greeter"}
    assert "to stderr" in child.tail()


def test_sigterm_stops_a_child_and_its_status_says_so(server: ForkServer) -> None:
    out = Lines()
    child = server.spawn("sleeper", CHILD, env={"SLEEP": "1"}, echo=out)
    wait_until(lambda: "sleeping" in out.text(), what="the child to sleep")
    assert child.poll() is None
    assert Path(f"/proc/{child.pid}/comm").read_text().strip() == "sleeper"
    assert os.getsid(child.pid) == child.pid  # its own session: a terminal's Ctrl-C does not reach it
    assert child.stop(signal.SIGTERM, timeout=10) == -signal.SIGTERM
    assert not alive(child.pid)


def test_a_killed_child_is_reported_and_forked_again(server: ForkServer) -> None:
    first = server.spawn("worker", CHILD, env={"SLEEP": "1"})
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(30) == -signal.SIGKILL
    second = server.spawn("worker", CHILD, env={"EXIT_CODE": "0"})
    assert second.wait(30) == 0 and second.pid != first.pid


def test_closing_the_server_stops_its_children(server: ForkServer) -> None:
    child = server.spawn("sleeper", CHILD, env={"SLEEP": "1"})
    server.close()
    assert server.popen.returncode == 0
    assert child.wait(5) == -signal.SIGTERM
    assert not alive(child.pid)


CALLER = textwrap.dedent(
    """
    import os, sys, time
    from his.infra.forkserver import ForkServer
    fs = ForkServer.start(["json"], env=dict(os.environ))
    child = fs.spawn("orphan", "tests.support.forked_child", env={"SLEEP": "1"})
    print(fs.pid, child.pid, flush=True)
    time.sleep(600)
    """
)


def test_when_its_caller_dies_the_server_stops_its_children_and_exits() -> None:
    caller = subprocess.Popen(
        [sys.executable, "-c", CALLER],
        stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=ROOT),
        start_new_session=True,
    )
    try:
        assert caller.stdout is not None
        server_pid, child_pid = map(int, caller.stdout.readline().split())
        assert alive(server_pid) and alive(child_pid)
        caller.kill()  # no clean-up of any kind: the socket closes as the process dies
        caller.wait(10)
        wait_until(lambda: not alive(child_pid), what="the orphaned child to be stopped")
        wait_until(lambda: not alive(server_pid), what="the fork server to exit")
    finally:
        caller.kill()
        caller.wait(10)


def test_without_its_fork_server_the_supervisor_starts_a_child_as_its_own_interpreter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from his.cli.settings import OperatorSettings
    from his.cli.supervisor.children import launch
    from his.cli.supervisor.stack import Child, Stack
    from his.infra.procs import ManagedProcess

    forks = ForkServer.start(["json"])
    forks.close()  # as if it had died
    stack = Stack(OperatorSettings(data_dir=tmp_path), forks=forks)
    env = {"HIS_DATA_DIR": str(tmp_path), "PYTHONPATH": ROOT, "GREETING": "plain", "EXIT_CODE": "4"}
    child = Child("greeter", CHILD, env, url="")
    launch(stack, child)
    assert isinstance(child.proc, ManagedProcess)
    assert child.proc.popen.wait(30) == 4
    assert stack.forks_off
    assert "starting each service as its own interpreter" in capsys.readouterr().err
    wait_until(lambda: "greeting=plain" in (tmp_path / "logs" / "greeter.log").read_text(), what="the child's line")
    assert f"ppid={os.getpid()}" in (tmp_path / "logs" / "greeter.log").read_text()
    assert child.output is not None
    child.output.close()


def test_the_hospitals_preload_starts_no_thread_before_forking() -> None:
    from his.cli.services import PRELOAD

    fs = ForkServer.start(PRELOAD, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        child = fs.spawn("probe", CHILD, env={"EXIT_CODE": "0"})  # answered: the preload is done
        assert child.wait(60) == 0
        assert os.listdir(f"/proc/{fs.pid}/task") == [str(fs.pid)]
    finally:
        fs.close()


def test_forked_children_do_not_share_the_random_state_of_their_preload() -> None:
    fs = ForkServer.start(["his.kernel.tracing"], env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        ids = []
        for n in range(2):
            out = Lines()
            assert fs.spawn(f"tracer{n}", CHILD, env={"TRACE_ID": "1"}, echo=out).wait(30) == 0

            def printed(out: Lines = out) -> bool:
                return "trace_id=" in out.text()

            wait_until(printed, what="the child's trace id")
            ids.append(out.text().split("trace_id=")[1].split()[0])
        assert ids[0] != ids[1]
    finally:
        fs.close()
