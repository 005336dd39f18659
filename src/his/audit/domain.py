"""The audit chain: each record's hash covers its content and the previous record's hash. Pure.

``hash_n = SHA-256(hash_{n-1} || canonical JSON of record n, seq included)``, with 32 zero
bytes before the first record. Editing, deleting or swapping any record breaks every later
link; truncating the tail or re-forging the whole chain is caught by comparing with a head
checkpoint kept outside the database, authenticated with HMAC.

Each access record also carries its number in its producer's gap-free sequence
(``producer_seq``): ``missing_numbers`` names every number the chain lacks, so a record deleted
from the table, or from a stream before audit read it, is named with its producer (ADR 0028).
Like ``flagged`` it joined later: records without one are hashed without it.

A record of a change to an account (roles, disabled, a new password required …) names the account
concerned (``account_id``), hashed like ``producer_seq``: records without one, every record
written before the field among them, are hashed without it, so they verify as they did; a record
with one cannot lose or change it unseen (ADR 0031).

Checkpoints form a chain of their own (each MACs its number and the previous one's MAC), so a
checkpoint cut out of the witness file, or one cut off its end when compared with the count
kept beside the chain, is seen too (``check_witness``).

``flagged`` (emergency access) joined the record later. Records written before it have no
value and are hashed without it, exactly as they were; every newer record has true or false
and is hashed with it, so neither setting nor clearing a flag goes unseen.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    """One recorded access to a patient's data or to an account, as a trail shows it."""

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
    #: The account concerned (None: none, as in a read of a patient's record).
    account_id: uuid.UUID | None = None


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
    #: Its number in its producer's gap-free sequence (None: the producer did not number it).
    producer_seq: int | None = None
    #: The account concerned, when the access is to an account (None: to no account).
    account_id: uuid.UUID | None = None

    def content(self, seq: int) -> dict[str, object]:
        """The record at ``seq`` as the chain hashes it (``link``) and stores it; ``producer_seq``
        and ``account_id`` only when it has them."""
        number = {} if self.producer_seq is None else {"producer_seq": self.producer_seq}
        account = {} if self.account_id is None else {"account_id": self.account_id}
        return (
            number
            | account
            | {
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
        )


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
    producer_seq: int | None
    account_id: uuid.UUID | None
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True)
class Actor:
    """Who made an access, as a patient's trail names them: ``kind`` is ``staff``, ``patient``
    (the patient themself), ``service`` (a service acting on its own behalf) or ``unknown``."""

    kind: str
    #: A person's full name (from the staff directory), "the <name> service", or None.
    name: str | None


def name_actor(roles: Sequence[str], *, owner: bool, staff_name: str | None) -> Actor:
    """Name an access's actor in words: a service by its name, never its SPIFFE URI; the patient's
    own account as the patient; staff by the name the directory gave (None if it gave none)."""
    if len(roles) == 1 and roles[0].startswith("spiffe://"):
        return Actor("service", f"the {roles[0].rstrip('/').rsplit('/', 1)[-1]} service")
    if owner:
        return Actor("patient", "the patient")
    if staff_name is not None or any(r != "PATIENT" for r in roles):
        return Actor("staff", staff_name)
    return Actor("unknown", None)


def is_flagged(action: str, purpose: str) -> bool:
    """Break-the-glass grants and every access made under one are flagged."""
    return action == "break_glass" or purpose == EMERGENCY


def canonical(record: Mapping[str, object]) -> bytes:
    doc = {
        k: (str(record[k]) if record[k] is not None and k not in ("seq", "actor_roles") else record[k]) for k in FIELDS
    }
    if record.get("flagged") is not None:
        doc["flagged"] = bool(record["flagged"])
    if record.get("producer_seq") is not None:
        doc["producer_seq"] = record["producer_seq"]
    if record.get("account_id") is not None:
        doc["account_id"] = str(record["account_id"])
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def link(prev_hash: bytes, record: Mapping[str, object]) -> bytes:
    return hashlib.sha256(prev_hash + canonical(record)).digest()


@dataclass(frozen=True)
class Checkpoint:
    """The chain's head at one moment, MAC'd with a key the database never sees.

    ``n`` numbers the checkpoints of the witness file from 1 and ``prev`` is the MAC of the one
    before (32 zero bytes before the first): the MAC covers both, so no checkpoint can be cut
    out, reordered or replayed unseen. Checkpoints written before the chaining have ``n`` 0.
    """

    seq: int
    hash: bytes
    mac: bytes
    n: int = 0
    prev: bytes = b""

    @staticmethod
    def mac_of(key: bytes, seq: int, head: bytes, n: int = 0, prev: bytes = b"") -> bytes:
        text = f"{seq}:{head.hex()}" if n == 0 else f"{n}:{prev.hex()}:{seq}:{head.hex()}"
        return hmac.new(key, text.encode(), hashlib.sha256).digest()

    @classmethod
    def make(cls, key: bytes, seq: int, head: bytes, after: Checkpoint | None = None) -> Checkpoint:
        """The checkpoint of ``seq`` and ``head`` that follows ``after`` in the witness file."""
        n = after.n + 1 if after is not None and after.n else 1
        prev = after.mac if after is not None and after.n else GENESIS
        return cls(seq, head, cls.mac_of(key, seq, head, n, prev), n, prev)

    def authentic(self, key: bytes) -> bool:
        return hmac.compare_digest(self.mac, self.mac_of(key, self.seq, self.hash, self.n, self.prev))

    def to_json(self) -> str:
        doc: dict[str, object] = {"seq": self.seq, "hash": self.hash.hex(), "mac": self.mac.hex()}
        if self.n:
            doc |= {"n": self.n, "prev": self.prev.hex()}
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        doc = json.loads(text)
        n, prev = int(doc.get("n", 0)), bytes.fromhex(doc.get("prev", ""))
        return cls(int(doc["seq"]), bytes.fromhex(doc["hash"]), bytes.fromhex(doc["mac"]), n, prev)


def check_witness(entries: Sequence[Checkpoint], key: bytes, count: tuple[int, bytes] | None) -> str:
    """What is wrong with the witness file's checkpoints, in order ("" if nothing): each one
    authentic, chained to the one before, the seq never going back; and none missing at its end
    by the ``count`` (number and MAC of the last one written) kept in the database."""
    prev: Checkpoint | None = None
    for cp in entries:
        if not cp.authentic(key):
            return f"checkpoint {cp.n or '(unnumbered)'} of the witness is not authentic"
        if prev is not None and cp.seq < prev.seq:
            return f"checkpoint {cp.n} goes back from record {prev.seq} to {cp.seq}"
        after = prev.n if prev is not None else 0
        if cp.n and cp.n != after + 1:
            cut = _run(after + 1, cp.n - 1) if cp.n > after + 1 else ""
            return f"the witness lacks checkpoint{cut}" if cut else f"checkpoint {cp.n} does not follow {after}"
        if cp.n and prev is not None and after and cp.prev != prev.mac:
            return f"checkpoint {cp.n} does not follow checkpoint {after}"
        prev = cp
    last = prev.n if prev is not None else 0
    if count is not None and count[0] > last:
        return f"the witness was rolled back: checkpoint{_run(last + 1, count[0])} cut off its end"
    if count is not None and count[0] == last and prev is not None and not hmac.compare_digest(count[1], prev.mac):
        return f"checkpoint {last} of the witness is not the one written"
    return ""


def _run(first: int, last: int) -> str:
    return f" {first}" if first == last else f"s {first}..{last}"


@dataclass(frozen=True)
class Missing:
    """Numbers of one producer's access records that are not in the chain: ``first``..``last``."""

    producer: str
    first: int
    last: int

    def __str__(self) -> str:
        numbers = str(self.first) if self.first == self.last else f"{self.first}..{self.last}"
        return f"{self.producer} {numbers}"


def missing_numbers(numbers: Mapping[str, Iterable[int]], latest: Mapping[str, int] | None = None) -> list[Missing]:
    """Every producer's numbers the chain lacks, as runs: those between 1 and the highest it
    holds, and those above it up to the producer's own latest number (``latest``), which is how
    a record removed at the end is seen. Producers are named in order, runs in number order."""
    found: list[Missing] = []
    latest = latest or {}
    for producer in sorted(set(numbers) | set(latest)):
        have = sorted(set(numbers.get(producer, ())))
        expected = 1
        for n in have:
            if n > expected:
                found.append(Missing(producer, expected, n - 1))
            expected = max(expected, n + 1)
        if latest.get(producer, 0) >= expected:
            found.append(Missing(producer, expected, latest[producer]))
    return found


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    problem: str = ""
    first_bad_seq: int | None = None
    #: The producers' access records the chain lacks.
    missing: tuple[Missing, ...] = ()


def _digest(value: object) -> bytes:
    """A hash column's value (``bytea``: bytes, or a memoryview of them)."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"a hash is bytes, not {type(value).__name__}")
    return bytes(value)


def verify(
    rows: Iterable[Mapping[str, object]],
    checkpoint: Checkpoint | None = None,
    key: bytes | None = None,
    latest: Mapping[str, int] | None = None,
) -> Verdict:
    """Walk the chain in ``seq`` order; name the first bad record, and every access record of a
    producer that the chain lacks (``missing_numbers``, against each producer's ``latest``).

    The walk reads every row even after a broken link, so a deletion is named by its producer
    and numbers whatever else was done to the chain."""
    numbers: dict[str, list[int]] = {}

    def counted() -> Iterator[Mapping[str, object]]:
        for row in rows:
            n = row.get("producer_seq")
            if isinstance(n, int):
                numbers.setdefault(str(row["source"]), []).append(n)
            yield row

    walk = counted()
    verdict = _walk(walk, checkpoint, key)
    for _ in walk:  # the rows after the first bad one, for their numbers
        pass
    missing = tuple(missing_numbers(numbers, latest))
    if not missing:
        return verdict
    words = "access records missing: " + ", ".join(map(str, missing))
    problem = f"{verdict.problem}; {words}" if verdict.problem else words
    return Verdict(False, verdict.checked, problem, verdict.first_bad_seq, missing)


def _walk(rows: Iterator[Mapping[str, object]], checkpoint: Checkpoint | None, key: bytes | None) -> Verdict:
    """The links of the chain and its head checkpoint: the first problem, if any."""
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
