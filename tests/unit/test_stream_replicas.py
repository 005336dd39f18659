"""Stream replicas are a typed setting (HIS_STREAM_REPLICAS), and a NATS URL may list a cluster."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from his.kernel.bus import server_urls
from his.kernel.config import Settings
from his.kernel.streams import stream_configs


def test_streams_have_one_replica_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIS_STREAM_REPLICAS", raising=False)
    settings = Settings(_env_file=None)
    assert settings.stream_replicas == 1
    assert {c.num_replicas for c in stream_configs(["patients"], replicas=settings.stream_replicas)} == {1}


def test_three_replicas_apply_to_every_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIS_STREAM_REPLICAS", "3")
    settings = Settings(_env_file=None)
    configs = stream_configs(["patients", "billing"], replicas=settings.stream_replicas)
    assert len(configs) == 5
    assert {c.num_replicas for c in configs} == {3}


@pytest.mark.parametrize("value", ["0", "6", "three"])
def test_an_impossible_replica_count_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HIS_STREAM_REPLICAS", value)
    with pytest.raises(ValidationError, match="stream_replicas"):
        Settings(_env_file=None)


def test_a_nats_url_may_list_every_server_of_a_cluster() -> None:
    assert server_urls("nats://a:4222") == ["nats://a:4222"]
    assert server_urls(" tls://a:4222, tls://b:4222 ,tls://c:4222") == ["tls://a:4222", "tls://b:4222", "tls://c:4222"]
    with pytest.raises(ValueError, match="no NATS server"):
        server_urls(" , ")
