"""The run-state file that ``his up`` writes for ``his status`` and ``his dlq``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from his.kernel.pki import WorkloadIdentity


def path(data_dir: Path) -> Path:
    return data_dir / "run" / "state.json"


def write(data_dir: Path, state: dict[str, Any]) -> None:
    p = path(data_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.chmod(0o600)
    os.replace(tmp, p)


def read(data_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path(data_dir).read_text()))
    except (OSError, ValueError):
        return None


def remove(data_dir: Path) -> None:
    path(data_dir).unlink(missing_ok=True)


def operator_identity(data_dir: Path) -> WorkloadIdentity | None:
    """The certificate `his up` issued for operator commands (`his status`, `his dlq`)."""
    st = read(data_dir) or {}
    pki = Path(st.get("pki_dir") or data_dir / "pki")
    ident = WorkloadIdentity(pki / "operator.crt", pki / "operator.key", pki / "ca.crt")
    return ident if all(p.exists() for p in (ident.cert, ident.key, ident.ca)) else None
