"""Each process reads only its own settings: a service's hold nothing of the gateway's or of the
operator's, and `his up` hands the gateway its limits under the variables operators set."""

from __future__ import annotations

import pytest

from his.cli.settings import OperatorSettings
from his.cli.supervisor.plan import service_settings_env
from his.gateway.settings import GatewaySettings
from his.infra.procs import ServerStartError
from his.kernel.config import ServiceSettings


def test_a_services_settings_hold_nothing_of_the_gateways_or_the_operators() -> None:
    fields = set(ServiceSettings.model_fields)
    assert not {f for f in fields if f.startswith("gateway_")}
    assert not fields & {"ops_port", "admin_email", "admin_password", "database_url", "nats_url"}
    assert not fields & {"stream_replicas", "log_max_mb", "log_files"}
    assert {"admin_email", "admin_password", "gateway_port", "stream_replicas"} <= set(OperatorSettings.model_fields)


def test_the_gateway_reads_its_limits_from_the_variables_operators_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIS_GATEWAY_RATE_PER_IP", "7.5")
    monkeypatch.setenv("HIS_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS", "9")
    settings = GatewaySettings(_env_file=None)
    assert settings.gateway_rate_per_ip == 7.5
    assert settings.gateway_max_connections_per_address == 9


def test_his_up_hands_the_gateway_its_own_settings_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIS_GATEWAY_BURST", "321")
    monkeypatch.setenv("HIS_ADMIN_PASSWORD", "violet kettle under the moon")
    env = service_settings_env("gateway")
    assert env["HIS_GATEWAY_BURST"] == "321"
    assert env["HIS_GATEWAY_RATE_PER_IP"] == "50.0"
    assert "HIS_ADMIN_PASSWORD" not in env
    assert "HIS_HOST" not in env  # what every process shares, the plan sets


def test_a_bad_gateway_setting_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIS_GATEWAY_BURST", "many")
    with pytest.raises(ServerStartError, match="invalid gateway settings: HIS_GATEWAY_BURST"):
        service_settings_env("gateway")
