"""The fork server's messages: one UTF-8 JSON object per ``SOCK_SEQPACKET`` packet, checked
strictly on the way in (pure: no IO)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass

#: Largest message (a spawn request with its environment); larger ones are refused.
MAX_MESSAGE = 1 << 20


class ProtocolError(ValueError):
    """A message that is not one of the protocol's."""


@dataclass(frozen=True)
class Spawn:
    """Caller → server: fork a child that runs ``module`` as ``__main__``; the packet carries its output fd."""

    id: int
    name: str
    module: str
    env: dict[str, str]
    #: The user and group the child runs as (it drops root's groups), or -1: the server's own.
    uid: int = -1
    gid: int = -1


@dataclass(frozen=True)
class Kill:
    """Caller → server: send ``sig`` to a child (its whole process group if ``group``)."""

    pid: int
    sig: int
    group: bool = False


@dataclass(frozen=True)
class Started:
    """Server → caller: the child of request ``id`` runs as ``pid``."""

    id: int
    pid: int


@dataclass(frozen=True)
class Refused:
    """Server → caller: request ``id`` could not be carried out."""

    id: int
    error: str


@dataclass(frozen=True)
class Exited:
    """Server → caller: child ``pid`` exited; ``code`` as ``Popen.returncode`` (negative: a signal)."""

    pid: int
    code: int


Message = Spawn | Kill | Started | Refused | Exited
_OPS: dict[str, type[Message]] = {
    "spawn": Spawn,
    "kill": Kill,
    "started": Started,
    "refused": Refused,
    "exited": Exited,
}
_FIELDS: dict[str, dict[str, type]] = {
    "spawn": {"id": int, "name": str, "module": str, "env": dict, "uid": int, "gid": int},
    "kill": {"pid": int, "sig": int, "group": bool},
    "started": {"id": int, "pid": int},
    "refused": {"id": int, "error": str},
    "exited": {"pid": int, "code": int},
}


def encode(message: Message) -> bytes:
    """One packet: ``{"op": …, fields…}`` as UTF-8 JSON."""
    op = next(name for name, cls in _OPS.items() if isinstance(message, cls))
    data = json.dumps({"op": op, **asdict(message)}, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"{op} message of {len(data)} bytes is larger than {MAX_MESSAGE}")
    return data


def decode(data: bytes) -> Message:
    """The message in one packet; ``ProtocolError`` for anything else."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("op") not in _OPS:
        raise ProtocolError("no known op")
    op = raw.pop("op")
    fields = _FIELDS[op]
    if set(raw) != set(fields):
        raise ProtocolError(f"{op}: fields {sorted(raw)}, expected {sorted(fields)}")
    for key, kind in fields.items():
        value = raw[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ProtocolError(f"{op}.{key}: {type(value).__name__}, expected {kind.__name__}")
    if op == "spawn" and not all(isinstance(k, str) and isinstance(v, str) for k, v in raw["env"].items()):
        raise ProtocolError("spawn.env: names and values must be strings")
    return _OPS[op](**raw)


def exit_code(code: object) -> int:
    """The status a ``SystemExit(code)`` gives a process, as the interpreter computes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1
