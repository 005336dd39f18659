"""Lab results in the patient's chart (copied from the laboratory's ``order.resulted`` events):
read by the patient and by clinicians with a care relationship or an emergency grant, under the
same rules and audit as the medical record."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request

from his.kernel.params import Limit
from his.kernel.service import ServiceContext
from his.patients import store
from his.patients.api.access import CARE_REQUIRED_RESPONSE, Guard
from his.patients.policy import Operation


def lab_router(ctx: ServiceContext, guard: Guard) -> APIRouter:
    r = APIRouter()

    @r.get("/{patient_id}/lab-results", responses=CARE_REQUIRED_RESPONSE)
    async def read(patient_id: uuid.UUID, request: Request, limit: Limit = 50) -> Any:
        """A patient's lab results, by order, most recently resulted first: the patient, or
        clinicians with a care relationship or emergency grant (as for the medical record)."""
        who = await guard.caller(request)
        async with ctx.db.read() as uow:
            _, decision = await guard.open(uow, who, patient_id, Operation.READ_CLINICAL, resource="patient/lab_result")
            rows = await store.lab_results(uow.conn, patient_id, limit) if decision.allowed else []
        if not decision.allowed:
            return guard.refusal(patient_id, decision)
        return {"items": _by_order(rows)}

    return r


def _dec(v: Any) -> str | None:
    return None if v is None else str(v)


def _by_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    orders: dict[uuid.UUID, dict[str, Any]] = {}
    for x in rows:
        order = orders.setdefault(
            x["order_id"],
            {
                "order_id": str(x["order_id"]),
                "ordered_by": str(x["ordered_by"]),
                "priority": x["priority"],
                "resulted_at": x["resulted_at"].isoformat(),
                "results": [],
            },
        )
        order["results"].append(
            {
                "code": x["code"],
                "value": x["value"],
                "unit": x["unit"],
                "reference_low": _dec(x["reference_low"]),
                "reference_high": _dec(x["reference_high"]),
                "flag": x["flag"],
            }
        )
    return list(orders.values())
