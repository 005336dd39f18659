"""Patient rules: pure, no IO."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class Sex(StrEnum):
    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


class InvalidPatientError(ValueError):
    """The patient data breaks a rule; the message names the field."""


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9 ()-]{6,20}$")


@dataclass(frozen=True)
class NewPatient:
    given_name: str
    family_name: str
    birth_date: date
    sex: Sex
    email: str | None = None
    phone: str | None = None
    user_id: uuid.UUID | None = None
    coverage: tuple[str, str] | None = None  # (payer code, member id)

    def validated(self, today: date) -> NewPatient:
        given, family = self.given_name.strip(), self.family_name.strip()
        if not given or not family:
            raise InvalidPatientError("given_name and family_name must not be blank")
        if len(given) > 100 or len(family) > 100:
            raise InvalidPatientError("names are limited to 100 characters")
        if self.birth_date > today:
            raise InvalidPatientError("birth_date is in the future")
        if self.birth_date.year < 1880:
            raise InvalidPatientError("birth_date is implausibly old")
        email = self.email.strip().lower() if self.email else None
        if email is not None and not _EMAIL.match(email):
            raise InvalidPatientError("email is not a valid address")
        phone = self.phone.strip() if self.phone else None
        if phone is not None and not _PHONE.match(phone):
            raise InvalidPatientError("phone is not a valid number")
        return NewPatient(given, family, self.birth_date, self.sex, email, phone, self.user_id, self.coverage)


def format_mrn(number: int) -> str:
    """Medical record numbers are sequential and zero-padded: MRN-00000042."""
    return f"MRN-{number:08d}"
