"""`his up` refuses an administrator it could not create before it starts anything, saying why."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HIS = Path(sys.executable).parent / "his"


@pytest.mark.parametrize(
    ("email", "password", "reason"),
    [
        ("admin@his.local", "short-pw1", "at least 12 characters"),
        ("admin@his.local", "password1234", "too common"),
        ("nurse.ayse@his.local", "nurse.ayse-2024!x", "must not contain the e-mail address"),
        ("chief@his.local", "the-Administrator-42", "must not contain your name"),
        ("not-an-address", "violet kettle under the moon", "not a valid address"),
    ],
)
def test_a_bad_administrator_is_refused_before_any_server_starts(
    tmp_path: Path, email: str, password: str, reason: str
) -> None:
    data = tmp_path / "his"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIS_")}
    env |= {
        "HIS_DATA_DIR": str(data),
        "HIS_GATEWAY_PORT": "1",
        "HIS_ADMIN_EMAIL": email,
        "HIS_ADMIN_PASSWORD": password,
    }
    started = time.monotonic()
    done = subprocess.run([HIS, "up"], env=env, capture_output=True, text=True, timeout=60, check=False)
    took = time.monotonic() - started
    assert done.returncode == 2, done.stdout + done.stderr
    said = " ".join(done.stderr.split())
    assert reason in said and "HIS_ADMIN_PASSWORD" in said and "Nothing was started" in said
    assert not data.exists(), "the data directory was created: something started"
    # Under a second on an idle machine (interpreter start and the policy check); the bound leaves
    # room for a busy one, and is far below a start of PostgreSQL, NATS and the services.
    assert took < 5, took
