"""The admissions service's ports in memory (``his.admissions.ports``).

What the database enforces, the fakes enforce too. Those the use cases rely on raise what the
store raises: a bed holds one active admission (the partial unique index: ``BedTakenError``), a
patient has one (``AlreadyAdmittedError``), and a night of an admission is charged once (as
``ON CONFLICT DO NOTHING``: ``BedCharges.add`` answers None). The others raise ``ValueError``,
which no use case handles, as none meets the database's errors for them: a bed's state is one of
the five, a ward's name, type, rate and currency and a charge's amount and currency are as the
CHECKs say, labels of rooms and beds are unique in their ward, an admission has one open bed
stay, and rows refer to wards, beds and admissions there are (the foreign keys). Text with a NUL
character, which PostgreSQL cannot store, is refused with the error it raises (an
``asyncpg.DataError``, which the services answer 422). Money is kept to two places, as the
``NUMERIC(12,2)`` columns keep it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from asyncpg.exceptions import CharacterNotInRepertoireError

from his.admissions.domain import (
    CURRENCY,
    WARD_TYPE,
    Admission,
    AdmissionStatus,
    AlreadyAdmittedError,
    Bed,
    BedCharge,
    BedState,
    BedStay,
    BedTakenError,
    Ward,
    WardChanges,
)
from his.kernel.clock import Clock, utc_now
from his.testing.units import FakeUnits, FakeWork

#: The columns' precision: NUMERIC(12,2).
_CENTS, _LIMIT = Decimal("0.01"), Decimal(10) ** 10
#: The bed states the CHECK allows.
_STATES = frozenset(s.value for s in BedState)


def kept(amount: Decimal) -> Decimal:
    """An amount as a ``NUMERIC(12,2)`` column keeps it (rounded to two places, half away from
    zero); ``ValueError`` if it does not fit."""
    out = Decimal(amount).quantize(_CENTS, rounding=ROUND_HALF_UP)
    if not out.is_finite() or abs(out) >= _LIMIT:
        raise ValueError(f"numeric field overflow: {amount}")
    return out


def storable(text: str) -> str:
    """Text as a ``text`` column takes it: never with a NUL character, which PostgreSQL refuses
    with ``CharacterNotInRepertoireError`` (an ``asyncpg.DataError``)."""
    if "\x00" in text:
        raise CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00')
    return text


def _label_order(label: str) -> tuple[int, str]:
    """``ORDER BY length(label), label`` (the database's collation is C: by code point)."""
    return (len(label), label)


@dataclass(frozen=True)
class StoredStay:
    """A row of ``bed_stay``: ``id`` is its identity column (stays begun later count higher)."""

    id: int
    admission_id: uuid.UUID
    ward_id: uuid.UUID
    bed_id: uuid.UUID
    started_at: datetime
    ended_at: datetime | None = None


@dataclass
class AdmissionsState:
    """The admissions service's tables."""

    wards: dict[uuid.UUID, Ward] = field(default_factory=dict)
    #: Rooms by id: their ward and label.
    rooms: dict[uuid.UUID, tuple[uuid.UUID, str]] = field(default_factory=dict)
    beds: dict[uuid.UUID, Bed] = field(default_factory=dict)
    admissions: dict[uuid.UUID, Admission] = field(default_factory=dict)
    stays: dict[int, StoredStay] = field(default_factory=dict)
    charges: dict[uuid.UUID, BedCharge] = field(default_factory=dict)
    #: The last ``bed_stay.id`` handed out.
    stay_seq: int = 0

    def ward(self, ward_id: uuid.UUID) -> Ward:
        """The ward a row refers to (its foreign key)."""
        found = self.wards.get(ward_id)
        if found is None:
            raise ValueError(f"no ward {ward_id}")  # the foreign key
        return found

    def bed(self, bed_id: uuid.UUID) -> Bed:
        found = self.beds.get(bed_id)
        if found is None:
            raise ValueError(f"no bed {bed_id}")  # the foreign key
        return found

    def admission(self, admission_id: uuid.UUID) -> Admission:
        found = self.admissions.get(admission_id)
        if found is None:
            raise ValueError(f"no admission {admission_id}")  # the foreign key
        return found


def _checked(ward: Ward) -> Ward:
    """The ward as its CHECKs and columns keep it."""
    for text in (ward.name, ward.ward_type, ward.currency):
        storable(text)
    if not 1 <= len(ward.name) <= 200:
        raise ValueError("a ward's name has 1 to 200 characters")  # the CHECK
    if not WARD_TYPE.fullmatch(ward.ward_type):
        raise ValueError(f"ward_type {ward.ward_type!r}")  # the CHECK
    if not CURRENCY.fullmatch(ward.currency):
        raise ValueError(f"currency {ward.currency!r}")  # the CHECK
    rate = kept(ward.daily_rate)
    if rate < 0:
        raise ValueError("a daily rate is never negative")  # the CHECK
    return replace(ward, daily_rate=rate)


class FakeWards:
    def __init__(self, state: AdmissionsState) -> None:
        self.state = state

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
        ward = _checked(Ward(ward_id, name, ward_type, daily_rate, currency, at, 1))
        if ward_id in self.state.wards:
            raise ValueError(f"ward {ward_id} exists")  # the primary key
        labels = [label for _, label in beds]
        if len(set(labels)) != len(labels):
            raise ValueError("a bed's label is unique in its ward")  # UNIQUE (ward_id, label)
        rooms = {label: uuid.uuid4() for label in dict.fromkeys(room for room, _ in beds)}
        self.state.wards[ward_id] = ward
        for label, room_id in rooms.items():
            self.state.rooms[room_id] = (ward_id, label)
        for room, label in beds:
            bed = Bed(uuid.uuid4(), ward_id, rooms[room], room, label, BedState.AVAILABLE, 1, at)
            self.state.beds[bed.id] = bed
        return ward

    async def get(self, ward_id: uuid.UUID, *, lock: bool = False) -> Ward | None:
        return self.state.wards.get(ward_id)

    async def update(self, ward_id: uuid.UUID, changes: WardChanges, actor: uuid.UUID, at: datetime) -> Ward:
        ward = self.state.wards.get(ward_id)
        assert ward is not None  # as the store's: an UPDATE of no row returns none
        changed = _checked(
            replace(
                ward,
                name=ward.name if changes.name is None else changes.name,
                ward_type=ward.ward_type if changes.ward_type is None else changes.ward_type,
                daily_rate=ward.daily_rate if changes.daily_rate is None else changes.daily_rate,
                currency=ward.currency if changes.currency is None else changes.currency,
                version=ward.version + 1,
                updated_at=at,
            )
        )
        self.state.wards[ward_id] = changed
        return changed

    async def all(self, limit: int = 500) -> list[Ward]:
        return sorted(self.state.wards.values(), key=lambda w: (w.name, w.id))[:limit]

    async def rooms(self, ward_id: uuid.UUID) -> list[str]:
        return sorted((label for ward, label in self.state.rooms.values() if ward == ward_id), key=_label_order)


class FakeBeds:
    def __init__(self, state: AdmissionsState) -> None:
        self.state = state

    async def counts(self, ward_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
        out: dict[uuid.UUID, dict[str, int]] = {w: {s.value: 0 for s in BedState} for w in ward_ids}
        for bed in self.state.beds.values():
            if bed.ward_id in out:
                out[bed.ward_id][bed.state.value] += 1
        return out

    async def find(self, ward_id: uuid.UUID | None, state: BedState | None, limit: int) -> list[Bed]:
        found = [
            b
            for b in self.state.beds.values()
            if (ward_id is None or b.ward_id == ward_id) and (state is None or b.state is state)
        ]
        return sorted(found, key=lambda b: (b.ward_id, *_label_order(b.label)))[:limit]

    async def get(self, bed_id: uuid.UUID, *, lock: bool = False) -> Bed | None:
        return self.state.beds.get(bed_id)

    async def claim_free(self, ward_id: uuid.UUID) -> uuid.UUID | None:
        free = [b for b in self.state.beds.values() if b.ward_id == ward_id and b.state is BedState.AVAILABLE]
        return min(free, key=lambda b: _label_order(b.label)).id if free else None

    async def set_state(self, bed_id: uuid.UUID, state: BedState, at: datetime) -> Bed:
        if str(state) not in _STATES:
            raise ValueError(f"a bed is never {state!r}")  # the CHECK
        bed = self.state.beds.get(bed_id)
        assert bed is not None  # as the store's: an UPDATE of no row, then no bed to read
        changed = replace(bed, state=BedState(state), version=bed.version + 1, updated_at=at)
        self.state.beds[bed_id] = changed
        return changed


class FakeAdmissionRecords:
    def __init__(self, state: AdmissionsState) -> None:
        self.state = state

    def _active(self) -> list[Admission]:
        return [a for a in self.state.admissions.values() if a.status is AdmissionStatus.ACTIVE]

    def _bed_free_for(self, bed_id: uuid.UUID, admission_id: uuid.UUID) -> None:
        if any(a.bed_id == bed_id and a.id != admission_id for a in self._active()):
            raise BedTakenError  # admission_one_per_bed

    def _start_stay(self, admission_id: uuid.UUID, ward_id: uuid.UUID, bed_id: uuid.UUID, at: datetime) -> None:
        self.state.admission(admission_id)
        self.state.ward(ward_id)
        self.state.bed(bed_id)
        if any(s.admission_id == admission_id and s.ended_at is None for s in self.state.stays.values()):
            raise ValueError("an admission has one open bed stay")  # bed_stay_one_open
        self.state.stay_seq += 1
        seq = self.state.stay_seq
        self.state.stays[seq] = StoredStay(seq, admission_id, ward_id, bed_id, at)

    def _end_stay(self, admission_id: uuid.UUID, at: datetime) -> None:
        for s in list(self.state.stays.values()):
            if s.admission_id == admission_id and s.ended_at is None:
                self.state.stays[s.id] = replace(s, ended_at=max(at, s.started_at))

    async def active_of(self, patient_id: uuid.UUID) -> uuid.UUID | None:
        return next((a.id for a in self._active() if a.patient_id == patient_id), None)

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
        # The unique indexes in the order PostgreSQL inserts into them (the order they were
        # created in), then the foreign keys (checked at the end of the statement).
        if admission_id in self.state.admissions:
            raise ValueError(f"admission {admission_id} exists")  # the primary key
        self._bed_free_for(bed_id, admission_id)
        if any(a.patient_id == patient_id for a in self._active()):
            raise AlreadyAdmittedError  # admission_one_per_patient
        self.state.ward(ward_id)
        self.state.bed(bed_id)
        admission = Admission(
            admission_id,
            patient_id,
            practitioner_id,
            ward_id,
            bed_id,
            AdmissionStatus.ACTIVE,
            admitted_at,
            None,
            admitted_by,
            None,
            1,
        )
        self.state.admissions[admission_id] = admission
        self._start_stay(admission_id, ward_id, bed_id, admitted_at)
        return admission

    async def get(self, admission_id: uuid.UUID, *, lock: bool = False) -> Admission | None:
        return self.state.admissions.get(admission_id)

    async def move(self, admission_id: uuid.UUID, ward_id: uuid.UUID, bed_id: uuid.UUID, at: datetime) -> Admission:
        admission = self.state.admission(admission_id)
        self.state.ward(ward_id)
        self.state.bed(bed_id)
        if admission.status is AdmissionStatus.ACTIVE:
            self._bed_free_for(bed_id, admission_id)
        self._end_stay(admission_id, at)
        self._start_stay(admission_id, ward_id, bed_id, at)
        moved = replace(admission, ward_id=ward_id, bed_id=bed_id, version=admission.version + 1)
        self.state.admissions[admission_id] = moved
        return moved

    async def discharge(self, admission_id: uuid.UUID, at: datetime, by: uuid.UUID) -> Admission:
        admission = self.state.admissions.get(admission_id)
        assert admission is not None  # as the store's: an UPDATE of no row returns none
        done = replace(
            admission,
            status=AdmissionStatus.DISCHARGED,
            discharged_at=max(at, admission.admitted_at),
            discharged_by=by,
            version=admission.version + 1,
        )
        self.state.admissions[admission_id] = done
        self._end_stay(admission_id, at)
        return done

    async def stays(self, admission_id: uuid.UUID) -> list[BedStay]:
        mine = sorted(
            (s for s in self.state.stays.values() if s.admission_id == admission_id),
            key=lambda s: (s.started_at, s.id),
        )
        return [BedStay(s.ward_id, s.bed_id, self.state.beds[s.bed_id].label, s.started_at, s.ended_at) for s in mine]

    async def find(self, patient_id: uuid.UUID | None, active: bool | None, limit: int) -> list[Admission]:
        found = [
            a
            for a in self.state.admissions.values()
            if (patient_id is None or a.patient_id == patient_id)
            and (active is None or (a.status is AdmissionStatus.ACTIVE) == active)
        ]
        found.sort(key=lambda a: a.id)
        found.sort(key=lambda a: a.admitted_at, reverse=True)
        return found[:limit]

    async def due(self, before: datetime) -> list[uuid.UUID]:
        found = [a for a in self._active() if a.admitted_at < before]
        return [a.id for a in sorted(found, key=lambda a: (a.admitted_at, a.id))]


class FakeBedCharges:
    def __init__(self, state: AdmissionsState) -> None:
        self.state = state

    def _of(self, admission_id: uuid.UUID) -> list[BedCharge]:
        return [c for c in self.state.charges.values() if c.admission_id == admission_id]

    async def nights(self, admission_id: uuid.UUID) -> set[date]:
        return {c.night for c in self._of(admission_id)}

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
        # As PostgreSQL checks them: the values, the CHECKs, the unique keys, the foreign keys.
        storable(ward_type)
        amount = kept(amount)
        if amount < 0:
            raise ValueError("a charge is never negative")  # the CHECK
        if not CURRENCY.fullmatch(storable(currency)):
            raise ValueError(f"currency {currency!r}")  # the CHECK
        if night in await self.nights(admission_id):
            return None  # ON CONFLICT (admission_id, night) DO NOTHING
        if charge_id in self.state.charges:
            raise ValueError(f"charge {charge_id} exists")  # the primary key
        self.state.admission(admission_id)
        self.state.ward(ward_id)
        charge = BedCharge(charge_id, admission_id, night, ward_id, ward_type, amount, currency, at)
        self.state.charges[charge_id] = charge
        return charge

    async def of(self, admission_id: uuid.UUID) -> list[BedCharge]:
        return sorted(self._of(admission_id), key=lambda c: c.night)

    async def count(self, admission_id: uuid.UUID) -> int:
        return len(self._of(admission_id))


class FakeAdmissionsWork(FakeWork):
    def __init__(self, state: AdmissionsState, clock: Clock) -> None:
        super().__init__(clock)
        self.wards = FakeWards(state)
        self.beds = FakeBeds(state)
        self.admissions = FakeAdmissionRecords(state)
        self.charges = FakeBedCharges(state)


class FakeAdmissions(FakeUnits[AdmissionsState, FakeAdmissionsWork]):
    """The admissions service's units of work in memory, with no wards yet."""

    def __init__(self, clock: Clock = utc_now, state: AdmissionsState | None = None) -> None:
        super().__init__(state or AdmissionsState(), FakeAdmissionsWork, clock)
