"""Medical-record entries: written by clinicians with a care relationship (or an emergency grant),
read by them and by the patient. The text is encrypted at rest (AES-256-GCM, bound to its patient
and entry); every read and write is audited; events say only that an entry of a kind was added.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from his.events.patients import RecordEntryAdded
from his.kernel.crypto import DecryptionError, FieldCipher
from his.kernel.params import Limit
from his.kernel.problems import HTTPException
from his.kernel.service import ServiceContext
from his.patients import store
from his.patients.api.access import CARE_REQUIRED_RESPONSE, Guard
from his.patients.domain import RECORD_TEXT_MAX
from his.patients.policy import Operation


class NewEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["note", "diagnosis", "allergy", "medication", "observation"]
    #: A coded value where one exists (e.g. an ICD-10 code), letters, digits, dots and dashes.
    code: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.\-]{1,32}$")
    text: str = Field(min_length=1, max_length=RECORD_TEXT_MAX)


class EntryCreated(BaseModel):
    id: uuid.UUID
    created_at: str


def records_router(ctx: ServiceContext, guard: Guard, cipher: FieldCipher | None) -> APIRouter:
    r = APIRouter()

    def keys() -> FieldCipher:
        if cipher is None:
            raise HTTPException(503, "medical records are unavailable: no encryption key is configured")
        return cipher

    def aad(patient_id: uuid.UUID, entry_id: uuid.UUID) -> bytes:
        return f"patients.record_entry|{patient_id}|{entry_id}".encode()

    @r.post("/{patient_id}/records", status_code=201, response_model=EntryCreated, responses=CARE_REQUIRED_RESPONSE)
    async def add(patient_id: uuid.UUID, body: NewEntry, request: Request) -> Any:
        """Add an entry to a patient's medical record (DOCTOR, NURSE with a care relationship or an
        emergency grant). Its text is stored encrypted; publishes ``record_entry.added`` (no text)."""
        who = await guard.caller(request)
        aes = keys()
        entry_id = uuid.uuid4()
        async with ctx.db.uow() as uow:
            _, decision = await guard.open(
                uow, who, patient_id, Operation.WRITE_CLINICAL, resource="patient/record", action="create"
            )
            if decision.allowed:
                entry = {
                    "id": entry_id,
                    "patient_id": patient_id,
                    "kind": body.kind,
                    "code": body.code,
                    "text_cipher": aes.encrypt(body.text, aad(patient_id, entry_id)),
                    "author_id": uuid.UUID(who.subject),
                    "author_roles": sorted(who.roles),
                }
                created = await store.insert_record_entry(uow.conn, entry)
                uow.add(
                    RecordEntryAdded(entry_id=entry_id, patient_id=patient_id, kind=body.kind, code=body.code),
                    aggregate_id=patient_id,
                )
        if not decision.allowed:
            return guard.refusal(patient_id, decision)
        return EntryCreated(id=entry_id, created_at=created.isoformat())

    @r.get("/{patient_id}/records", responses=CARE_REQUIRED_RESPONSE)
    async def read(patient_id: uuid.UUID, request: Request, limit: Limit = 50) -> Any:
        """A patient's medical record, newest first: the patient, or clinicians with a care
        relationship or emergency grant (other staff are refused: clinical text is not theirs)."""
        who = await guard.caller(request)
        aes = keys()
        async with ctx.db.read() as uow:
            _, decision = await guard.open(uow, who, patient_id, Operation.READ_CLINICAL, resource="patient/record")
            entries = await store.record_entries(uow.conn, patient_id, limit) if decision.allowed else []
        if not decision.allowed:
            return guard.refusal(patient_id, decision)
        try:
            items = [_entry(e, aes.decrypt(e["text_cipher"], aad(patient_id, e["id"]))) for e in entries]
        except DecryptionError:
            raise HTTPException(503, "a record entry cannot be decrypted with the configured keys") from None
        return {"items": items}

    return r


def _entry(e: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": str(e["id"]),
        "kind": e["kind"],
        "code": e["code"],
        "text": text,
        "author_id": str(e["author_id"]),
        "author_roles": list(e["author_roles"]),
        "created_at": e["created_at"].isoformat(),
    }
