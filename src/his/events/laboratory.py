"""Events published by the laboratory service (ids, codes, values and tariffs; never free text)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from his.kernel.events import Event, event


class ResultItem(BaseModel):
    """One measured value of an order, with its unit, reference range and HL7-style flag.

    ``flag`` is one of N (normal), L, H (abnormal low/high), A (abnormal), LL, HH (critical).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    code: str
    value: str
    unit: str | None = None
    reference_low: Decimal | None = None
    reference_high: Decimal | None = None
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
    """Results of an order were released (billable). Read by patients (chart), inventory
    (reagents), billing (charges) and notifications (abnormal or critical results)."""

    type = "his.laboratory.order.resulted.v1"
    order_id: uuid.UUID
    patient_id: uuid.UUID
    ordered_by: uuid.UUID
    priority: str
    resulted_at: datetime
    results: list[ResultItem]
    charges: list[LabCharge]
    #: True when any result is abnormal (flag other than N); ``critical`` when any is LL or HH.
    abnormal: bool
    critical: bool
