"""The audit service's ports in memory (``his.audit.ports``).

The chain is a list of rows as ``audit_log`` holds them, each hashed with the domain's own
``link`` at the head of the chain, exactly as the store hashes it, so ``his.audit.domain.verify``
walks the fake's chain as it walks the database's (``AuditState.rows``). What the table refuses,
the fake refuses: an ``event_id`` already in the chain (``UniqueViolationError``, the unique key
``audit_log_event_id_key``) and text with a NUL character (``CharacterNotInRepertoireError``),
and a refused append leaves nothing, as the unit that made it is undone. A moment comes back in
UTC, as ``timestamptz`` gives it back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC

from asyncpg.exceptions import UniqueViolationError

from his.audit.domain import GENESIS, ChainRow, Entry, NewRecord, link
from his.kernel.clock import Clock, utc_now
from his.testing.admissions import storable
from his.testing.units import FakeUnits, FakeWork


@dataclass
class AuditState:
    """The audit service's tables."""

    #: ``audit_log``, in ``seq`` order.
    chain: list[ChainRow] = field(default_factory=list)
    #: ``patient_account``: each patient's account.
    accounts: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)

    def rows(self) -> list[ChainRow]:
        """Every record in chain order, as the verifier reads the table (``PgChain.rows``)."""
        return [ChainRow(**r) for r in sorted(self.chain, key=lambda r: r["seq"])]


def _storable(record: NewRecord) -> None:
    for text in (record.source, *record.actor_roles, record.action, record.resource, record.purpose, record.outcome):
        storable(text)
    if record.trace_id is not None:
        storable(record.trace_id)


class FakeChain:
    def __init__(self, state: AuditState) -> None:
        self.state = state

    async def append(self, record: NewRecord) -> int:
        return await self.append_many([record])

    async def append_many(self, records: Sequence[NewRecord]) -> int:
        head = self.state.chain[-1] if self.state.chain else None
        seq, prev = (head["seq"], head["hash"]) if head else (0, GENESIS)
        taken = {r["event_id"] for r in self.state.chain}
        for record in records:
            seq += 1
            content = record.content(seq)
            digest = link(prev, content)
            _storable(record)
            if record.event_id in taken:
                raise UniqueViolationError('duplicate key value violates unique constraint "audit_log_event_id_key"')
            taken.add(record.event_id)
            self.state.chain.append(
                ChainRow(
                    seq=seq,
                    event_id=record.event_id,
                    at=record.at.astimezone(UTC),
                    source=record.source,
                    actor_id=record.actor_id,
                    actor_roles=list(record.actor_roles),
                    patient_id=record.patient_id,
                    action=record.action,
                    resource=record.resource,
                    purpose=record.purpose,
                    outcome=record.outcome,
                    trace_id=record.trace_id,
                    flagged=bool(record.flagged),
                    producer_seq=record.producer_seq,
                    account_id=record.account_id,
                    prev_hash=prev,
                    hash=digest,
                )
            )
            prev = digest
        return seq

    async def trail(self, patient_id: uuid.UUID, *, before: int | None, limit: int) -> list[Entry]:
        return self._trail("patient_id", patient_id, before, limit)

    async def account_trail(self, account_id: uuid.UUID, *, before: int | None, limit: int) -> list[Entry]:
        return self._trail("account_id", account_id, before, limit)

    def _trail(self, column: str, value: uuid.UUID, before: int | None, limit: int) -> list[Entry]:
        below = before or 2**62
        mine = [r for r in self.state.chain if r.get(column) == value and r["seq"] < below]
        mine.sort(key=lambda r: r["seq"], reverse=True)
        return [
            Entry(
                seq=r["seq"],
                at=r["at"],
                source=r["source"],
                actor_id=r["actor_id"],
                actor_roles=tuple(r["actor_roles"]),
                action=r["action"],
                resource=r["resource"],
                purpose=r["purpose"],
                outcome=r["outcome"],
                flagged=bool(r["flagged"]),  # coalesce(flagged, false)
                account_id=r.get("account_id"),
            )
            for r in mine[:limit]
        ]


class FakeAccountLinks:
    def __init__(self, state: AuditState) -> None:
        self.state = state

    async def link(self, patient_id: uuid.UUID, account_id: uuid.UUID) -> None:
        self.state.accounts[patient_id] = account_id

    async def owns(self, account_id: uuid.UUID, patient_id: uuid.UUID) -> bool:
        return self.state.accounts.get(patient_id) == account_id


class FakeAuditWork(FakeWork):
    def __init__(self, state: AuditState, clock: Clock) -> None:
        super().__init__(clock)
        self.chain = FakeChain(state)
        self.accounts = FakeAccountLinks(state)


class FakeAudit(FakeUnits[AuditState, FakeAuditWork]):
    """The audit service's units of work in memory, with an empty chain."""

    def __init__(self, clock: Clock = utc_now, state: AuditState | None = None) -> None:
        super().__init__(state or AuditState(), FakeAuditWork, clock)
