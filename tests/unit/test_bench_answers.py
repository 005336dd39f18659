"""What the benchmarks read from other processes is checked on the way in (no IO but a temporary file).

A booking's answer, a patient read's answer, the bare endpoint's request body, a JetStream
message for the raw consumer and ``his up``'s run-state file: each is taken as what it should
be, and anything else is refused the way the benchmark counts it (a failed request, a 422, a
failed suite), never passed on as an untyped value.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from his.benchmarks import bare
from his.benchmarks.booking import booked
from his.benchmarks.harness import BenchmarkError
from his.benchmarks.hospital import PrivateHospital
from his.benchmarks.inbox import effect_of
from his.benchmarks.reads import is_patient
from his.benchmarks.seed import text
from his.cli import state
from his.kernel.json import Json, JsonObject

BOOKING_ID = "7d0f3b8e-3c55-4d5e-9d7b-0c6f4f3f2a10"


@pytest.mark.parametrize(
    ("payload", "ok"),
    [
        (b'{"id": "%s", "status": "booked"}' % BOOKING_ID.encode(), True),
        (b'{"id": "%s", "status": "cancelled"}' % BOOKING_ID.encode(), False),
        (b'{"id": "not a uuid", "status": "booked"}', False),
        (b'{"id": 7, "status": "booked"}', False),
        (b'{"status": "booked"}', False),
        (b'[{"id": "%s", "status": "booked"}]' % BOOKING_ID.encode(), False),
        (b'"booked"', False),
        (b"<html>busy</html>", False),
    ],
)
def test_a_booking_counts_only_when_answered_with_its_id_and_booked(payload: bytes, ok: bool) -> None:
    assert booked(payload) is ok


def test_a_patient_read_counts_only_when_it_answers_the_patient_asked() -> None:
    check = is_patient(["a", "b"])
    assert check(1, 200, b'{"id": "b", "family_name": "Reader1"}')
    assert not check(0, 200, b'{"id": "b"}')
    assert not check(0, 404, b'{"id": "a"}')
    assert not check(0, 200, b'["a"]')
    assert not check(0, 200, b"{}")
    assert not check(0, 200, b"not json")


def test_the_bare_endpoint_reads_a_booking_body_or_refuses_it() -> None:
    body: JsonObject = {
        "patient_id": BOOKING_ID,
        "practitioner_id": BOOKING_ID,
        "service": "consultation",
        "start": "2030-01-01T09:00:00+00:00",
        "end": "2030-01-01T09:20:00+00:00",
    }
    key = uuid.UUID(BOOKING_ID)
    assert bare.booking_row(body) == (
        key,
        key,
        "consultation",
        datetime(2030, 1, 1, 9, tzinfo=UTC),
        datetime(2030, 1, 1, 9, 20, tzinfo=UTC),
    )
    bad_bodies: list[Json] = [
        {**body, "start": 9},
        {**body, "patient_id": "x"},
        {k: v for k, v in body.items() if k != "end"},
        [body],
    ]
    for bad in bad_bodies:
        with pytest.raises((ValueError, KeyError, TypeError)):
            bare.booking_row(bad)


def test_the_raw_consumer_reads_the_effect_of_a_work_queued_envelope() -> None:
    event_id, work_id = uuid.uuid4(), uuid.uuid4()
    doc: JsonObject = {
        "id": str(event_id),
        "type": "his.bench.work.queued.v1",
        "data": {"work_id": str(work_id), "seq": 3},
    }
    assert effect_of(doc) == (event_id, work_id, 3)
    with pytest.raises(BenchmarkError):
        effect_of({**doc, "data": {"work_id": str(work_id), "seq": "3"}})
    with pytest.raises(ValueError):
        effect_of({**doc, "data": None})


def test_the_run_state_file_is_checked_when_read(tmp_path: Path) -> None:
    hospital = PrivateHospital(tmp_path)
    with pytest.raises(ValueError):
        hospital.state()  # his up has not written it yet
    state.write(
        hospital.data,
        state.RunState(
            supervisor_pid=10,
            gateway_url="http://127.0.0.1:8000",
            admin_dsn="postgresql://admin@localhost/his",
            nats_url="tls://127.0.0.1:4222",
            nats_monitor_url=None,
            pki_dir=str(hospital.data / "pki"),
            infra_pids=(11, 12),
            forkserver_pid=13,
            services={
                "patients": state.ServiceProcess("https://127.0.0.1:9001", 14, 9101),
                "billing": state.ServiceProcess("https://127.0.0.1:9002", None, None),
            },
        ),
    )
    assert hospital.admin_dsn == "postgresql://admin@localhost/his"
    assert hospital.service_url("patients") == "https://127.0.0.1:9001"
    procs = hospital.processes()
    assert procs["patients"] == 14 and procs["forkserver"] == 13
    assert "billing" not in procs
    written = json.loads(state.path(hospital.data).read_text())
    state.path(hospital.data).write_text(json.dumps({**written, "admin_dsn": None}))
    with pytest.raises(ValueError):
        _ = hospital.admin_dsn


def test_seeding_takes_ids_and_tokens_only_as_strings() -> None:
    assert text({"id": BOOKING_ID, "mrn": 7}, "id") == BOOKING_ID
    with pytest.raises(BenchmarkError):
        text({"id": BOOKING_ID, "mrn": 7}, "mrn")
    with pytest.raises(KeyError):
        text({}, "access_token")
