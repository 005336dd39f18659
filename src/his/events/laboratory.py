"""Events published by the laboratory service: ids and times in clear; the test codes, flags and
tariffs of a result sealed for the consumers that need them; never a measured value and never
free text (the values stay in laboratory, which patients asks for them: ADR 0032)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, PrivateAttr
from pydantic_settings import BaseSettings, SettingsConfigDict

from his.kernel.events import Envelope, Event, Superseded, event
from his.kernel.sealing import Seal, aad

#: The services that hold the key of a result's sealed content: laboratory seals it; billing
#: (charges per test), inventory (reagents per test) and notifications (alerts on flags) open it.
SEALED_FOR = ("laboratory", "billing", "inventory", "notifications")
#: The setting that gives them the key(s): comma-separated base64 AES-256 keys, newest first.
SEAL_SETTING = "HIS_LAB_SEAL_KEYS"


U = TypeVar("U")


class _SealSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HIS_", env_file=".env", extra="ignore")
    lab_seal_keys: str | None = None


def lab_seal() -> Seal:
    """The seal of results' content, from ``HIS_LAB_SEAL_KEYS`` (which may be missing until a
    service that needs it starts: ``Seal.require``)."""
    return Seal(SEAL_SETTING, _SealSettings().lab_seal_keys)


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
    """A doctor ordered lab tests for a patient (which tests stays in laboratory: no service
    needs them when the order is placed, and a test's code can say much about a patient)."""

    type = "his.laboratory.order.placed.v2"
    order_id: uuid.UUID
    patient_id: uuid.UUID
    #: The ordering doctor's user id.
    ordered_by: uuid.UUID
    priority: str
    placed_at: datetime


@event
class LabOrderPlacedV1(Superseded):
    """A doctor ordered lab tests, named. No longer published: replaced by
    ``his.laboratory.order.placed.v2``, which leaves the test codes out."""

    type = "his.laboratory.order.placed.v1"
    order_id: uuid.UUID
    patient_id: uuid.UUID
    ordered_by: uuid.UUID
    tests: list[str]
    priority: str
    placed_at: datetime

    def upcast(self) -> LabOrderPlaced:
        """The same order without its tests."""
        return LabOrderPlaced(
            order_id=self.order_id,
            patient_id=self.patient_id,
            ordered_by=self.ordered_by,
            priority=self.priority,
            placed_at=self.placed_at,
        )


@event
class LabOrderCancelled(Event):
    """An order was cancelled before it was resulted: nothing is charged for it."""

    type = "his.laboratory.order.cancelled.v1"
    order_id: uuid.UUID
    patient_id: uuid.UUID
    cancelled_at: datetime


class LabResultContent(BaseModel):
    """What a result's event carries sealed: each test's code and flag, the charges (which name
    the tests) and whether any result is abnormal or critical."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    results: list[ResultFlag]
    charges: list[LabCharge]
    #: True when any result is abnormal (flag other than N); ``critical`` when any is LL or HH.
    abnormal: bool
    critical: bool


class LabResults(BaseModel):
    """A released order as its consumers' handlers take it: the event's ids and times with its
    content, opened from a v3 event's box or read from an older event's clear fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    order_id: uuid.UUID
    patient_id: uuid.UUID
    ordered_by: uuid.UUID
    priority: str
    resulted_at: datetime
    results: list[ResultFlag]
    charges: list[LabCharge]
    abnormal: bool
    critical: bool


@event
class LabOrderResulted(Event):
    """Results of an order were released (billable). In clear only ids, the priority and the
    time; the tests' codes and flags, the charges and ``abnormal``/``critical`` travel in
    ``sealed`` (``LabResultContent``, AES-256-GCM under ``HIS_LAB_SEAL_KEYS``, bound to this
    event type, the order and the patient). Read by patients (ids only: it asks laboratory for
    the values), and, holding the key, inventory (reagents), billing (charges) and
    notifications (abnormal or critical results)."""

    type = "his.laboratory.order.resulted.v3"
    order_id: uuid.UUID
    patient_id: uuid.UUID
    ordered_by: uuid.UUID
    priority: str
    resulted_at: datetime
    #: ``LabResultContent``, sealed (``his.kernel.sealing``).
    sealed: str
    # An older version's content, which travelled in clear, kept by its upcast; never read from
    # the wire (a private attribute is not a field), so a v3 event's content is its box's.
    _clear: LabResultContent | None = PrivateAttr(default=None)

    @staticmethod
    def associated(order_id: uuid.UUID, patient_id: uuid.UUID) -> bytes:
        return aad(LabOrderResulted.type, order_id, patient_id)

    @classmethod
    def sealing(cls, seal: Seal, content: LabResultContent, **outer: object) -> LabOrderResulted:
        """The event with ``content`` sealed for its order and patient."""
        ev = cls.model_validate({**outer, "sealed": ""})
        box = seal.seal(content, cls.associated(ev.order_id, ev.patient_id))
        return ev.model_copy(update={"sealed": box})

    def opened(self, seal: Seal) -> LabResults:
        """The released order with its content; ``UnsealableError`` when the box does not open."""
        content = self._clear
        if content is None:
            content = seal.open(self.sealed, LabResultContent, self.associated(self.order_id, self.patient_id))
        outer = self.model_dump(exclude={"sealed"})
        return LabResults(**outer, **content.model_dump())


@event
class LabOrderResultedV2(Superseded):
    """Results of an order were released: each test's code and flag in clear. No longer
    published: replaced by ``his.laboratory.order.resulted.v3``, which seals them."""

    type = "his.laboratory.order.resulted.v2"
    order_id: uuid.UUID
    patient_id: uuid.UUID
    ordered_by: uuid.UUID
    priority: str
    resulted_at: datetime
    results: list[ResultFlag]
    charges: list[LabCharge]
    abnormal: bool
    critical: bool

    def upcast(self) -> LabOrderResulted:
        """As v3, its clear content kept beside an empty box (it never travelled sealed)."""
        ev = LabOrderResulted(
            order_id=self.order_id,
            patient_id=self.patient_id,
            ordered_by=self.ordered_by,
            priority=self.priority,
            resulted_at=self.resulted_at,
            sealed="",
        )
        ev._clear = LabResultContent(
            results=self.results, charges=self.charges, abnormal=self.abnormal, critical=self.critical
        )
        return ev


@event
class LabOrderResultedV1(Superseded):
    """Results of an order were released, with their values. No longer published: replaced by
    ``his.laboratory.order.resulted.v2``, which leaves the values out (they stayed in the streams
    for as long as the streams keep events). Its consumers read it as v3, through v2."""

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
        """The same release without the values, as v3."""
        return LabOrderResultedV2(
            order_id=self.order_id,
            patient_id=self.patient_id,
            ordered_by=self.ordered_by,
            priority=self.priority,
            resulted_at=self.resulted_at,
            results=[ResultFlag(code=r.code, flag=r.flag) for r in self.results],
            charges=self.charges,
            abnormal=self.abnormal,
            critical=self.critical,
        ).upcast()


#: The versions of the results' event a consumer still reads besides v3 (``older=``).
OLDER_RESULTED: tuple[type[Superseded], ...] = (LabOrderResultedV2, LabOrderResultedV1)


def opening(
    seal: Seal, handler: Callable[[U, Envelope, LabResults], Awaitable[None]]
) -> Callable[[U, Envelope, LabOrderResulted], Awaitable[None]]:
    """A consumer of ``LabOrderResulted`` whose handler takes the opened ``LabResults``. A box
    that does not open is ``UnsealableError``, a ``PermanentError``: the event is a dead letter
    with the reason."""

    @functools.wraps(handler)
    async def opened(uow: U, env: Envelope, ev: LabOrderResulted) -> None:
        await handler(uow, env, ev.opened(seal))

    return opened
