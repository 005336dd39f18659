"""`his up` gives the key of a lab result's sealed content to the four services that seal or open
it, and to no other process: the plan of the children, over a data directory of the test's (it
binds no port but checks that some are free, and writes the key under the data directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from his.cli.services import CONSOLE, GATEWAY, SERVICES
from his.cli.settings import OperatorSettings
from his.cli.supervisor.plan import plan_children
from his.cli.supervisor.stack import Stack
from his.infra import nats as nats_infra
from his.kernel.crypto import new_key_text
from his.kernel.pki import WorkloadIdentity
from his.kernel.sealing import Seal


def planned(tmp_path: Path) -> dict[str, dict[str, str]]:
    settings = OperatorSettings(data_dir=tmp_path, gateway_port=nats_infra.free_port(), _env_file=None)
    stack = Stack(settings, admin_dsn="postgresql://his_admin:x@127.0.0.1:1/his", nats_url="tls://127.0.0.1:1")
    for name in (*SERVICES, CONSOLE, GATEWAY):
        stack.identities[name] = WorkloadIdentity(tmp_path / f"{name}.crt", tmp_path / f"{name}.key", tmp_path / "ca")
    plan_children(stack)
    return {c.name: c.env for c in stack.children}


def test_the_four_services_get_the_key_generated_once_and_no_other_process_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HIS_LAB_SEAL_KEYS", raising=False)
    envs = planned(tmp_path)
    holders = {name for name, env in envs.items() if "HIS_LAB_SEAL_KEYS" in env}
    assert holders == {"laboratory", "billing", "inventory", "notifications"}
    key = (tmp_path / "secrets" / "lab-seal-key").read_text().strip()
    assert {envs[n]["HIS_LAB_SEAL_KEYS"] for n in holders} == {key}
    assert not any(key in value for name, env in envs.items() if name not in holders for value in env.values())
    Seal("HIS_LAB_SEAL_KEYS", key).require("laboratory")
    assert planned(tmp_path)["billing"]["HIS_LAB_SEAL_KEYS"] == key  # kept: the next start opens the same boxes
    rotated = f"{new_key_text()},{key}"  # an operator's keys (a rotation) take the generated one's place
    monkeypatch.setenv("HIS_LAB_SEAL_KEYS", rotated)
    assert {planned(tmp_path)[n]["HIS_LAB_SEAL_KEYS"] for n in holders} == {rotated}
