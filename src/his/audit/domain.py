"""The audit chain: each record's hash covers its content and the previous record's hash. Pure.

``hash_n = SHA-256(hash_{n-1} || canonical JSON of record n, seq included)``, with 32 zero
bytes before the first record. Editing, deleting or swapping any record breaks every later
link; truncating the tail or re-forging the whole chain is caught by comparing with a head
checkpoint kept outside the database, authenticated with HMAC.

``flagged`` (emergency access) joined the record later. Records written before it have no
value and are hashed without it, exactly as they were; every newer record has true or false
and is hashed with it, so neither setting nor clearing a flag goes unseen.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

GENESIS = bytes(32)
FIELDS = (
    "seq",
    "event_id",
    "at",
    "source",
    "actor_id",
    "actor_roles",
    "patient_id",
    "action",
    "resource",
    "purpose",
    "outcome",
    "trace_id",
)


#: Purpose code of access under break-the-glass; such records are flagged for review.
EMERGENCY = "emergency"


@dataclass(frozen=True)
class Entry:
    """One recorded access to a patient's data, as the patient's trail shows it."""

    seq: int
    at: datetime
    #: The service that recorded it (``his.patients``, ``his.laboratory`` …).
    source: str
    actor_id: uuid.UUID
    actor_roles: tuple[str, ...]
    action: str
    resource: str
    purpose: str
    outcome: str
    flagged: bool


@dataclass(frozen=True)
class NewRecord:
    """One access to append to the chain: what happened, before the chain gives it a ``seq``."""

    #: The access's own id (unique in the chain: an event id, or a new one for this service's own).
    event_id: uuid.UUID
    at: datetime
    #: The service that recorded it (``his.patients``, ``his.laboratory`` …).
    source: str
    actor_id: uuid.UUID
    actor_roles: tuple[str, ...]
    patient_id: uuid.UUID | None
    action: str
    resource: str
    purpose: str
    outcome: str
    trace_id: str | None
    #: Emergency access (``is_flagged``); new records always have true or false, part of their hash.
    flagged: bool = False

    def content(self, seq: int) -> dict[str, object]:
        """The record at ``seq`` as the chain hashes it (``link``) and stores it."""
        return {
            "seq": seq,
            "event_id": self.event_id,
            "at": self.at,
            "source": self.source,
            "actor_id": self.actor_id,
            "actor_roles": list(self.actor_roles),
            "patient_id": self.patient_id,
            "action": self.action,
            "resource": self.resource,
            "purpose": self.purpose,
            "outcome": self.outcome,
            "trace_id": self.trace_id,
            "flagged": bool(self.flagged),
        }


class ChainRow(TypedDict):
    """A record as the chain holds it, what ``verify`` walks: its content, its place and its links.
    ``flagged`` is None on records written before the field existed (hashed without it)."""

    seq: int
    event_id: uuid.UUID
    at: datetime
    source: str
    actor_id: uuid.UUID
    actor_roles: list[str]
    patient_id: uuid.UUID | None
    action: str
    resource: str
    purpose: str
    outcome: str
    trace_id: str | None
    flagged: bool | None
    prev_hash: bytes
    hash: bytes


def is_flagged(action: str, purpose: str) -> bool:
    """Break-the-glass grants and every access made under one are flagged."""
    return action == "break_glass" or purpose == EMERGENCY


def canonical(record: Mapping[str, object]) -> bytes:
    doc = {
        k: (str(record[k]) if record[k] is not None and k not in ("seq", "actor_roles") else record[k]) for k in FIELDS
    }
    if record.get("flagged") is not None:
        doc["flagged"] = bool(record["flagged"])
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link(prev_hash: bytes, record: Mapping[str, object]) -> bytes:
    return hashlib.sha256(prev_hash + canonical(record)).digest()


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: bytes
    mac: bytes

    @staticmethod
    def mac_of(key: bytes, seq: int, head: bytes) -> bytes:
        return hmac.new(key, f"{seq}:{head.hex()}".encode(), hashlib.sha256).digest()

    @classmethod
    def make(cls, key: bytes, seq: int, head: bytes) -> Checkpoint:
        return cls(seq, head, cls.mac_of(key, seq, head))

    def authentic(self, key: bytes) -> bool:
        return hmac.compare_digest(self.mac, self.mac_of(key, self.seq, self.hash))

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "hash": self.hash.hex(), "mac": self.mac.hex()})

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        doc = json.loads(text)
        return cls(int(doc["seq"]), bytes.fromhex(doc["hash"]), bytes.fromhex(doc["mac"]))


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    problem: str = ""
    first_bad_seq: int | None = None


def _digest(value: object) -> bytes:
    """A hash column's value (``bytea``: bytes, or a memoryview of them)."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"a hash is bytes, not {type(value).__name__}")
    return bytes(value)


def verify(
    rows: Iterable[Mapping[str, object]], checkpoint: Checkpoint | None = None, key: bytes | None = None
) -> Verdict:
    """Walk the chain in ``seq`` order; name the first bad record."""
    prev, expected_seq = GENESIS, 1
    # A checkpoint of the empty chain (seq 0, as `his up` writes at first start) witnessed GENESIS.
    head_at_checkpoint = GENESIS if checkpoint is not None and checkpoint.seq == 0 else None
    for row in rows:
        seq = row["seq"]
        if not isinstance(seq, int):
            raise TypeError(f"a record's seq is an integer, not {type(seq).__name__}")
        if seq < expected_seq:
            return Verdict(False, expected_seq - 1, f"record {seq} is outside the chain", seq)
        if seq != expected_seq:
            return Verdict(False, expected_seq - 1, f"record {expected_seq} is missing (next is {seq})", expected_seq)
        if _digest(row["prev_hash"]) != prev:
            return Verdict(False, seq - 1, f"record {seq} does not follow record {seq - 1}", seq)
        if _digest(row["hash"]) != link(prev, row):
            return Verdict(False, seq - 1, f"record {seq} was altered", seq)
        prev = _digest(row["hash"])
        if checkpoint is not None and seq == checkpoint.seq:
            head_at_checkpoint = prev
        expected_seq += 1
    checked = expected_seq - 1
    if checkpoint is not None:
        if key is None or not checkpoint.authentic(key):
            return Verdict(False, checked, "the head checkpoint is not authentic", None)
        if checkpoint.seq > checked:
            return Verdict(
                False, checked, f"records {checked + 1}..{checkpoint.seq} were removed (truncated)", checked + 1
            )
        if head_at_checkpoint != checkpoint.hash:
            return Verdict(False, checked, f"the chain up to record {checkpoint.seq} was re-forged", checkpoint.seq)
    return Verdict(True, checked)
