"""Medical-record entries: written by clinicians with a care relationship (or an emergency grant),
read by them and by the patient. The text is encrypted at rest (AES-256-GCM, bound to its patient
and entry); every read and write is audited; events say only that an entry of a kind was added.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from his.kernel.params import Limit
from his.kernel.web import Caller, Moment, public
from his.patients.api.access import ONE_PATIENT, Patients, router
from his.patients.domain import RECORD_TEXT_MAX


class NewEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["note", "diagnosis", "allergy", "medication", "observation"]
    #: A coded value where one exists (e.g. an ICD-10 code), letters, digits, dots and dashes.
    code: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.\-]{1,32}$")
    text: str = Field(min_length=1, max_length=RECORD_TEXT_MAX)


class EntryCreated(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    created_at: Moment


class RecordEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    kind: str
    code: str | None
    text: str
    author_id: uuid.UUID
    author_roles: list[str]
    created_at: Moment


class Record(BaseModel):
    items: list[RecordEntry]


@router.post(
    "/{patient_id}/records", status_code=201, responses=ONE_PATIENT, openapi_extra=public("/api/patients/{id}/records")
)
async def add(patient_id: uuid.UUID, body: NewEntry, who: Caller, chart: Patients) -> EntryCreated:
    """Add an entry to a patient's medical record (DOCTOR, NURSE with a care relationship or an
    emergency grant). Its text is stored encrypted; publishes ``record_entry.added`` (no text)."""
    return EntryCreated.model_validate(await chart.add_entry(who, patient_id, body.kind, body.code, body.text))


@router.get("/{patient_id}/records", responses=ONE_PATIENT, openapi_extra=public("/api/patients/{id}/records"))
async def read(patient_id: uuid.UUID, who: Caller, chart: Patients, limit: Limit = 50) -> Record:
    """A patient's medical record, newest first: the patient, or clinicians with a care
    relationship or emergency grant (other staff are refused: clinical text is not theirs)."""
    return Record(items=[RecordEntry.model_validate(e) for e in await chart.entries(who, patient_id, limit)])
