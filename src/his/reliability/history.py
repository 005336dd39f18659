"""One history of a run under faults, and the check every fault test and the soak apply to it.

A run records, stage by stage, what it saw of each effect, identified by a key (an event id,
an appointment id, a payment's idempotency key):

- ``tell``: a client was told the write succeeded (an HTTP 201, a committed transaction);
- ``uncertain``: a client got no clear answer (a timeout, a 503, a connection cut): the write may
  or may not have happened, and either is correct;
- ``refuse``: a client was told it did not happen (a 4xx, a rolled-back transaction);
- ``observe(stage, keys)``: what a later stage holds, in the order it holds them and with
  repeats: the database, the stream, each consumer's applied effects.

``check`` compares each stage with the one before it (the first with what clients were told):

- **lost**: told (or held by the earlier stage) but missing;
- **unexpected**: present without being told or uncertain (or absent from the earlier stage),
  or present although the client was refused;
- **duplicated**: present more than once in a stage;
- **out of order**: within one group (a patient, an aggregate), keys seen in a stage out of
  the order of their versions.

Each finding names its stage and the keys involved, so a failing test says which ids went wrong.
Pure: no IO, so the same checker serves the unit tests, the reliability tests and ``his soak``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Literal

Key = Hashable
Kind = Literal["lost", "unexpected", "duplicated", "out-of-order"]
TOLD = "told"
SHOWN = 5  # keys printed per finding


@dataclass(frozen=True)
class Finding:
    """One kind of difference at one stage, with every key involved."""

    kind: Kind
    stage: str
    keys: tuple[Key, ...]
    detail: str = ""

    def __str__(self) -> str:
        shown = ", ".join(map(str, self.keys[:SHOWN]))
        more = f" and {len(self.keys) - SHOWN} more" if len(self.keys) > SHOWN else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.kind} at {self.stage}: {len(self.keys)}{detail}: {shown}{more}"


@dataclass
class Verdict:
    """The findings of one check (empty when every promise held) and the size of each stage."""

    findings: list[Finding]
    sizes: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.findings

    def keys(self, kind: Kind, stage: str | None = None) -> set[Key]:
        """Every key with a finding of ``kind`` (at ``stage``, or at any stage)."""
        return {k for f in self.findings if f.kind == kind and stage in (None, f.stage) for k in f.keys}

    @property
    def lost(self) -> set[Key]:
        return self.keys("lost")

    @property
    def unexpected(self) -> set[Key]:
        return self.keys("unexpected")

    @property
    def duplicated(self) -> set[Key]:
        return self.keys("duplicated")

    @property
    def out_of_order(self) -> set[Key]:
        return self.keys("out-of-order")

    def __str__(self) -> str:
        sizes = ", ".join(f"{stage} {n}" for stage, n in self.sizes.items())
        if self.ok:
            return f"ok: nothing lost, unexpected, duplicated or out of order ({sizes})"
        return f"{len(self.findings)} finding(s) ({sizes}):\n" + "\n".join(f"  {f}" for f in self.findings)


@dataclass
class History:
    """What clients were told and what each later stage holds (see the module's docstring)."""

    told: dict[Key, None] = field(default_factory=dict)  # insertion-ordered set
    uncertain_keys: set[Key] = field(default_factory=set)
    refused: set[Key] = field(default_factory=set)
    stages: dict[str, list[Key]] = field(default_factory=dict)
    order: dict[Key, tuple[Hashable, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def tell(self, key: Key, *, group: Hashable | None = None, version: int | None = None) -> None:
        """A client was told ``key`` succeeded; ``group``/``version`` give its place in an order."""
        self.told[key] = None
        self.uncertain_keys.discard(key)
        if group is not None and version is not None:
            self.order[key] = (group, version)

    def uncertain(self, key: Key) -> None:
        """A client got no clear answer about ``key``: present or absent are both correct."""
        if key not in self.told:
            self.uncertain_keys.add(key)

    def refuse(self, key: Key) -> None:
        """A client was told ``key`` did not happen: it must appear in no stage."""
        self.refused.add(key)

    def place(self, key: Key, *, group: Hashable, version: int) -> None:
        """Give ``key`` its place in an order without telling (e.g. an event found in the outbox)."""
        self.order[key] = (group, version)

    def observe(self, stage: str, keys: Iterable[Key]) -> None:
        """What ``stage`` holds, in its order, repeats included (calls for one stage accumulate)."""
        self.stages.setdefault(stage, []).extend(keys)

    def note(self, text: str) -> None:
        """Something the run did that the report should show (a fault injected, where it landed)."""
        self.notes.append(text)

    def check(self, *, ordered: Iterable[str] = ()) -> Verdict:
        """Compare every stage with the one before it; ``ordered`` names the stages whose order
        within a group must follow the versions given to ``tell`` or ``place``."""
        findings: list[Finding] = []
        must_order = set(ordered)
        before: set[Key] = set(self.told)
        allowed: set[Key] = before | self.uncertain_keys
        first = True
        for stage, seen in self.stages.items():
            counts = Counter(seen)
            present = set(counts)
            lost = before - present
            unexpected = (present - allowed) | (present & self.refused)
            duplicated = {k for k, n in counts.items() if n > 1}
            against = "what clients were told" if first else "the stage before"
            self._add(findings, "lost", stage, seen, lost, detail=f"missing from what {against} holds")
            self._add(findings, "unexpected", stage, seen, unexpected, detail=f"not in {against}")
            self._add(findings, "duplicated", stage, seen, duplicated, detail="present more than once")
            if stage in must_order:
                late = self._out_of_order(seen)
                self._add(findings, "out-of-order", stage, seen, late, detail="version went backwards")
            # The next stage must hold what this one holds (uncertain writes included, once here).
            before, allowed, first = present - self.refused, present, False
        sizes = {TOLD: len(self.told)} | {stage: len(seen) for stage, seen in self.stages.items()}
        return Verdict(findings, sizes)

    def _out_of_order(self, seen: list[Key]) -> set[Key]:
        highest: dict[Hashable, int] = {}
        late: set[Key] = set()
        for key in seen:
            placed = self.order.get(key)
            if placed is None:
                continue
            group, version = placed
            if version < highest.get(group, version):
                late.add(key)
            highest[group] = max(version, highest.get(group, version))
        return late

    @staticmethod
    def _add(findings: list[Finding], kind: Kind, stage: str, seen: list[Key], keys: set[Key], *, detail: str) -> None:
        if keys:
            position = {k: i for i, k in reversed(list(enumerate(seen)))}
            ordered = sorted(keys, key=lambda k: (position.get(k, -1), str(k)))
            findings.append(Finding(kind, stage, tuple(ordered), detail))
