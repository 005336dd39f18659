"""Settings and helpers a cluster deployment relies on: stream replicas, migration passwords, probes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from his.cli.migrate import MigrateError, passwords
from his.cli.settings import OperatorSettings
from his.kernel import probe
from his.kernel.streams import stream_configs


def test_streams_have_one_replica_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIS_STREAM_REPLICAS", raising=False)
    replicas = OperatorSettings(_env_file=None).stream_replicas
    assert {c.num_replicas for c in stream_configs(["patients"], replicas=replicas)} == {1}


def test_stream_replicas_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIS_STREAM_REPLICAS", "3")
    replicas = OperatorSettings(_env_file=None).stream_replicas
    configs = stream_configs(["patients", "billing"], replicas=replicas)
    assert replicas == 3
    assert {c.num_replicas for c in configs} == {3}  # every stream, the DLQ and advisories included


@pytest.mark.parametrize("value", ["0", "6", "three"])
def test_stream_replicas_refuse_nonsense(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HIS_STREAM_REPLICAS", value)
    with pytest.raises(ValidationError):
        OperatorSettings(_env_file=None)


def test_migration_needs_a_password_per_service(tmp_path: Path) -> None:
    (tmp_path / "patients").write_text("s3cret\n")
    assert passwords(tmp_path, ("patients",)) == {"patients": "s3cret"}
    (tmp_path / "billing").write_text("  \n")
    with pytest.raises(MigrateError, match="billing"):
        passwords(tmp_path, ("patients", "billing"))
    with pytest.raises(MigrateError, match="audit"):
        passwords(tmp_path, ("audit",))


def test_probe_speaks_plain_http_without_an_identity() -> None:
    assert probe.context({"HIS_TLS_CERT": "/c.pem"}) is None
