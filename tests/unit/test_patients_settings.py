"""The break-the-glass settings (duration, the per-clinician limit and its window): typed, bounded,
and a clear error at `his up`."""

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


def test_more_than_three_grants_in_24_hours_alert_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HIS_EMERGENCY_ACCESS_LIMIT", "HIS_EMERGENCY_ACCESS_WINDOW_HOURS"):
        monkeypatch.delenv(name, raising=False)
    settings = PatientsSettings(_env_file=None)
    assert (settings.emergency_access_limit, settings.emergency_access_window_hours) == (3, 24.0)
    monkeypatch.setenv("HIS_EMERGENCY_ACCESS_LIMIT", "5")
    monkeypatch.setenv("HIS_EMERGENCY_ACCESS_WINDOW_HOURS", "0.5")
    env = service_settings_env("patients")
    assert (env["HIS_EMERGENCY_ACCESS_LIMIT"], env["HIS_EMERGENCY_ACCESS_WINDOW_HOURS"]) == ("5", "0.5")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HIS_EMERGENCY_ACCESS_LIMIT", "0"),
        ("HIS_EMERGENCY_ACCESS_LIMIT", "three"),
        ("HIS_EMERGENCY_ACCESS_WINDOW_HOURS", "0"),
        ("HIS_EMERGENCY_ACCESS_WINDOW_HOURS", "721"),
    ],
)
def test_a_bad_limit_or_window_is_one_clear_error_at_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ServerStartError, match=name):
        service_settings_env("patients")
