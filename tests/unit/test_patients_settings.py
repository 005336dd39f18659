"""The break-the-glass duration setting: typed, bounded, and a clear error at `his up`."""

from __future__ import annotations

import pytest

from his.cli.supervisor.plan import service_settings_env
from his.infra.procs import ServerStartError
from his.patients.settings import PatientsSettings


def test_emergency_access_lasts_an_hour_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIS_EMERGENCY_ACCESS_MINUTES", raising=False)
    assert PatientsSettings(_env_file=None).emergency_access_minutes == 60.0
    monkeypatch.setenv("HIS_EMERGENCY_ACCESS_MINUTES", "0.5")
    assert service_settings_env("patients")["HIS_EMERGENCY_ACCESS_MINUTES"] == "0.5"


@pytest.mark.parametrize("value", ["0", "-5", "1441", "an hour"])
def test_a_bad_duration_is_one_clear_error_at_start(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HIS_EMERGENCY_ACCESS_MINUTES", value)
    with pytest.raises(ServerStartError, match="HIS_EMERGENCY_ACCESS_MINUTES"):
        service_settings_env("patients")
