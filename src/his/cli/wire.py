"""What ``his demo`` and ``his soak`` send the gateway and read of its answers.

The answers are validated on the way in (pydantic, into frozen dataclasses of the fields these
tools read; other fields are left out): a shape the gateway does not give raises
``pydantic.ValidationError`` (a ``ValueError``) where it is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, NotRequired, TypedDict, TypeVar

from pydantic import TypeAdapter

T = TypeVar("T")


class Coverage(TypedDict):
    payer: str
    member_id: str


class NewPatient(TypedDict):
    """``POST /api/patients``."""

    given_name: str
    family_name: str
    birth_date: str
    sex: str
    email: NotRequired[str]
    phone: NotRequired[str]
    confirm_duplicate: NotRequired[bool]
    coverage: NotRequired[Coverage]


class LabResult(TypedDict):
    """A result in ``POST /api/lab/orders/{id}/results``."""

    code: str
    value: str
    unit: str | None
    flag: NotRequired[str]


@dataclass(frozen=True)
class Page(Generic[T]):
    """A list answer (``{"items": [...]}``)."""

    items: tuple[T, ...] = ()


@dataclass(frozen=True)
class SignedIn:
    access_token: str


@dataclass(frozen=True)
class UserCreated:
    user_id: str


@dataclass(frozen=True)
class Created:
    """A resource answered with its id (a patient, a practitioner, an appointment, a ward...)."""

    id: str


@dataclass(frozen=True)
class Slot:
    start: str
    end: str


@dataclass(frozen=True)
class WaitlistEntry:
    status: str


@dataclass(frozen=True)
class StockItem:
    code: str
    chargeable: bool


@dataclass(frozen=True)
class LabTest:
    """A test of the laboratory's catalogue; its reference range is decimals written as text."""

    code: str
    unit: str | None = None
    reference_low: str | None = None
    reference_high: str | None = None


@dataclass(frozen=True)
class Discharged:
    """A discharge's answer: the bed it left to be cleaned, if any."""

    bed_id: str | None = None


@dataclass(frozen=True)
class InvoiceLine:
    code: str
    quantity: str
    total: str
    insurer_share: str | None
    patient_share: str | None
    excluded: bool | None = None


@dataclass(frozen=True)
class Invoice:
    """An invoice; its amounts are decimals written as text, null while it is a draft."""

    id: str
    kind: str
    status: str
    currency: str
    total: str | None
    insurer_share: str | None
    patient_share: str | None
    lines: tuple[InvoiceLine, ...]
    payer: str | None = None
    paid: str | None = None


@dataclass(frozen=True)
class Checkout:
    checkout_url: str


SIGNED_IN = TypeAdapter(SignedIn)
USER_CREATED = TypeAdapter(UserCreated)
CREATED = TypeAdapter(Created)
SLOTS = TypeAdapter(Page[Slot])
WAITLIST = TypeAdapter(Page[WaitlistEntry])
STOCK_ITEMS = TypeAdapter(Page[StockItem])
CATALOGUE = TypeAdapter(Page[LabTest])
DISCHARGED = TypeAdapter(Discharged)
BEDS = TypeAdapter(Page[Created])
INVOICE = TypeAdapter(Invoice)
INVOICES = TypeAdapter(Page[Invoice])
CHECKOUT = TypeAdapter(Checkout)
