"""A patient's master data as the API answers it."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel

from his.kernel.web import Moment


class CoverageOut(BaseModel):
    """Who pays the insured share: a payer plan (``GET /api/payers``) and the member's id."""

    payer: str
    member_id: str


class Patient(BaseModel):
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

    @classmethod
    def of(cls, row: dict[str, Any]) -> Patient:
        payer = row["coverage_payer"]
        coverage = CoverageOut(payer=payer, member_id=row["coverage_member_id"]) if payer else None
        fields = {k: row[k] for k in cls.model_fields if k != "coverage"}
        return cls(**fields, coverage=coverage)


class RestrictedPatient(BaseModel):
    """What a clinician's search shows of a patient outside their care: enough to recognise
    them (and request emergency access), no contact or coverage details."""

    id: uuid.UUID
    mrn: str
    given_name: str
    family_name: str
    birth_date: date
    sex: str
    restricted: Literal[True] = True

    @classmethod
    def of(cls, row: dict[str, Any]) -> RestrictedPatient:
        return cls(**{k: row[k] for k in cls.model_fields if k != "restricted"})
