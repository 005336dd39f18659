"""Internal HTTP API of the patients service (reached through the gateway).

Every route re-verifies the caller's token. A patient reaches only the record linked to their
own account, and any other id answers 404, exactly as an id that does not exist, so ids cannot
be probed. Staff reach patients by role, except clinicians (DOCTOR, NURSE), who need a care
relationship or an emergency grant. Every route calls one use case of
``his.patients.chart.Chart``, which decides, records the access and owns the transaction.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from his.kernel.json import JsonLike
from his.kernel.params import CalendarDate, Limit, SearchText
from his.kernel.problems import ProblemError
from his.kernel.web import Caller, errors, public
from his.patients import domain
from his.patients.api import care, invitations, lab, records  # noqa: F401  (their routes, before /{patient_id})
from his.patients.api.access import ONE_PATIENT, Patients, router
from his.patients.api.patient import Patient, RestrictedPatient
from his.patients.chart import MAX_IDS
from his.patients.domain import NewPatient, PatientChanges, Sex

#: The service's routes, once all are added.
__all__ = ["router"]


class Coverage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payer: str = Field(min_length=1, max_length=64)
    member_id: str = Field(min_length=1, max_length=64)


class RegisterPatient(BaseModel):
    model_config = ConfigDict(extra="forbid")
    given_name: str = Field(min_length=1, max_length=100)
    family_name: str = Field(min_length=1, max_length=100)
    birth_date: date
    sex: Sex
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=32)
    #: No longer links the record to an account: a value is refused (422). The patient links
    #: their own account by redeeming an invitation (``POST /api/patients/{id}/invitations``).
    user_id: uuid.UUID | None = None
    coverage: Coverage | None = None
    #: Register even though likely duplicates exist (after a 409 listing them).
    confirm_duplicate: bool = False


class UpdatePatient(BaseModel):
    """Fields to change; those left out stay as they are (``null`` clears email, phone, coverage)."""

    model_config = ConfigDict(extra="forbid")
    given_name: str | None = Field(default=None, min_length=1, max_length=100)
    family_name: str | None = Field(default=None, min_length=1, max_length=100)
    birth_date: date | None = None
    sex: Sex | None = None
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=32)
    coverage: Coverage | None = None


class Registered(BaseModel):
    id: uuid.UUID
    mrn: str


class SearchResults(BaseModel):
    items: list[Patient | RestrictedPatient]


@router.post(
    "",
    status_code=201,
    responses=errors(403, (409, "likely duplicates: `possible_duplicates` lists them")),
    openapi_extra=public("/api/patients"),
)
async def register(body: RegisterPatient, who: Caller, chart: Patients) -> Registered:
    """Register a patient (RECEPTIONIST, ADMIN); publishes ``his.patients.patient.registered.v1``.
    A ``coverage.payer`` billing has no plan for is a 422 naming the valid payers (``GET /api/payers``).
    Likely duplicates answer 409 listing them (``possible_duplicates``); register anyway with
    ``confirm_duplicate: true``.

    ``user_id`` is refused: a record is linked to an account only by the patient, redeeming an
    invitation from that account (``POST /api/patients/{id}/invitations``)."""
    coverage = (body.coverage.payer, body.coverage.member_id) if body.coverage else None
    cmd = NewPatient(
        body.given_name, body.family_name, body.birth_date, body.sex, body.email, body.phone, body.user_id, coverage
    )
    patient_id, mrn = await chart.register(who, cmd, confirm_duplicate=body.confirm_duplicate)
    return Registered(id=patient_id, mrn=mrn)


@router.get("/me", responses=errors(404), openapi_extra=public("/api/patients/me"))
async def me(who: Caller, chart: Patients) -> Patient:
    """The caller's own patient record."""
    return Patient.model_validate(await chart.mine(who))


@router.get(
    "",
    summary="Search or Look Up by Id",
    responses=errors(403, (422, "`id` together with `q` or `birth_date`, more than 200 ids, or invalid values")),
    openapi_extra=public("/api/patients"),
)
async def search(
    who: Caller,
    chart: Patients,
    *,
    q: Annotated[SearchText | None, Query(max_length=100)] = None,
    birth_date: CalendarDate | None = None,
    limit: Limit = 20,
    ids: Annotated[
        list[uuid.UUID] | None,
        Query(alias="id", max_length=MAX_IDS, description=f"a patient's id; repeat it for up to {MAX_IDS} patients"),
    ] = None,
) -> SearchResults:
    """Find patients by MRN, by name (accents, case and small typos do not matter) and/or by
    birth date, best matches first; or look patients up by id (staff only; patients get 403).

    By id: give `id` once per patient (`?id=…&id=…`), up to 200 of them, and neither `q` nor
    `birth_date` (with either, it is a 422; so are more than 200 ids and an id that is not a
    UUID). The patients come in the order their ids were given, each once; ids no patient has
    are left out; `limit` applies to the search only. One call names the patients of a whole
    list (a day's appointments, say) instead of one read per patient.

    Either way, a clinician sees the full record only of patients in their care (or under an
    emergency grant, audited as such); of others, just enough to recognise them, marked
    ``"restricted": true``. Every patient answered is recorded in the audit trail (a search's
    as searched, a look-up's as read).
    """
    if ids is None:
        found = await chart.search(who, q, birth_date, limit)
    elif q is None and birth_date is None:
        found = await chart.by_ids(who, ids)
    else:
        detail = "give id alone (one or more), or q and/or birth_date: not both"
        names = [n for n, v in (("q", q), ("birth_date", birth_date)) if v is not None]
        errs: list[JsonLike] = [{"loc": [name], "msg": "not with id"} for name in names]
        raise ProblemError(422, detail, errors=errs)
    return SearchResults(
        items=[
            RestrictedPatient.model_validate(f.patient) if f.restricted else Patient.model_validate(f.patient)
            for f in found
        ]
    )


@router.get(
    "/{patient_id}",
    responses=ONE_PATIENT,
    openapi_extra=public("/api/patients/{id}"),
)
async def get(patient_id: uuid.UUID, who: Caller, chart: Patients) -> Patient:
    """One patient's master data: the patient themself, or staff (clinicians need a care relationship).

    A clinician without one gets 403 with an ``emergency_access`` member saying how to
    request break-the-glass access.
    """
    return Patient.model_validate(await chart.patient(who, patient_id))


@router.patch(
    "/{patient_id}",
    responses=ONE_PATIENT,
    openapi_extra=public("/api/patients/{id}"),
)
async def update(patient_id: uuid.UUID, body: UpdatePatient, who: Caller, chart: Patients) -> Patient:
    """Change a patient's master data (RECEPTIONIST, ADMIN); a patient may change their own
    e-mail and phone. Publishes ``his.patients.patient.updated.v1`` naming the changed fields, and
    ``his.patients.coverage.changed.v1`` when the coverage's payer changes (billing reprices from it).
    A payer billing has no plan for is a 422 naming the valid payers."""
    coverage = domain.Coverage(body.coverage.payer, body.coverage.member_id) if body.coverage else None
    changes = PatientChanges(
        frozenset(body.model_fields_set),
        given_name=body.given_name,
        family_name=body.family_name,
        birth_date=body.birth_date,
        sex=body.sex,
        email=body.email,
        phone=body.phone,
        coverage=coverage,
    )
    return Patient.model_validate(await chart.update(who, patient_id, changes))
