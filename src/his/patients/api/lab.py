"""Lab results in the patient's chart (copied from the laboratory's ``order.resulted`` events):
read by the patient and by clinicians with a care relationship or an emergency grant, under the
same rules and audit as the medical record."""

from __future__ import annotations

import uuid
from decimal import Decimal

from pydantic import BaseModel

from his.kernel.params import Limit
from his.kernel.web import Caller, Moment, public
from his.patients.api.access import ONE_PATIENT, Patients, router
from his.patients.domain import LabResult, ResultedOrder


class ChartResult(BaseModel):
    code: str
    value: str
    unit: str | None
    reference_low: str | None
    reference_high: str | None
    flag: str

    @classmethod
    def of(cls, r: LabResult) -> ChartResult:
        return cls(
            code=r.code,
            value=r.value,
            unit=r.unit,
            reference_low=_dec(r.reference_low),
            reference_high=_dec(r.reference_high),
            flag=r.flag,
        )


class ChartOrder(BaseModel):
    """One resulted lab order, as the chart keeps it."""

    order_id: uuid.UUID
    ordered_by: uuid.UUID
    priority: str
    resulted_at: Moment
    results: list[ChartResult]

    @classmethod
    def of(cls, o: ResultedOrder) -> ChartOrder:
        return cls(
            order_id=o.order_id,
            ordered_by=o.ordered_by,
            priority=o.priority,
            resulted_at=o.resulted_at,
            results=[ChartResult.of(r) for r in o.results],
        )


class ChartLabResults(BaseModel):
    items: list[ChartOrder]


@router.get("/{patient_id}/lab-results", responses=ONE_PATIENT, openapi_extra=public("/api/patients/{id}/lab-results"))
async def read(patient_id: uuid.UUID, who: Caller, chart: Patients, limit: Limit = 50) -> ChartLabResults:
    """A patient's lab results, by order, most recently resulted first: the patient, or
    clinicians with a care relationship or emergency grant (as for the medical record)."""
    return ChartLabResults(items=[ChartOrder.of(o) for o in await chart.lab_results(who, patient_id, limit)])


def _dec(v: Decimal | None) -> str | None:
    return None if v is None else str(v)
