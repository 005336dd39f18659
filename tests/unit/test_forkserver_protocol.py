"""The fork server's messages: one JSON object per packet, checked strictly on the way in."""

from __future__ import annotations

import pytest

from his.infra.forkserver.protocol import (
    MAX_MESSAGE,
    Exited,
    Kill,
    ProtocolError,
    Refused,
    Spawn,
    Started,
    decode,
    encode,
    exit_code,
)


@pytest.mark.parametrize(
    "message",
    [
        Spawn(1, "patients", "his.patients", {"HIS_SERVICE": "patients", "PATH": "/usr/bin", "EMPTY": ""}),
        Kill(4321, 15),
        Kill(4321, 9, group=True),
        Started(1, 4321),
        Refused(2, "fork: out of memory"),
        Exited(4321, -9),
        Exited(4321, 3),
    ],
)
def test_every_message_survives_a_round_trip(message: object) -> None:
    assert decode(encode(message)) == message  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"not json",
        b"[1, 2]",
        b'{"op": "reboot"}',
        b'{"pid": 1, "code": 0}',
        b'{"op": "exited", "pid": 1}',
        b'{"op": "exited", "pid": 1, "code": 0, "extra": 1}',
        b'{"op": "exited", "pid": "1", "code": 0}',
        b'{"op": "exited", "pid": true, "code": 0}',
        b'{"op": "kill", "pid": 1, "sig": 15, "group": 1}',
        b'{"op": "spawn", "id": 1, "name": "a", "module": "m", "env": {"A": 1}}',
        b'{"op": "spawn", "id": 1, "name": "a", "module": "m", "env": ["A=1"]}',
    ],
)
def test_anything_else_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(data)


def test_a_spawn_too_large_for_one_packet_is_refused_before_sending() -> None:
    with pytest.raises(ProtocolError, match="larger than"):
        encode(Spawn(1, "big", "m", {"X": "x" * MAX_MESSAGE}))


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (3, 3), (256, 0), (-1, 255), (True, 1)])
def test_exit_codes_follow_the_interpreter(code: object, status: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(code) == status


def test_a_message_as_exit_code_is_printed_and_means_failure(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code("cannot start: no certificate") == 1
    assert "cannot start: no certificate" in capsys.readouterr().err
