"""The processes that make up a hospital, in start order, the settings class of each, and the fork
server that starts them. The one place of `his up` that names the services' modules."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import cast

from pydantic_settings import BaseSettings

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
#: The staff console: a process with its own schema (its sessions) behind the gateway, calling
#: the public API like any client (docs/adr/0027). Not a service: no events, no gRPC.
CONSOLE = "console"
#: What the fork server imports once before it forks the services and the gateway: everything
#: their ``python -m his.<name>`` imports before serving (see his.infra.forkserver).
PRELOAD = (
    *(f"his.{s}.app" for s in SERVICES),
    "his.gateway.app",
    "his.console.app",
    "his.kernel.service",
    "his.kernel.rpc",
)


#: The settings class of each process that has its own (``module:Class``): `his up` reads and
#: checks it, then hands its values to that process alone. The others get the shared ones only.
SETTINGS = {
    "identity": "his.identity.settings:IdentitySettings",
    "patients": "his.patients.settings:PatientsSettings",
    "notifications": "his.notifications.settings:NotificationsSettings",
    GATEWAY: "his.gateway.settings:GatewaySettings",
}


def settings_class(name: str) -> type[BaseSettings] | None:
    """The settings class of process ``name`` (``SETTINGS``), or None: it has none of its own."""
    if name not in SETTINGS:
        return None
    module, attribute = SETTINGS[name].split(":")
    return cast(type[BaseSettings], getattr(importlib.import_module(module), attribute))


def durables() -> dict[str, dict[str, str]]:
    """Each service's durable consumers, each with the stream it reads: the only ones NATS lets
    it read (``his.kernel.bus``)."""
    return {s: importlib.import_module(f"his.{s}.app").build().durables() for s in SERVICES}


def consumers_by_event() -> dict[str, list[str]]:
    """Each event type and the durable consumers (``<service>_<handler>``) that apply it."""
    found: dict[str, list[str]] = {}
    for s in SERVICES:
        for sub in importlib.import_module(f"his.{s}.app").build().subscriptions:
            for subject in sub.subjects:  # its earlier versions' too, while it still reads them
                found.setdefault(subject, []).append(sub.name)
    return found


def start_forkserver(data_dir: Path) -> ForkServer:
    """The fork server of the services and the gateway; it imports their modules from now on.

    Its environment is the caller's without HIS_* (each child gets exactly its own), with the
    data directory, so that the hospital's processes can be told apart by it. Raises
    ``ForkServerError``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIS_")}
    env.update(HIS_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    return ForkServer.start(PRELOAD, env=env)
