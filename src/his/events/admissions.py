"""Events published by the admissions service (ids, codes, dates and tariffs only)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from his.kernel.events import Event, event


@event
class PatientAdmitted(Event):
    """A patient was admitted and given a bed."""

    type = "his.admissions.admission.admitted.v1"
    admission_id: uuid.UUID
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    ward_id: uuid.UUID
    bed_id: uuid.UUID
    admitted_at: datetime


@event
class PatientTransferred(Event):
    """An admitted patient moved to another bed (possibly in another ward)."""

    type = "his.admissions.admission.transferred.v1"
    admission_id: uuid.UUID
    patient_id: uuid.UUID
    from_ward_id: uuid.UUID
    from_bed_id: uuid.UUID
    to_ward_id: uuid.UUID
    to_bed_id: uuid.UUID
    transferred_at: datetime


@event
class PatientDischarged(Event):
    """A patient left; every bed night of the admission has been posted before this event."""

    type = "his.admissions.admission.discharged.v1"
    admission_id: uuid.UUID
    patient_id: uuid.UUID
    ward_id: uuid.UUID
    bed_id: uuid.UUID
    admitted_at: datetime
    discharged_at: datetime
    #: How many bed nights the admission was charged in all.
    nights: int


@event
class BedChargePosted(Event):
    """One night in a bed was charged: at most one per admission and night.

    The ward's daily rate on that night is the tariff (admissions owns it).
    """

    type = "his.admissions.bed_charge.posted.v1"
    charge_id: uuid.UUID
    admission_id: uuid.UUID
    patient_id: uuid.UUID
    ward_id: uuid.UUID
    ward_type: str
    night: date
    amount: Decimal
    currency: str


@event
class WardUpdated(Event):
    """Staff corrected a ward (ADMIN): which fields changed, and the ward's tariff now.

    Nights posted from now on carry the new rate and currency. Billing keeps the corrected tariff:
    a night posted earlier in a currency billing cannot invoice is billed at it when replayed.
    """

    type = "his.admissions.ward.updated.v1"
    ward_id: uuid.UUID
    #: Names of the changed fields (``name``, ``type``, ``daily_rate``, ``currency``).
    fields: list[str]
    ward_type: str
    daily_rate: Decimal
    currency: str
