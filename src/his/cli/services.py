"""The processes that make up a hospital, in start order, and the fork server that starts them."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from his.infra.forkserver import ForkServer

SERVICES = (
    "identity",
    "audit",
    "patients",
    "practitioners",
    "scheduling",
    "admissions",
    "laboratory",
    "inventory",
    "billing",
    "notifications",
)
GATEWAY = "gateway"
#: What the fork server imports once before it forks the services and the gateway: everything
#: their ``python -m his.<name>`` imports before serving (see his.infra.forkserver).
PRELOAD = (*(f"his.{s}.app" for s in SERVICES), "his.gateway.app", "his.kernel.service", "his.kernel.rpc")


def durables() -> dict[str, tuple[str, ...]]:
    """Each service's durable consumers, the only ones NATS lets it read (``his.kernel.bus``)."""
    return {s: importlib.import_module(f"his.{s}.app").build().durables() for s in SERVICES}


def consumers_by_event() -> dict[str, list[str]]:
    """Each event type and the durable consumers (``<service>_<handler>``) that apply it."""
    found: dict[str, list[str]] = {}
    for s in SERVICES:
        for sub in importlib.import_module(f"his.{s}.app").build().subscriptions:
            found.setdefault(sub.event_type, []).append(sub.name)
    return found


def start_forkserver(data_dir: Path) -> ForkServer:
    """The fork server of the services and the gateway; it imports their modules from now on.

    Its environment is the caller's without HIS_* (each child gets exactly its own), with the
    data directory, so that the hospital's processes can be told apart by it. Raises
    ``ForkServerError``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIS_")}
    env.update(HIS_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    return ForkServer.start(PRELOAD, env=env)
