"""What the audit service's use cases work through: the hash chain of accesses and the links
from portal accounts to patients, inside a unit of work (``his.kernel.ports``). The store
implements them on PostgreSQL (``his.audit.store``); ``his.testing.audit`` in memory, for unit
tests. Both pass the same contract tests (``tests/integration/test_audit_contract.py``).

The verifier and the checkpoint (``his audit verify | checkpoint``) read the whole chain on the
database itself (``his.audit.store.PgChain.rows``, ``head``); no use case does.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from his.audit.domain import Entry, NewRecord
from his.kernel.ports import Units, Work


class Chain(Protocol):
    """The append-only, hash-chained log of accesses (``his.audit.domain``)."""

    async def append(self, record: NewRecord) -> int:
        """Append one record at the head of the chain; its ``seq``."""
        ...

    async def append_many(self, records: Sequence[NewRecord]) -> int:
        """Append records at the head of the chain, in order, each linked to the one before;
        the last one's ``seq``."""
        ...

    async def trail(self, patient_id: uuid.UUID, *, before: int | None, limit: int) -> list[Entry]:
        """Up to ``limit`` of one patient's records, newest first, from below ``seq`` ``before``
        (from the head when None); a record from before the flag is not flagged."""
        ...

    async def account_trail(self, account_id: uuid.UUID, *, before: int | None, limit: int) -> list[Entry]:
        """The same for the records that name one account (changes to it), newest first."""
        ...


class AccountLinks(Protocol):
    """Which portal account owns which patient's record."""

    async def link(self, patient_id: uuid.UUID, account_id: uuid.UUID) -> None:
        """The patient's account is ``account_id`` (replacing the one before)."""
        ...

    async def owns(self, account_id: uuid.UUID, patient_id: uuid.UUID) -> bool: ...


class StaffDirectory(Protocol):
    """Names of staff by account id: identity's staff directory (``GET /staff``), asked on behalf
    of the caller whose bearer token is given."""

    async def names(self, ids: Sequence[uuid.UUID], authorization: str) -> dict[uuid.UUID, str]:
        """The full names of the staff among ``ids``; those it does not know, or all of them if the
        directory cannot answer, are left out (a trail is shown without names, never withheld)."""
        ...


class AuditWork(Work, Protocol):
    """A unit of work of the audit service."""

    @property
    def chain(self) -> Chain: ...

    @property
    def accounts(self) -> AccountLinks: ...


#: Where the audit service's units of work come from.
AuditUnits = Units[AuditWork]
