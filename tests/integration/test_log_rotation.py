"""`his up` keeps each service's log file bounded: rotated at a size, a fixed number kept."""

from __future__ import annotations

from pathlib import Path

from his.cli.supervisor.console import ChildOutput
from his.infra import nats as nats_infra
from his.infra.procs import RotatingLog
from tests.support.waiting import wait_until


def test_a_service_log_rotates_and_keeps_the_newest_files(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "patients.log"
    out = ChildOutput(log, max_bytes=1000, keep=3)
    lines = [f'{{"message": "line {i:05d}", "padding": "{"x" * 60}"}}' for i in range(200)]
    for line in lines:
        out("patients", line)
    out.close()
    files = sorted(p.name for p in log.parent.iterdir())
    assert files == ["patients.log", "patients.log.1", "patients.log.2", "patients.log.3"]
    assert all(p.stat().st_size <= 1000 + 100 for p in log.parent.iterdir())
    kept = [
        ln
        for name in ("patients.log.3", "patients.log.2", "patients.log.1", "patients.log")
        for ln in (log.parent / name).read_text().splitlines()
    ]
    assert kept == lines[-len(kept) :]  # the newest lines, in order, none lost between files


def test_a_restarted_hospital_appends_and_counts_what_is_there(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    log.write_text("x" * 900 + "\n")
    out = ChildOutput(log, max_bytes=1000, keep=2)
    out("gateway", "y" * 200)
    out.close()
    assert (tmp_path / "gateway.log.1").read_text().startswith("x" * 900)
    assert log.read_text() == ""


def test_the_embedded_servers_output_rotates_too(tmp_path: Path) -> None:
    """NATS's (and PostgreSQL's) output reaches the log through the same rotation as a service's."""
    log = tmp_path / "logs" / "nats.log"
    proc, _ = nats_infra.start(tmp_path / "nats", echo=RotatingLog(log, max_bytes=400, keep=2))
    try:
        wait_until((log.parent / "nats.log.2").exists, timeout=10, what="nats.log rotated twice")
    finally:
        proc.stop()
    assert sorted(p.name for p in log.parent.iterdir()) == ["nats.log", "nats.log.1", "nats.log.2"]
    assert "Server is ready" in "".join(p.read_text() for p in log.parent.iterdir())
