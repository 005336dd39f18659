"""A patient's master data as the API answers it, read from a ``his.patients.domain.Patient``
(``Patient.model_validate(patient)``)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict

from his.kernel.web import Moment


class CoverageOut(BaseModel):
    """Who pays the insured share: a payer plan (``GET /api/payers``) and the member's id."""

    model_config = ConfigDict(from_attributes=True)
    payer: str
    member_id: str


class Patient(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    #: The medical record number, unique in the hospital.
    mrn: str
    given_name: str
    family_name: str
    birth_date: date
    sex: str
    email: str | None
    phone: str | None
    #: The patient's own account, once they redeemed an invitation.
    user_id: uuid.UUID | None
    created_at: Moment
    coverage: CoverageOut | None


class RestrictedPatient(BaseModel):
    """What a clinician's search shows of a patient outside their care: enough to recognise
    them (and request emergency access), no contact or coverage details."""

    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    mrn: str
    given_name: str
    family_name: str
    birth_date: date
    sex: str
    restricted: Literal[True] = True
