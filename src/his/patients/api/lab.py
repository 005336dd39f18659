"""Lab results in the patient's chart (copied from the laboratory's ``order.resulted`` events):
read by the patient and by clinicians with a care relationship or an emergency grant, under the
same rules and audit as the medical record."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from his.kernel.params import Limit
from his.kernel.web import Caller, Moment
from his.patients.api.access import ONE_PATIENT, Patients

router = APIRouter()


class ChartResult(BaseModel):
    code: str
    value: str
    unit: str | None
    reference_low: str | None
    reference_high: str | None
    flag: str


class ChartOrder(BaseModel):
    """One resulted lab order, as the chart keeps it."""

    order_id: uuid.UUID
    ordered_by: uuid.UUID
    priority: str
    resulted_at: Moment
    results: list[ChartResult]


class ChartLabResults(BaseModel):
    items: list[ChartOrder]


@router.get("/{patient_id}/lab-results", responses=ONE_PATIENT)
async def read(patient_id: uuid.UUID, who: Caller, chart: Patients, limit: Limit = 50) -> ChartLabResults:
    """A patient's lab results, by order, most recently resulted first: the patient, or
    clinicians with a care relationship or emergency grant (as for the medical record)."""
    return ChartLabResults(items=_by_order(await chart.lab_results(who, patient_id, limit)))


def _dec(v: Decimal | None) -> str | None:
    return None if v is None else str(v)


def _by_order(rows: list[dict[str, Any]]) -> list[ChartOrder]:
    orders: dict[uuid.UUID, ChartOrder] = {}
    for x in rows:
        order = orders.get(x["order_id"])
        if order is None:
            order = orders[x["order_id"]] = ChartOrder(
                order_id=x["order_id"],
                ordered_by=x["ordered_by"],
                priority=x["priority"],
                resulted_at=x["resulted_at"],
                results=[],
            )
        order.results.append(
            ChartResult(
                code=x["code"],
                value=x["value"],
                unit=x["unit"],
                reference_low=_dec(x["reference_low"]),
                reference_high=_dec(x["reference_high"]),
                flag=x["flag"],
            )
        )
    return list(orders.values())
