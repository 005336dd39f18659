"""Running `his up` as an operator would, for the end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from his.cli.state import operator_identity
from his.kernel.pki import WorkloadIdentity

HIS = str(Path(sys.executable).parent / "his")
ADMIN = ("chief@hospital.example", "ward seven night shift 2026")


def his_env(data: Path, gateway_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIS_")}
    env.update(
        {
            "HIS_DATA_DIR": str(data),
            "HIS_GATEWAY_PORT": str(gateway_port),
            "HIS_ADMIN_EMAIL": ADMIN[0],
            "HIS_ADMIN_PASSWORD": ADMIN[1],
        },
        **extra,
    )
    return env


class Hospital:
    def __init__(self, data: Path, port: int, **env: str) -> None:
        self.data, self.port, self.env = data, port, env
        self.log = data.parent / f"up-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        seen = self.log.read_text(errors="replace").count("his is up") if self.log.exists() else 0
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [HIS, "up"],
            env=his_env(self.data, self.port, **self.env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while self.log.read_text(errors="replace").count("his is up") <= seen:
            assert self.proc.poll() is None, f"his up exited early:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"his up not ready:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.1)

    def state(self) -> dict[str, object]:
        return dict(json.loads((self.data / "run" / "state.json").read_text()))

    def url(self, service: str) -> str:
        services = self.state()["services"]
        assert isinstance(services, dict)
        return str(services[service]["url"])

    def grpc_port(self, service: str) -> int:
        """The port of ``service``'s gRPC listener (from the environment `his up` gave the service)."""
        services = self.state()["services"]
        assert isinstance(services, dict)
        pid = int(services[service]["pid"])
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        port = next(e.split(b"=", 1)[1] for e in env if e.startswith(b"HIS_GRPC_PORT="))
        return int(port)

    def operator(self) -> WorkloadIdentity:
        ident = operator_identity(self.data)
        assert ident is not None, "his up issued no operator certificate"
        return ident

    def internal(self) -> httpx.Client:
        """A client for the services' internal (mutual TLS) listeners, as the operator."""
        return httpx.Client(verify=self.operator().client_context(), timeout=5)

    def pids(self) -> list[int]:
        st = self.state()
        services = st["services"]
        assert isinstance(services, dict)
        infra = st["infra_pids"]
        assert isinstance(infra, list)
        return [int(s["pid"]) for s in services.values()] + [int(p) for p in infra]

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def login(self, email: str = ADMIN[0], password: str = ADMIN[1]) -> dict[str, str]:
        r = httpx.post(f"{self.gateway}/api/auth/login", json={"email": email, "password": password}, timeout=10)
        assert r.status_code == 200, r.text
        return {"authorization": f"Bearer {r.json()['access_token']}"}

    def status(self) -> dict[str, object]:
        out = subprocess.run(
            [HIS, "status", "--json"], env=his_env(self.data, self.port), capture_output=True, check=False, timeout=30
        )
        return dict(json.loads(out.stdout))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def wait_until(check: object, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
