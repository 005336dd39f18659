"""What the admissions service's use cases work through: its wards with their rooms and beds, the
admissions with the beds they went through, and the nightly bed charges, inside a unit of work
(``his.kernel.ports``). The store implements them on PostgreSQL (``his.admissions.store``);
``his.testing.admissions`` in memory, for unit tests. Both pass the same contract tests
(``tests/integration/test_admissions_contract.py``).

What the database guarantees is refused on both sides: a bed holds one active admission
(``BedTakenError``), a patient has one (``AlreadyAdmittedError``), a night of an admission is
charged once (``BedCharges.add`` answers None). A refusal fails the unit of work it happened in.
Money is kept to two places (the columns' ``NUMERIC(12,2)``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from his.admissions.domain import Admission, Bed, BedCharge, BedState, BedStay, Ward, WardChanges
from his.kernel.ports import Units, Work


class Wards(Protocol):
    """The wards, their tariffs and their rooms."""

    async def add(
        self,
        *,
        ward_id: uuid.UUID,
        name: str,
        ward_type: str,
        daily_rate: Decimal,
        currency: str,
        created_by: uuid.UUID,
        beds: Sequence[tuple[str, str]],
        at: datetime,
    ) -> Ward:
        """A ward created ``at`` (version 1) with its rooms and beds (``beds``: the room's label and
        the bed's label of each, in order), every bed available."""
        ...

    async def get(self, ward_id: uuid.UUID, *, lock: bool = False) -> Ward | None:
        """The ward; ``lock`` holds it until the unit ends."""
        ...

    async def update(self, ward_id: uuid.UUID, changes: WardChanges, actor: uuid.UUID, at: datetime) -> Ward:
        """The ward with the fields of ``changes`` that are not None, its version one higher,
        corrected ``at`` by ``actor``."""
        ...

    async def all(self, limit: int = 500) -> list[Ward]:
        """Wards by name (ties by id)."""
        ...

    async def rooms(self, ward_id: uuid.UUID) -> list[str]:
        """The labels of the ward's rooms, shortest first, then alphabetically (R2 before R10)."""
        ...


class Beds(Protocol):
    """The beds and their states."""

    async def counts(self, ward_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
        """How many beds of each ward are in each state (every state named, zero when none)."""
        ...

    async def find(self, ward_id: uuid.UUID | None, state: BedState | None, limit: int) -> list[Bed]:
        """Beds by ward, then label (shortest first), of one ward and one state or of all."""
        ...

    async def get(self, bed_id: uuid.UUID, *, lock: bool = False) -> Bed | None:
        """The bed with its room; ``lock`` holds it until the unit ends."""
        ...

    async def claim_free(self, ward_id: uuid.UUID) -> uuid.UUID | None:
        """One available bed of the ward (the first by label), locked until the unit ends; beds
        that other units are taking are skipped. None if there is none."""
        ...

    async def set_state(self, bed_id: uuid.UUID, state: BedState, at: datetime) -> Bed:
        """The bed in ``state`` (one of ``BedState``'s, else refused), its version one higher, ``at``."""
        ...


class AdmissionRecords(Protocol):
    """The admissions and the bed stays each went through."""

    async def active_of(self, patient_id: uuid.UUID) -> uuid.UUID | None:
        """The patient's active admission, if any."""
        ...

    async def add(
        self,
        *,
        admission_id: uuid.UUID,
        patient_id: uuid.UUID,
        practitioner_id: uuid.UUID,
        ward_id: uuid.UUID,
        bed_id: uuid.UUID,
        admitted_at: datetime,
        admitted_by: uuid.UUID,
    ) -> Admission:
        """An active admission (version 1) and its first bed stay, from ``admitted_at``.
        ``AlreadyAdmittedError`` if the patient has an active admission, ``BedTakenError`` if
        the bed holds one."""
        ...

    async def get(self, admission_id: uuid.UUID, *, lock: bool = False) -> Admission | None:
        """The admission; ``lock`` holds it until the unit ends."""
        ...

    async def move(self, admission_id: uuid.UUID, ward_id: uuid.UUID, bed_id: uuid.UUID, at: datetime) -> Admission:
        """The admission in another bed from ``at`` (its version one higher): the open stay ends
        (not before it began), one in the new bed begins. ``BedTakenError`` if that bed holds an
        active admission."""
        ...

    async def discharge(self, admission_id: uuid.UUID, at: datetime, by: uuid.UUID) -> Admission:
        """The admission discharged ``at`` (not before it began) by ``by``, its version one higher,
        its open stay ended."""
        ...

    async def stays(self, admission_id: uuid.UUID) -> list[BedStay]:
        """The beds the admission went through, in the order it entered them."""
        ...

    async def find(self, patient_id: uuid.UUID | None, active: bool | None, limit: int) -> list[Admission]:
        """Admissions, of one patient and/or only active (or only not), latest first (ties by id)."""
        ...

    async def due(self, before: datetime) -> list[uuid.UUID]:
        """The active admissions that began before ``before``, earliest first (ties by id)."""
        ...


class BedCharges(Protocol):
    """The nights charged, one per admission and night."""

    async def nights(self, admission_id: uuid.UUID) -> set[date]:
        """The nights of the admission already charged."""
        ...

    async def add(
        self,
        *,
        charge_id: uuid.UUID,
        admission_id: uuid.UUID,
        night: date,
        ward_id: uuid.UUID,
        ward_type: str,
        amount: Decimal,
        currency: str,
        at: datetime,
    ) -> BedCharge | None:
        """The night's charge, posted ``at``; None (and nothing changed) if that night of the
        admission is charged already."""
        ...

    async def of(self, admission_id: uuid.UUID) -> list[BedCharge]:
        """The admission's charges, by night."""
        ...

    async def count(self, admission_id: uuid.UUID) -> int:
        """How many nights of the admission are charged."""
        ...


class AdmissionsWork(Work, Protocol):
    """A unit of work of the admissions service."""

    @property
    def wards(self) -> Wards: ...

    @property
    def beds(self) -> Beds: ...

    @property
    def admissions(self) -> AdmissionRecords: ...

    @property
    def charges(self) -> BedCharges: ...


#: Where the admissions service's units of work come from.
AdmissionsUnits = Units[AdmissionsWork]
