"""Events published by the laboratory service: ids, test codes, flags and tariffs; never a measured
value and never free text (the values stay in laboratory, which patients asks for them: ADR 0032)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from his.kernel.events import Event, Superseded, event


class ResultItem(BaseModel):
    """One measured value of an order, with its unit, reference range and HL7-style flag (in
    ``his.laboratory.order.resulted.v1`` only: the value no longer travels).

    ``flag`` is one of N (normal), L, H (abnormal low/high), A (abnormal), LL, HH (critical).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    code: str
    value: str
    unit: str | None = None
    reference_low: Decimal | None = None
    reference_high: Decimal | None = None
    flag: str


class ResultFlag(BaseModel):
    """One resulted test of an order: its code and HL7-style flag, never its value.

    ``flag`` is one of N (normal), L, H (abnormal low/high), A (abnormal), LL, HH (critical).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    code: str
    flag: str


class LabCharge(BaseModel):
    """The catalogue price of one test of an order at the time it was resulted."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    code: str
    amount: Decimal
    currency: str


@event
class LabOrderPlaced(Event):
    """A doctor ordered lab tests for a patient."""

    type = "his.laboratory.order.placed.v1"
    order_id: uuid.UUID
    patient_id: uuid.UUID
    #: The ordering doctor's user id.
    ordered_by: uuid.UUID
    tests: list[str]
    priority: str
    placed_at: datetime


@event
class LabOrderCancelled(Event):
    """An order was cancelled before it was resulted: nothing is charged for it."""

    type = "his.laboratory.order.cancelled.v1"
    order_id: uuid.UUID
    patient_id: uuid.UUID
    cancelled_at: datetime


@event
class LabOrderResulted(Event):
    """Results of an order were released (billable): each test's code and flag, never its value.
    Read by patients (which asks laboratory for the values to put them in the chart), inventory
    (reagents), billing (charges) and notifications (abnormal or critical results)."""

    type = "his.laboratory.order.resulted.v2"
    order_id: uuid.UUID
    patient_id: uuid.UUID
    ordered_by: uuid.UUID
    priority: str
    resulted_at: datetime
    results: list[ResultFlag]
    charges: list[LabCharge]
    #: True when any result is abnormal (flag other than N); ``critical`` when any is LL or HH.
    abnormal: bool
    critical: bool


@event
class LabOrderResultedV1(Superseded):
    """Results of an order were released, with their values. No longer published: replaced by
    ``his.laboratory.order.resulted.v2``, which leaves the values out (they stayed in the streams
    for as long as the streams keep events). Its consumers read it as v2."""

    type = "his.laboratory.order.resulted.v1"
    order_id: uuid.UUID
    patient_id: uuid.UUID
    ordered_by: uuid.UUID
    priority: str
    resulted_at: datetime
    results: list[ResultItem]
    charges: list[LabCharge]
    abnormal: bool
    critical: bool

    def upcast(self) -> LabOrderResulted:
        """The same release without the values."""
        return LabOrderResulted(
            order_id=self.order_id,
            patient_id=self.patient_id,
            ordered_by=self.ordered_by,
            priority=self.priority,
            resulted_at=self.resulted_at,
            results=[ResultFlag(code=r.code, flag=r.flag) for r in self.results],
            charges=self.charges,
            abnormal=self.abnormal,
            critical=self.critical,
        )
