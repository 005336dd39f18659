"""Patient rules: pure, no IO."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from his.access import REASON_MAX, REASON_MIN


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


# --- Care relationships --------------------------------------------------------------------


class CareSource(StrEnum):
    """Where a care relationship comes from: an assignment by reception, or an appointment or
    admission with the practitioner (learnt from scheduling's and admissions' events)."""

    ASSIGNMENT = "assignment"
    APPOINTMENT = "appointment"
    ADMISSION = "admission"


#: How long after an appointment's end, or a discharge, the practitioner stays in the patient's
#: care: time to write the notes, read the results that come in, answer the patient.
CARE_AFTER = timedelta(hours=24)


class InvalidCareRelationshipError(ValueError):
    """The care relationship breaks a rule; the message names the field."""


@dataclass(frozen=True)
class NewCareRelationship:
    patient_id: uuid.UUID
    user_id: uuid.UUID
    source: CareSource
    valid_from: datetime
    valid_until: datetime | None = None

    def validated(self) -> NewCareRelationship:
        if self.valid_from.tzinfo is None or (self.valid_until is not None and self.valid_until.tzinfo is None):
            raise InvalidCareRelationshipError("times must carry a UTC offset")
        if self.valid_until is not None and self.valid_until <= self.valid_from:
            raise InvalidCareRelationshipError("until must be in the future")
        return self


def is_active(valid_from: datetime, valid_until: datetime | None, now: datetime) -> bool:
    """A relationship or grant is active from its start up to, not including, its end."""
    return valid_from <= now and (valid_until is None or now < valid_until)


# --- Break-the-glass -----------------------------------------------------------------------

_WORD = re.compile(r"[^\W\d_]{2,}")


class InvalidEmergencyReasonError(ValueError):
    """The stated reason for emergency access is not acceptable; the message says why."""


def emergency_reason(text: str) -> str:
    """The reason for breaking the glass, normalised: a real sentence, not a placeholder.

    Whitespace runs become one space; 20 to 500 characters; at least three different words of
    two or more letters; no control characters.
    """
    reason = " ".join(text.split())
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in reason):
        raise InvalidEmergencyReasonError("reason must not contain control characters")
    if len(reason) < REASON_MIN:
        raise InvalidEmergencyReasonError(f"reason must be at least {REASON_MIN} characters: say why access is needed")
    if len(reason) > REASON_MAX:
        raise InvalidEmergencyReasonError(f"reason is limited to {REASON_MAX} characters")
    if len({w.lower() for w in _WORD.findall(reason)}) < 3:
        raise InvalidEmergencyReasonError("reason must be a sentence saying why access is needed")
    return reason


def emergency_expiry(now: datetime, minutes: float) -> datetime:
    """When an emergency grant made now ends."""
    if minutes <= 0:
        raise ValueError("emergency access must last a positive time")
    return now + timedelta(minutes=minutes)


# --- Medical-record entries -----------------------------------------------------------------

RECORD_KINDS = ("note", "diagnosis", "allergy", "medication", "observation")
RECORD_TEXT_MAX = 20_000
