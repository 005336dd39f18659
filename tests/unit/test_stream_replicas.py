"""Stream replicas are a typed setting (HIS_STREAM_REPLICAS), a NATS URL may list a cluster, and
declaring streams waits out a cluster that is still electing."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest
from nats.js.api import StreamConfig
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError, ServiceUnavailableError
from pydantic import ValidationError

from his.cli.settings import OperatorSettings
from his.kernel import streams as streams_module
from his.kernel.bus import server_urls
from his.kernel.streams import declare, stream_configs


def test_streams_have_one_replica_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIS_STREAM_REPLICAS", raising=False)
    settings = OperatorSettings(_env_file=None)
    assert settings.stream_replicas == 1
    assert {c.num_replicas for c in stream_configs(["patients"], replicas=settings.stream_replicas)} == {1}


def test_three_replicas_apply_to_every_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIS_STREAM_REPLICAS", "3")
    settings = OperatorSettings(_env_file=None)
    configs = stream_configs(["patients", "billing"], replicas=settings.stream_replicas)
    assert len(configs) == 5
    assert {c.num_replicas for c in configs} == {3}


@pytest.mark.parametrize("value", ["0", "6", "three"])
def test_an_impossible_replica_count_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HIS_STREAM_REPLICAS", value)
    with pytest.raises(ValidationError, match="stream_replicas"):
        OperatorSettings(_env_file=None)


def test_a_nats_url_may_list_every_server_of_a_cluster() -> None:
    assert server_urls("nats://a:4222") == ["nats://a:4222"]
    assert server_urls(" tls://a:4222, tls://b:4222 ,tls://c:4222") == ["tls://a:4222", "tls://b:4222", "tls://c:4222"]
    with pytest.raises(ValueError, match="no NATS server"):
        server_urls(" , ")


class ElectingJetStream:
    """JetStream of a cluster still electing: its first answers time out or are 503, yet a create
    that timed out happened all the same."""

    def __init__(self, silences: list[Exception | None]) -> None:
        self.silences = silences
        self.streams: dict[str, StreamConfig] = {}
        self.calls: list[str] = []
        self.bucket = False

    def _maybe_silent(self, call: str) -> None:
        self.calls.append(call)
        silence = self.silences.pop(0) if self.silences else None
        if silence is not None:
            raise silence

    async def stream_info(self, name: str) -> object:
        self._maybe_silent(f"info {name}")
        if name not in self.streams:
            raise NotFoundError(code=404, err_code=10059, description="stream not found")
        return self.streams[name]

    async def add_stream(self, config: StreamConfig) -> None:
        self.streams[config.name or ""] = config  # it happens even when the answer is lost
        self._maybe_silent(f"add {config.name}")

    async def update_stream(self, config: StreamConfig) -> None:
        self._maybe_silent(f"update {config.name}")
        self.streams[config.name or ""] = config

    async def key_value(self, bucket: str) -> object:
        self._maybe_silent("kv")
        if not self.bucket:
            raise BucketNotFoundError()
        return object()

    async def create_key_value(self, **kw: object) -> None:
        self._maybe_silent("create kv")
        self.bucket = True


def _declare(js: ElectingJetStream, patience: float) -> None:
    asyncio.run(declare(js, ["patients"], replicas=3, patience=patience))  # type: ignore[arg-type]


def test_declaring_streams_waits_out_a_cluster_that_is_electing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams_module, "FIRST_PAUSE", 0.0)
    not_ready = ServiceUnavailableError(code=503, description="JetStream not ready")
    js = ElectingJetStream([not_ready, None, nats.errors.TimeoutError(), None, None, nats.errors.TimeoutError()])
    _declare(js, patience=60)
    assert set(js.streams) == {"HIS_PATIENTS", "HIS_DLQ", "HIS_REPLAY", "HIS_ADVISORIES"}
    assert {c.num_replicas for c in js.streams.values()} == {3}
    assert js.bucket
    # The create whose answer was lost is looked up again, not made twice.
    assert js.calls[:5] == [
        "info HIS_PATIENTS",
        "info HIS_PATIENTS",
        "add HIS_PATIENTS",
        "info HIS_PATIENTS",
        "update HIS_PATIENTS",
    ]


def test_declaring_streams_gives_up_after_its_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams_module, "FIRST_PAUSE", 0.0)
    js = ElectingJetStream([nats.errors.TimeoutError()])
    with pytest.raises(nats.errors.TimeoutError):
        _declare(js, patience=0)
    assert js.calls == ["info HIS_PATIENTS"]


def test_a_refusal_is_not_retried() -> None:
    js = ElectingJetStream([APIError(code=400, err_code=10052, description="replicas > 1 not supported")])
    with pytest.raises(APIError, match="replicas"):
        _declare(js, patience=60)
    assert js.calls == ["info HIS_PATIENTS"]
