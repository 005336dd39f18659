"""What `his up` writes under the data directory is its owner's alone, from the first byte on;
and the NATS monitoring port, which asks no client certificate, listens on the loopback address
whatever address the clients' port binds. (Under a real `his up`: tests/e2e/test_workload_identity.py.)"""

from __future__ import annotations

import stat
from pathlib import Path

from his.cli.supervisor.datadir import PRIVATE, make_private, secret
from his.infra import nats as nats_infra
from his.infra.procs import RotatingLog


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_private_directories_are_made_0700_and_what_an_earlier_version_left_open_is_closed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    (data / "logs").chmod(0o755)
    (data / "logs" / "patients.log").write_text("old\n")
    (data / "logs" / "patients.log").chmod(0o644)
    (data / "pki").mkdir()
    (data / "pki" / "ca.crt").write_text("certificate")
    (data / "pki" / "ca.crt").chmod(0o644)
    make_private(data)
    assert {name: mode(data / name) for name in PRIVATE} == dict.fromkeys(PRIVATE, 0o700)
    assert mode(data / "logs" / "patients.log") == 0o600
    assert mode(data / "audit" / "checkpoints.jsonl") == 0o600  # created before the first checkpoint
    assert mode(data / "pki" / "ca.crt") == 0o644  # public by nature, behind a closed directory


def test_secrets_logs_and_the_nats_configuration_are_created_0600(tmp_path: Path) -> None:
    value = secret(tmp_path, "db-patients")
    assert secret(tmp_path, "db-patients") == value
    assert mode(tmp_path / "secrets") == 0o700 and mode(tmp_path / "secrets" / "db-patients") == 0o600
    log = RotatingLog(tmp_path / "logs" / "nats.log", max_bytes=10, keep=2)
    log.write("more than ten bytes")  # rotated: the new file is private too
    log.close()
    assert mode(tmp_path / "logs" / "nats.log") == 0o600
    assert mode(tmp_path / "logs" / "nats.log.1") == 0o600
    conf = nats_infra.write_config(tmp_path, "0.0.0.0", 4222, 8222)
    assert mode(conf) == 0o600


def test_the_nats_monitoring_port_listens_on_the_loopback_address_whatever_the_host(tmp_path: Path) -> None:
    conf = nats_infra.write_config(tmp_path, "0.0.0.0", 4222, 8222).read_text()
    assert "listen: 0.0.0.0:4222" in conf
    assert "http: 127.0.0.1:8222" in conf.splitlines()
    assert nats_infra.NatsLocation("0.0.0.0", 4222, 8222, tls=True).monitor_url == "https://127.0.0.1:8222"
