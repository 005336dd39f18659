"""Use cases of the admissions service: one function per command (and the nightly job).

The patient look-up happens before the database transaction opens, so no transaction waits on the
network. Inside it, row locks order the work: an admission locks one free bed (skipping beds that
concurrent admissions are taking), a transfer or discharge locks the admission first and then its
beds; the partial unique indexes are the last word on "one active admission per bed / patient".
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import Counter

from his.admissions import store
from his.admissions.domain import (
    AdmissionStatus,
    BedAction,
    BedState,
    InvalidTransitionError,
    bed_labels,
    bed_transition,
    check_rate,
    day_end,
    local_date,
    nights_due,
    ward_for_night,
)
from his.clients.billing import BillingTermsLookup
from his.clients.patients import PatientLookup
from his.clients.practitioners import PractitionerLookup
from his.events.admissions import (
    BedChargePosted,
    PatientAdmitted,
    PatientDischarged,
    PatientTransferred,
    WardUpdated,
)
from his.kernel.db import Database, UnitOfWork

log = logging.getLogger("his.admissions")

ADMITTED = Counter("his_admissions_total", "Patients admitted (counted after their commit)")


class UnknownError(LookupError):
    """A patient, ward, bed or admission that does not exist; ``what`` says which."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


class NoFreeBedError(Exception):
    """The ward has no available bed."""


AlreadyAdmittedError = store.AlreadyAdmittedError

#: Called inside the command's transaction (the audit record commits with the change, or neither).
Also = Callable[[UnitOfWork, dict[str, Any]], Awaitable[None]] | None


@dataclass(frozen=True)
class NewWard:
    name: str
    ward_type: str
    daily_rate: Decimal
    currency: str
    beds: int
    rooms: int | None = None


async def create_ward(uow: UnitOfWork, w: NewWard, actor: uuid.UUID) -> uuid.UUID:
    """A ward with its rooms and beds, every bed available (``InvalidWardError`` on bad input)."""
    labels = bed_labels(w.beds, w.rooms)
    ward = {
        "id": uuid.uuid4(),
        "name": w.name,
        "ward_type": w.ward_type,
        "daily_rate": check_rate(w.daily_rate),
        "currency": w.currency,
        "created_by": actor,
    }
    await store.insert_ward(uow.conn, ward, labels)
    return uuid.UUID(str(ward["id"]))


async def update_ward(uow: UnitOfWork, ward_id: uuid.UUID, changes: dict[str, Any], actor: uuid.UUID) -> dict[str, Any]:
    """Correct what was entered for a ward (``name``, ``ward_type``, ``daily_rate``, ``currency``;
    the caller checked the currency with billing). Announces the ward's tariff when anything
    changed: nights posted from now on carry it, and billing bills at it the nights it could not."""
    ward = await store.lock_ward(uow.conn, ward_id)
    if ward is None:
        raise UnknownError("ward")
    if "daily_rate" in changes:
        changes = {**changes, "daily_rate": check_rate(changes["daily_rate"])}
    changed = {k: v for k, v in changes.items() if v is not None and ward[k] != v}
    if not changed:
        return ward
    row = await store.update_ward(uow.conn, ward_id, changed, actor)
    uow.add(
        WardUpdated(
            ward_id=ward_id,
            fields=sorted("type" if k == "ward_type" else k for k in changed),
            ward_type=row["ward_type"],
            daily_rate=row["daily_rate"],
            currency=row["currency"],
        ),
        aggregate_id=ward_id,
        aggregate_version=row["version"],
    )
    return row


async def bed_action(uow: UnitOfWork, bed_id: uuid.UUID, action: BedAction) -> dict[str, Any]:
    """Release a cleaned bed, close or open it, put it in isolation (409 when its state forbids)."""
    bed = await store.get_bed(uow.conn, bed_id, lock=True)
    if bed is None:
        raise UnknownError("bed")
    after = bed_transition(BedState(bed["state"]), action)
    return await store.set_bed_state(uow.conn, bed_id, after)


async def _move_bed(uow: UnitOfWork, bed: dict[str, Any], action: BedAction) -> None:
    await store.set_bed_state(uow.conn, bed["id"], bed_transition(BedState(bed["state"]), action))


@dataclass(frozen=True)
class Admit:
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    ward_id: uuid.UUID


@dataclass(frozen=True)
class Directories:
    """Where admissions checks that what it records is real: patient and practitioner ids (over
    gRPC, in parallel), and a ward's currency (billing's)."""

    patients: PatientLookup
    practitioners: PractitionerLookup
    #: The currencies billing invoices in, which a ward's rate must be in (None: not reachable,
    #: so no ward can be created or have its currency changed).
    billing: BillingTermsLookup | None = None


async def admit(db: Database, known: Directories, a: Admit, actor: uuid.UUID, also: Also = None) -> dict[str, Any]:
    """Admit a patient to a free bed of the ward, taken atomically."""
    patient, practitioner = await asyncio.gather(
        known.patients.find(a.patient_id), known.practitioners.find(a.practitioner_id)
    )
    if patient is None:
        raise UnknownError("patient")
    if practitioner is None:
        raise UnknownError("practitioner")
    async with db.uow() as uow:
        if await store.get_ward(uow.conn, a.ward_id) is None:
            raise UnknownError("ward")
        if await store.active_admission_of(uow.conn, a.patient_id) is not None:
            raise AlreadyAdmittedError
        bed_id = await store.claim_free_bed(uow.conn, a.ward_id)
        if bed_id is None:
            raise NoFreeBedError
        await store.set_bed_state(uow.conn, bed_id, bed_transition(BedState.AVAILABLE, BedAction.OCCUPY))
        row = {
            "id": uuid.uuid4(),
            "patient_id": a.patient_id,
            "practitioner_id": a.practitioner_id,
            "ward_id": a.ward_id,
            "bed_id": bed_id,
            "admitted_at": uow.clock(),
            "admitted_by": actor,
        }
        saved = await store.insert_admission(uow.conn, row)
        uow.add(
            PatientAdmitted(
                admission_id=saved["id"],
                patient_id=a.patient_id,
                practitioner_id=a.practitioner_id,
                ward_id=a.ward_id,
                bed_id=bed_id,
                admitted_at=saved["admitted_at"],
            ),
            aggregate_id=saved["id"],
            aggregate_version=saved["version"],
        )
        if also:
            await also(uow, saved)
        uow.on_commit(ADMITTED.inc)
    return saved


async def _active(uow: UnitOfWork, admission_id: uuid.UUID, doing: str) -> dict[str, Any]:
    row = await store.get_admission(uow.conn, admission_id, lock=True)
    if row is None:
        raise UnknownError("admission")
    if row["status"] != AdmissionStatus.ACTIVE:
        raise InvalidTransitionError(f"a {row['status']} admission cannot be {doing}")
    return row


async def _target_bed(uow: UnitOfWork, ward_id: uuid.UUID, bed_id: uuid.UUID | None) -> uuid.UUID:
    """The bed a transfer goes to: the one asked for if it is free, else any free bed of the ward."""
    if bed_id is None:
        found = await store.claim_free_bed(uow.conn, ward_id)
        if found is None:
            raise NoFreeBedError
        return found
    bed = await store.get_bed(uow.conn, bed_id, lock=True)
    if bed is None or bed["ward_id"] != ward_id:
        raise UnknownError("bed")
    if bed["state"] != BedState.AVAILABLE:
        raise InvalidTransitionError(f"bed {bed['label']} is {bed['state']}, not available")
    return bed_id


async def transfer(
    uow: UnitOfWork, admission_id: uuid.UUID, ward_id: uuid.UUID, bed_id: uuid.UUID | None = None
) -> dict[str, Any]:
    """Move an admitted patient to another bed: the old bed goes to cleaning, the new one is
    occupied, both in one transaction (409 if no bed is free or the admission is over)."""
    row = await _active(uow, admission_id, "transferred")
    if await store.get_ward(uow.conn, ward_id) is None:
        raise UnknownError("ward")
    if bed_id == row["bed_id"]:
        raise InvalidTransitionError("the patient is already in that bed")
    new_bed = await _target_bed(uow, ward_id, bed_id)
    old_bed = await store.get_bed(uow.conn, row["bed_id"], lock=True)
    assert old_bed is not None
    await _move_bed(uow, old_bed, BedAction.VACATE)
    await store.set_bed_state(uow.conn, new_bed, bed_transition(BedState.AVAILABLE, BedAction.OCCUPY))
    moment = uow.clock()
    await store.end_stay(uow.conn, admission_id, moment)
    await store.start_stay(uow.conn, admission_id, ward_id, new_bed, moment)
    moved = await store.move_admission(uow.conn, admission_id, ward_id, new_bed)
    uow.add(
        PatientTransferred(
            admission_id=admission_id,
            patient_id=row["patient_id"],
            from_ward_id=row["ward_id"],
            from_bed_id=row["bed_id"],
            to_ward_id=ward_id,
            to_bed_id=new_bed,
            transferred_at=moment,
        ),
        aggregate_id=admission_id,
        aggregate_version=moved["version"],
    )
    return moved


@dataclass
class Posted:
    posted: int = 0
    already_posted: int = 0


async def post_nights(uow: UnitOfWork, row: dict[str, Any], through: date, zone: ZoneInfo) -> Posted:
    """Charge every night of the admission up to ``through`` that is not charged yet (the caller
    holds the admission's row lock; the unique (admission, night) is the last word)."""
    admitted_on = local_date(row["admitted_at"], zone)
    discharged_on = local_date(row["discharged_at"], zone) if row["discharged_at"] else None
    due = nights_due(admitted_on, discharged_on, through)
    have = await store.charged_nights(uow.conn, row["id"])
    out = Posted(already_posted=sum(1 for n in due if n in have))
    missing = [n for n in due if n not in have]
    if not missing:
        return out
    stays = await store.stays(uow.conn, row["id"])
    wards: dict[uuid.UUID, dict[str, Any]] = {}
    for night in missing:
        ward_id = ward_for_night(stays, night, zone)
        if ward_id not in wards:
            ward = await store.get_ward(uow.conn, ward_id)
            assert ward is not None  # wards are never deleted
            wards[ward_id] = ward
        ward = wards[ward_id]
        charge = {
            "id": uuid.uuid4(),
            "admission_id": row["id"],
            "night": night,
            "ward_id": ward_id,
            "ward_type": ward["ward_type"],
            "amount": ward["daily_rate"],
            "currency": ward["currency"],
        }
        if not await store.insert_charge(uow.conn, charge):
            out.already_posted += 1
            continue
        out.posted += 1
        uow.add(
            BedChargePosted(
                charge_id=charge["id"],
                patient_id=row["patient_id"],
                **{k: charge[k] for k in ("admission_id", "night", "ward_id", "ward_type", "amount", "currency")},
            ),
            aggregate_id=row["id"],
        )
    return out


async def discharge(uow: UnitOfWork, admission_id: uuid.UUID, actor: uuid.UUID, zone: ZoneInfo) -> dict[str, Any]:
    """Discharge: first post every night still owed, then close the admission and send the bed to
    cleaning, all in one transaction. The answer carries ``nights``, the total charged."""
    row = await _active(uow, admission_id, "discharged")
    moment = max(uow.clock(), row["admitted_at"])
    await post_nights(uow, {**row, "discharged_at": moment}, local_date(moment, zone), zone)
    done = await store.mark_discharged(uow.conn, admission_id, moment, actor)
    await store.end_stay(uow.conn, admission_id, moment)
    bed = await store.get_bed(uow.conn, row["bed_id"], lock=True)
    assert bed is not None
    await _move_bed(uow, bed, BedAction.VACATE)
    nights = await store.count_charges(uow.conn, admission_id)
    uow.add(
        PatientDischarged(
            admission_id=admission_id,
            patient_id=row["patient_id"],
            ward_id=row["ward_id"],
            bed_id=row["bed_id"],
            admitted_at=row["admitted_at"],
            discharged_at=done["discharged_at"],
            nights=nights,
        ),
        aggregate_id=admission_id,
        aggregate_version=done["version"],
    )
    return {**done, "nights": nights}


@dataclass
class RunSummary:
    night: date
    admissions: int = 0
    posted: int = 0
    already_posted: int = 0
    failed: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "date": self.night.isoformat(),
            "admissions": self.admissions,
            "posted": self.posted,
            "already_posted": self.already_posted,
            "failed": self.failed,
        }


async def run_charges(db: Database, through: date, zone: ZoneInfo) -> RunSummary:
    """The nightly job: for every active admission, post each night up to and including
    ``through`` not posted yet. Each admission has its own transaction, so one that fails is
    counted and logged and the others are still charged; re-running never charges twice."""
    summary = RunSummary(through)
    async with db.pool.acquire() as conn:
        due = await store.due_admissions(conn, day_end(through, zone))
    for admission_id in due:
        summary.admissions += 1
        try:
            async with db.uow() as uow:
                row = await store.get_admission(uow.conn, admission_id, lock=True)
                if row is None or row["status"] != AdmissionStatus.ACTIVE:
                    continue  # discharged meanwhile: the discharge posted its nights
                done = await post_nights(uow, row, through, zone)
        except Exception:  # one bad admission must not stop the night's run
            log.exception("bed charges for admission %s failed", admission_id)
            summary.failed += 1
            continue
        summary.posted += done.posted
        summary.already_posted += done.already_posted
    log.info("bed charges through %s: %s", through, summary.as_json())
    return summary
