"""Internal HTTP API of the admissions service (reached through the gateway).

Every route re-verifies the caller's token and calls one use case of
``his.admissions.handlers.Admissions``. Wards and beds are visible to all staff (every role
but PATIENT) and shaped by ADMIN; nurses and ADMIN move beds through housekeeping, closure and
isolation. Admissions are a patient's data, decided by ``his.admissions.policy``: reception and
ADMIN admit, read, move and discharge anyone; clinicians only patients in their care or under an
emergency grant (else 403, offering emergency access); billing reads the bed charges; never
patients through this API. Every decision on one, allowed or denied, is audited.
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from his.admissions import domain, handlers
from his.admissions.domain import MAX_BEDS_PER_WARD, BedAction, BedState
from his.admissions.handlers import Admissions, AdmissionView, DischargeView, WardView
from his.kernel.params import CalendarDate, Limit
from his.kernel.web import Caller, Moment, errors, provided, public

router = APIRouter(tags=["admissions"])
Wards = Annotated[Admissions, Depends(provided(Admissions))]


def money(amount: Decimal) -> str:
    return f"{amount:.2f}"


class NewWard(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    type: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", max_length=32)
    daily_rate: Decimal = Field(ge=0, max_digits=12, decimal_places=2)
    currency: str = Field(pattern=r"^[A-Z]{3}$", max_length=3)
    beds: int = Field(ge=1, le=MAX_BEDS_PER_WARD)
    rooms: int | None = Field(default=None, ge=1, le=MAX_BEDS_PER_WARD)


class WardChanges(BaseModel):
    """What may be corrected on a ward; fields left out stay as they are (beds are not changed here)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    type: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,31}$", max_length=32)
    daily_rate: Decimal | None = Field(default=None, ge=0, max_digits=12, decimal_places=2)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", max_length=3)


class NewAdmission(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    ward_id: uuid.UUID


class Transfer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ward_id: uuid.UUID
    bed_id: uuid.UUID | None = None


class BedStep(StrEnum):
    """What staff may do to a bed; occupying and vacating follow admissions."""

    RELEASE = "release"
    CLOSE = "close"
    OPEN = "open"
    ISOLATE = "isolate"


class Created(BaseModel):
    id: uuid.UUID


class Admitted(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    bed_id: uuid.UUID
    ward_id: uuid.UUID
    status: str


class BedCounts(BaseModel):
    """How many beds the ward has, and how many in each state."""

    total: int
    available: int
    occupied: int
    cleaning: int
    closed: int
    isolation: int


class Ward(BaseModel):
    id: uuid.UUID
    name: str
    type: str
    daily_rate: str
    currency: str
    beds: BedCounts
    created_at: Moment
    updated_at: Moment | None

    @classmethod
    def of(cls, v: WardView) -> Ward:
        w = v.ward
        return cls(
            id=w.id,
            name=w.name,
            type=w.ward_type,
            daily_rate=money(w.daily_rate),
            currency=w.currency,
            beds=BedCounts(total=sum(v.beds.values()), **v.beds),
            created_at=w.created_at,
            updated_at=w.updated_at,
        )


class WardDetail(Ward):
    #: Its rooms, in order.
    rooms: list[str]


class WardList(BaseModel):
    items: list[Ward]


class Bed(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    ward_id: uuid.UUID
    room: str
    label: str
    state: BedState
    version: int
    updated_at: Moment


class Beds(BaseModel):
    items: list[Bed]


class Admission(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    ward_id: uuid.UUID
    bed_id: uuid.UUID
    status: str
    admitted_at: Moment
    discharged_at: Moment | None
    version: int


class AdmissionList(BaseModel):
    items: list[Admission]


class Stay(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    ward_id: uuid.UUID
    bed_id: uuid.UUID
    #: The bed's label.
    bed: str
    started_at: Moment
    ended_at: Moment | None


class AdmissionDetail(Admission):
    #: Bed nights charged so far.
    nights: int
    stays: list[Stay]

    @classmethod
    def of(cls, v: AdmissionView) -> AdmissionDetail:
        stays = [Stay.model_validate(s) for s in v.stays]
        return cls(**Admission.model_validate(v.admission).model_dump(), nights=v.nights, stays=stays)


class Discharged(Admission):
    #: Bed nights charged in all.
    nights: int

    @classmethod
    def of(cls, v: DischargeView) -> Discharged:
        return cls(**Admission.model_validate(v.admission).model_dump(), nights=v.nights)


class Charge(BaseModel):
    id: uuid.UUID
    night: date
    ward_id: uuid.UUID
    ward_type: str
    amount: str
    currency: str
    posted_at: Moment

    @classmethod
    def of(cls, c: domain.BedCharge) -> Charge:
        return cls(
            id=c.id,
            night=c.night,
            ward_id=c.ward_id,
            ward_type=c.ward_type,
            amount=money(c.amount),
            currency=c.currency,
            posted_at=c.posted_at,
        )


class Money(BaseModel):
    amount: str
    currency: str


class Charges(BaseModel):
    admission_id: uuid.UUID
    nights: int
    items: list[Charge]
    #: The sum per currency.
    totals: list[Money]

    @classmethod
    def of(cls, admission_id: uuid.UUID, items: list[domain.BedCharge]) -> Charges:
        totals: dict[str, Decimal] = {}
        for c in items:
            totals[c.currency] = totals.get(c.currency, Decimal("0")) + c.amount
        return cls(
            admission_id=admission_id,
            nights=len(items),
            items=[Charge.of(c) for c in items],
            totals=[Money(amount=money(v), currency=k) for k, v in sorted(totals.items())],
        )


class ChargeRun(BaseModel):
    date: date
    admissions: int
    posted: int
    already_posted: int
    failed: int


# --- wards and beds ------------------------------------------------------------------------------


@router.post("/wards", status_code=201, responses=errors(403), openapi_extra=public("/api/wards"))
async def create_ward(body: NewWard, who: Caller, wards: Wards) -> Created:
    """Create a ward with ``beds`` beds spread over ``rooms`` rooms (default one), all available
    (ADMIN). Beds are labelled by room, e.g. ``R1-B2``. A currency billing does not invoice in
    is a 422 naming the valid ones."""
    spec = handlers.NewWard(body.name, body.type, body.daily_rate, body.currency, body.beds, body.rooms)
    return Created(id=(await wards.create_ward(who, spec)).id)


@router.patch("/wards/{ward_id}", responses=errors(403, 404), openapi_extra=public("/api/wards/{id}"))
async def correct_ward(ward_id: uuid.UUID, body: WardChanges, who: Caller, wards: Wards) -> Ward:
    """Correct what was entered for a ward: name, type, daily rate, currency (ADMIN). Nights
    posted from now on carry the new rate and currency; publishes
    ``his.admissions.ward.updated.v1`` when anything changed. A currency billing does not
    invoice in is a 422 naming the valid ones."""
    changes = domain.WardChanges(
        name=body.name, ward_type=body.type, daily_rate=body.daily_rate, currency=body.currency
    )
    return Ward.of(await wards.correct_ward(who, ward_id, changes))


@router.get("/wards", responses=errors(403), openapi_extra=public("/api/wards"))
async def list_wards(who: Caller, wards: Wards) -> WardList:
    """Every ward with its daily rate and how many beds are in each state (staff)."""
    return WardList(items=[Ward.of(w) for w in await wards.wards(who)])


@router.get("/wards/{ward_id}", responses=errors(403, 404), openapi_extra=public("/api/wards/{id}"))
async def one_ward(ward_id: uuid.UUID, who: Caller, wards: Wards) -> WardDetail:
    """One ward: rate, rooms and bed counts per state (staff)."""
    view = await wards.ward(who, ward_id)
    return WardDetail(**Ward.of(view).model_dump(), rooms=view.rooms or [])


@router.get("/beds", responses=errors(403, 404), openapi_extra=public("/api/beds"))
async def list_beds(
    who: Caller,
    wards: Wards,
    ward_id: uuid.UUID | None = None,
    state: BedState | None = None,
    limit: Limit = MAX_BEDS_PER_WARD,
) -> Beds:
    """Beds and their states, of one ward or all, optionally of one state (staff)."""
    return Beds(items=[Bed.model_validate(b) for b in await wards.beds(who, ward_id, state, limit)])


@router.post(
    "/beds/{bed_id}/{action}", responses=errors(403, 404, 409), openapi_extra=public("/api/beds/{id}/{action}")
)
async def bed_step(bed_id: uuid.UUID, action: BedStep, who: Caller, wards: Wards) -> Bed:
    """Release a cleaned bed (housekeeping), close or open one, or put it in isolation (NURSE,
    ADMIN). A step the bed's state does not allow answers 409."""
    return Bed.model_validate(await wards.bed_step(who, bed_id, BedAction(action.value)))


# --- admissions ------------------------------------------------------------------------------


@router.post("/admissions/charges/run", responses=errors(403), openapi_extra=public("/api/admissions/charges/run"))
async def run_charges(who: Caller, wards: Wards, night: Annotated[CalendarDate, Query(alias="date")]) -> ChargeRun:
    """Post the bed charges of every night up to and including ``date`` not posted yet (ADMIN).
    Idempotent: a re-run posts nothing new; a later run catches up nights that were missed.
    Only nights that are over can be charged: ``date`` must be before today (hospital time)."""
    done = await wards.run_charges(who, night)
    return ChargeRun(
        date=done.night,
        admissions=done.admissions,
        posted=done.posted,
        already_posted=done.already_posted,
        failed=done.failed,
    )


@router.post("/admissions", status_code=201, responses=errors(403, 404, 409), openapi_extra=public("/api/admissions"))
async def admit(body: NewAdmission, who: Caller, wards: Wards) -> Admitted:
    """Admit a patient to a free bed of the ward (RECEPTIONIST, ADMIN). 409 when the ward has no
    free bed or the patient is already admitted; 422 for an unknown patient or ward."""
    return Admitted.model_validate(
        await wards.admit(who, handlers.Admit(body.patient_id, body.practitioner_id, body.ward_id))
    )


@router.get("/admissions", responses=errors(403, 404), openapi_extra=public("/api/admissions"))
async def list_admissions(
    who: Caller, wards: Wards, patient_id: uuid.UUID | None = None, active: bool | None = None, limit: Limit = 50
) -> AdmissionList:
    """Admissions, latest first: of one patient, and/or only active ones (reception, ADMIN); a
    clinician lists one patient's (``patient_id``), in their care or under an emergency grant."""
    found = await wards.admissions(who, patient_id, active, limit)
    return AdmissionList(items=[Admission.model_validate(a) for a in found])


@router.get("/admissions/{admission_id}", responses=errors(403, 404), openapi_extra=public("/api/admissions/{id}"))
async def one(admission_id: uuid.UUID, who: Caller, wards: Wards) -> AdmissionDetail:
    """One admission with the beds it went through and how many nights are charged so far
    (reception, ADMIN, clinicians caring for the patient)."""
    return AdmissionDetail.of(await wards.admission(who, admission_id))


@router.get(
    "/admissions/{admission_id}/charges",
    responses=errors(403, 404),
    openapi_extra=public("/api/admissions/{id}/charges"),
)
async def charges(admission_id: uuid.UUID, who: Caller, wards: Wards) -> Charges:
    """The bed nights charged for an admission, one per night (reception, ADMIN, BILLING,
    clinicians caring for the patient)."""
    return Charges.of(admission_id, await wards.charges(who, admission_id))


@router.post(
    "/admissions/{admission_id}/transfer",
    responses=errors(403, 404, 409),
    openapi_extra=public("/api/admissions/{id}/transfer"),
)
async def transfer(admission_id: uuid.UUID, body: Transfer, who: Caller, wards: Wards) -> Admission:
    """Move an admitted patient to a free bed of a ward (or the bed named): the old bed goes to
    cleaning (RECEPTIONIST, ADMIN, a DOCTOR or NURSE caring for the patient). 409 if no bed is
    free or the admission is over."""
    return Admission.model_validate(await wards.transfer(who, admission_id, body.ward_id, body.bed_id))


@router.post(
    "/admissions/{admission_id}/discharge",
    responses=errors(403, 404, 409),
    openapi_extra=public("/api/admissions/{id}/discharge"),
)
async def discharge(admission_id: uuid.UUID, who: Caller, wards: Wards) -> Discharged:
    """Discharge: every remaining bed night is charged first, then the admission closes and its
    bed goes to cleaning (RECEPTIONIST, ADMIN, a DOCTOR or NURSE caring for the patient). 409 if
    already discharged."""
    return Discharged.of(await wards.discharge(who, admission_id))
