"""The run-state file that ``his up`` writes for ``his status`` and ``his dlq``."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter

from his.kernel.pki import WorkloadIdentity


@dataclass(frozen=True)
class ServiceProcess:
    """A service (or the gateway) as ``his up`` started it."""

    url: str
    #: None while it is not running (between a crash and its restart).
    pid: int | None
    #: Its gRPC port, if it serves gRPC.
    grpc_port: int | None


@dataclass(frozen=True)
class RunState:
    """What a running ``his up`` tells the operator's commands (``run/state.json``)."""

    supervisor_pid: int
    gateway_url: str
    admin_dsn: str
    nats_url: str
    #: NATS's monitoring endpoint, if it has one.
    nats_monitor_url: str | None
    pki_dir: str
    #: PostgreSQL's and NATS's processes.
    infra_pids: tuple[int, ...]
    forkserver_pid: int | None
    #: By name, in the order they were started.
    services: dict[str, ServiceProcess]


_RUN_STATE = TypeAdapter(RunState)


def path(data_dir: Path) -> Path:
    return data_dir / "run" / "state.json"


def write(data_dir: Path, state: RunState) -> None:
    p = path(data_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(state), indent=2))
    tmp.chmod(0o600)
    os.replace(tmp, p)


def read(data_dir: Path) -> RunState | None:
    """The run state, or None when there is none (or it is not one: validated on the way in)."""
    try:
        return _RUN_STATE.validate_json(path(data_dir).read_bytes())
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        return None


def remove(data_dir: Path) -> None:
    path(data_dir).unlink(missing_ok=True)


def operator_identity(data_dir: Path) -> WorkloadIdentity | None:
    """The certificate `his up` issued for operator commands (`his status`, `his dlq`)."""
    st = read(data_dir)
    pki = Path((st.pki_dir if st is not None else "") or data_dir / "pki")
    ident = WorkloadIdentity(pki / "operator.crt", pki / "operator.key", pki / "ca.crt")
    return ident if all(p.exists() for p in (ident.cert, ident.key, ident.ca)) else None
