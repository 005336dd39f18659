"""docs/walkthrough.md works as written: its shell blocks, run in order by bash against `his up`."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.e2e.harness import ADMIN, Hospital

DOC = Path(__file__).parents[2] / "docs" / "walkthrough.md"
#: The lines a reader adapts to their hospital, and what they become for the one under test.
SETTINGS = {
    "GW": "http://127.0.0.1:4004",
    "ADMIN_EMAIL": "admin@his.local",
    "ADMIN_PASSWORD": "'the password you set in HIS_ADMIN_PASSWORD'",
}


def script(gateway: str) -> str:
    text = "\n".join(re.findall(r"^```sh\n(.*?)^```$", DOC.read_text(), re.S | re.M))
    ours = {"GW": gateway, "ADMIN_EMAIL": ADMIN[0], "ADMIN_PASSWORD": f"'{ADMIN[1]}'"}
    for name, value in SETTINGS.items():
        line = re.compile(rf"^{name}={re.escape(value)}(?=\s|$)", re.M)
        assert line.search(text), f"the walk-through no longer sets {name}={value}"
        text = line.sub(f"{name}={ours[name]}", text)
    return text


def test_the_walkthrough_runs_as_written(shared_hospital: Hospital, tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", "-c", script(shared_hospital.gateway)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    invoice = json.loads(done.stdout.strip().splitlines()[-1])
    assert [line["code"] for line in invoice["lines"]] == ["consultation.consultation"]
    assert invoice["payer"] == "SELF" and invoice["patient_share"] == invoice["total"] != "0.00"
