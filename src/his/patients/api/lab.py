"""Lab results in the patient's chart (copied from the laboratory's ``order.resulted`` events):
read by the patient and by clinicians with a care relationship or an emergency grant, under the
same rules and audit as the medical record."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from his.events.audit import PatientsRecordAccessed, record_access
from his.kernel.problems import HTTPException
from his.kernel.service import ServiceContext
from his.patients import handlers, store
from his.patients.api.access import CARE_REQUIRED_RESPONSE, Guard
from his.patients.domain import Denial, may_read_records


def lab_router(ctx: ServiceContext, guard: Guard) -> APIRouter:
    r = APIRouter()

    @r.get("/{patient_id}/lab-results", responses=CARE_REQUIRED_RESPONSE)
    async def read(patient_id: uuid.UUID, request: Request, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Any:
        """A patient's lab results, by order, most recently resulted first: the patient, or
        clinicians with a care relationship or emergency grant (as for the medical record)."""
        who = await guard.caller(request)
        async with ctx.db.uow() as uow:
            row = await store.get_patient(uow.conn, patient_id)
            if row is None:
                raise HTTPException(404, "patient not found")
            owner = row["user_id"] is not None and str(row["user_id"]) == who.subject
            access = await handlers.access_to_patient(uow.conn, who, row, guard.clock())
            allowed = may_read_records(access, who.roles, owner=owner)
            record_access(uow, PatientsRecordAccessed, who, patient_id=patient_id, action="read",
                          resource="patient/lab_result", purpose=access.purpose.value,
                          outcome="allowed" if allowed else "denied")  # fmt: skip
            rows = await store.lab_results(uow.conn, patient_id, limit) if allowed else []
        if not allowed:
            if access.denial is Denial.CARE_RELATIONSHIP_REQUIRED:
                return guard.refusal(patient_id, access)
            if access.allowed:  # role-based staff: they may know the patient exists
                raise HTTPException(403, "lab results are for the patient and the clinicians caring for them")
            raise HTTPException(404, "patient not found")
        return {"items": _by_order(rows)}

    return r


def _dec(v: Any) -> str | None:
    return None if v is None else str(v)


def _by_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    orders: dict[uuid.UUID, dict[str, Any]] = {}
    for x in rows:
        order = orders.setdefault(x["order_id"], {
            "order_id": str(x["order_id"]), "ordered_by": str(x["ordered_by"]), "priority": x["priority"],
            "resulted_at": x["resulted_at"].isoformat(), "results": [],
        })  # fmt: skip
        order["results"].append({"code": x["code"], "value": x["value"], "unit": x["unit"],
                                 "reference_low": _dec(x["reference_low"]),
                                 "reference_high": _dec(x["reference_high"]), "flag": x["flag"]})  # fmt: skip
    return list(orders.values())
