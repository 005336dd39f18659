"""A private hospital for a benchmark: the real ``his up`` in a temporary data directory.

``PrivateHospital`` runs ``his up`` as an operator would (its own ``HIS_DATA_DIR``, a free
gateway port, the administrator's password, the gateway's rate limits raised so that the load
is not answered with 429s), waits for "his is up", and stops it with SIGINT, leaving no process
behind. ``CpuLedger`` reads from ``/proc`` how much CPU each part of the hospital used, and
``scrape_http_seconds`` reads a process's request timings from its ``/metrics``; ``rss_mb``
reads each process's resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from his.benchmarks.harness import BenchmarkError, settle
from his.cli.state import RunState, operator_identity
from his.cli.state import read as read_state
from his.infra.nats import free_port
from his.infra.procs import ManagedProcess
from his.kernel.pki import WorkloadIdentity

ADMIN_EMAIL = "bench.admin@his.local"
#: The gateway's limits (50/s per address, 20/s per user and 100 open connections per address by
#: default) would answer the load with 429s and 503s: every simulated user comes from 127.0.0.1,
#: and an open-model rate opens hundreds of connections in its bursts. The benchmark raises them
#: (the connections to the gateway's cap in all, as deploy/ does behind a proxy) and says so.
RAISED_LIMITS = {
    "HIS_GATEWAY_RATE_PER_IP": "1000000",
    "HIS_GATEWAY_RATE_PER_SUBJECT": "1000000",
    "HIS_GATEWAY_BURST": "1000000",
    "HIS_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS": "1000",
}


def his_command() -> list[str]:
    script = Path(sys.executable).parent / "his"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from his.cli.main import main; main()"]


@dataclass
class PrivateHospital:
    workdir: Path
    port: int = 0
    password: str = ""
    proc: ManagedProcess | None = None
    started_in: float = 0.0

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    @property
    def log(self) -> Path:
        return self.workdir / "his-up.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIS_")}
        env.update(
            HIS_DATA_DIR=str(self.data),
            HIS_GATEWAY_PORT=str(self.port),
            HIS_ADMIN_EMAIL=ADMIN_EMAIL,
            HIS_ADMIN_PASSWORD=self.password,
            **RAISED_LIMITS,
        )
        return env

    def start(self, timeout: float = 120.0) -> None:
        self.port = self.port or free_port()
        self.password = self.password or secrets.token_urlsafe(18)
        offset = self.log.stat().st_size if self.log.exists() else 0  # a restart appends to the same log
        started = time.perf_counter()
        self.proc = ManagedProcess.spawn("his-up", [*his_command(), "up"], env=self.env(), log_file=self.log)
        deadline = time.monotonic() + timeout
        while b"his is up" not in self.log.read_bytes()[offset:]:
            if self.proc.poll() is not None:
                raise BenchmarkError(f"his up exited with {self.proc.returncode}: {self.proc.tail(6)}")
            if time.monotonic() > deadline:
                raise BenchmarkError(f"his up was not up after {timeout:.0f}s: {self.proc.tail(6)}")
            time.sleep(0.1)
        self.started_in = time.perf_counter() - started

    def state(self) -> RunState:
        """The run-state file ``his up`` wrote (his.cli.state), checked; ``ValueError`` without a valid one."""
        st = read_state(self.data)
        if st is None:
            raise ValueError(f"no valid run state in {self.data}")
        return st

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_dsn(self) -> str:
        return self.state().admin_dsn

    def service_url(self, name: str) -> str:
        return self.state().services[name].url

    def operator(self) -> WorkloadIdentity:
        ident = operator_identity(self.data)
        if ident is None:
            raise BenchmarkError("his up issued no operator certificate")
        return ident

    def workload(self, name: str) -> WorkloadIdentity:
        """The certificate `his up` issued to process ``name``: the one a direct call to a service
        presents as the gateway would (a service's listener admits the gateway on every path and
        the operator on its operations paths only)."""
        pki = Path(self.state().pki_dir or self.data / "pki")
        ident = WorkloadIdentity(pki / f"{name}.crt", pki / f"{name}.key", pki / "ca.crt")
        if not ident.cert.exists():
            raise BenchmarkError(f"his up issued no certificate to {name}")
        return ident

    def processes(self) -> dict[str, int]:
        """Every process of the hospital by name: services, gateway, PostgreSQL, NATS, the supervisor
        and the fork server that forked the services (its CPU is their imports)."""
        st = self.state()
        procs = {name: s.pid for name, s in st.services.items() if s.pid}
        for pid in st.infra_pids:
            procs["nats" if "nats" in _comm(pid) else "postgres"] = pid
        if st.forkserver_pid:
            procs["forkserver"] = st.forkserver_pid
        if self.proc is not None:
            procs["supervisor"] = self.proc.pid
        return procs

    def stop(self) -> None:
        """SIGINT, as Ctrl-C would; whatever still runs after a minute is killed."""
        if self.proc is None:
            return
        leftovers = []
        with contextlib.suppress(OSError, ValueError, KeyError):
            leftovers = [p for n, p in self.processes().items() if n != "supervisor"]
        self.proc.stop(signal.SIGINT, timeout=60)
        for pid in leftovers:
            if _alive(pid) and str(self.data) in _environ(pid) + _cmdline(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.proc = None


def _read(path: str) -> str:
    try:
        return Path(path).read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _comm(pid: int) -> str:
    return _read(f"/proc/{pid}/comm").strip()


def _cmdline(pid: int) -> str:
    return _read(f"/proc/{pid}/cmdline")


def _environ(pid: int) -> str:
    return _read(f"/proc/{pid}/environ")


def _alive(pid: int) -> bool:
    stat = _read(f"/proc/{pid}/stat")
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


class CpuLedger:
    """CPU seconds used by named groups of processes, each a root process and its descendants.

    ``roots`` maps a name to a pid; a name in ``alone`` counts only that process (the supervisor
    and the fork server, whose descendants are the services, counted under their own names).
    """

    def __init__(
        self, roots: dict[str, int], alone: tuple[str, ...] = ("supervisor", "forkserver", "load generator")
    ) -> None:
        self.roots = dict(roots)
        self.alone = alone
        self.tick = os.sysconf("SC_CLK_TCK")

    def sample(self) -> dict[str, float]:
        children: dict[int, list[int]] = {}
        own: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            pid = int(entry.name)
            children.setdefault(int(fields[1]), []).append(pid)
            own[pid] = sum(int(f) for f in fields[11:15]) / self.tick  # utime stime cutime cstime
        out: dict[str, float] = {}
        for name, root in self.roots.items():
            if name in self.alone:
                out[name] = own.get(root, 0.0)
                continue
            total, todo = 0.0, [root]
            while todo:
                pid = todo.pop()
                total += own.get(pid, 0.0)
                todo += children.get(pid, [])
            out[name] = total
        return out

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {k: max(0.0, after.get(k, 0.0) - v) for k, v in before.items()}


_SAMPLE = re.compile(
    r'^his_http_request_duration_seconds_(sum|count)\{method="([A-Z]+)",route="([^"]*)",status="(\d+)"\} (\S+)$'
)


def scrape_http_seconds(text: str, method: str, route: str, status: str) -> tuple[float, float]:
    """(sum of seconds, count) of one route's requests with one status, from Prometheus text."""
    total = count = 0.0
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(2) == method and m.group(3) == route and m.group(4) == status:
            if m.group(1) == "sum":
                total = float(m.group(5))
            else:
                count = float(m.group(5))
    return total, count


async def read_metrics(client: httpx.AsyncClient, url: str) -> str:
    r = await client.get(f"{url}/metrics", timeout=5.0)
    r.raise_for_status()
    return r.text


async def quiesce(ledger: CpuLedger, timeout: float = 10.0, idle: float = 0.25) -> float:
    """Wait until the hospital has caught up (relays, consumers) from the previous phase: its
    processes use less than ``idle`` of one core over 200 ms. Returns the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        before = ledger.sample()
        await asyncio.sleep(0.2)
        used = sum(CpuLedger.delta(before, ledger.sample()).values())
        if used / 0.2 < idle:
            break
    settle()
    return time.perf_counter() - started


def rss_mb(processes: dict[str, int]) -> dict[str, float]:
    """Resident memory (VmRSS, MiB) of each named process alone, from ``/proc/<pid>/status``.

    Shared pages (the interpreter, libraries) count in every process that maps them, so the sum
    overstates the hospital's total; per process it is what an operator's ``ps`` or a container
    limit sees.
    """
    out: dict[str, float] = {}
    for name, pid in processes.items():
        for line in _read(f"/proc/{pid}/status").splitlines():
            if line.startswith("VmRSS:"):
                out[name] = int(line.split()[1]) / 1024.0
                break
    return out
