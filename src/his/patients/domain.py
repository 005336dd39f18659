"""Patient rules: pure, no IO."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
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


class AccountLinkedError(Exception):
    """The user account is already linked to another patient (one record per account)."""


@dataclass(frozen=True)
class Coverage:
    """Who pays the insured share: a payer plan (billing's code for it) and the member's id with that payer."""

    payer: str
    member_id: str


@dataclass(frozen=True)
class Patient:
    """A registered patient's master data, as stored (in clear: of a patient's data only the
    medical record's text is encrypted)."""

    id: uuid.UUID
    #: The medical record number, unique in the hospital.
    mrn: str
    given_name: str
    family_name: str
    birth_date: date
    sex: Sex
    email: str | None
    phone: str | None
    #: The patient's own account, once they redeemed an invitation.
    user_id: uuid.UUID | None
    coverage: Coverage | None
    created_at: datetime


@dataclass(frozen=True)
class ContactDetails:
    """Only what is needed to reach a patient."""

    id: uuid.UUID
    given_name: str
    email: str | None
    phone: str | None


#: A value of master data as stored.
Stored = str | date | None


def master_data(p: Patient) -> dict[str, Stored]:
    """A patient's master data by the names of its columns, as ``PatientUpdated`` names the
    fields that changed (coverage is two: its payer and its member id)."""
    return {
        "given_name": p.given_name,
        "family_name": p.family_name,
        "birth_date": p.birth_date,
        "sex": p.sex.value,
        "email": p.email,
        "phone": p.phone,
        "coverage_payer": p.coverage.payer if p.coverage else None,
        "coverage_member_id": p.coverage.member_id if p.coverage else None,
    }


@dataclass(frozen=True)
class PatientChanges:
    """A change of master data. Only the fields in ``named`` change: a named email, phone or
    coverage of None clears it; a name, birth date or sex of None stays as it is."""

    named: frozenset[str]
    given_name: str | None = None
    family_name: str | None = None
    birth_date: date | None = None
    sex: Sex | None = None
    email: str | None = None
    phone: str | None = None
    coverage: Coverage | None = None

    def applied_to(self, p: Patient, today: date) -> Patient:
        """The patient with these changes, validated as a whole (``InvalidPatientError``)."""
        coverage = self.coverage if "coverage" in self.named else p.coverage
        merged = NewPatient(
            self.given_name or p.given_name,
            self.family_name or p.family_name,
            self.birth_date or p.birth_date,
            self.sex or p.sex,
            self.email if "email" in self.named else p.email,
            self.phone if "phone" in self.named else p.phone,
            p.user_id,
            (coverage.payer, coverage.member_id) if coverage else None,
        ).validated(today)
        return replace(
            p,
            given_name=merged.given_name,
            family_name=merged.family_name,
            birth_date=merged.birth_date,
            sex=merged.sex,
            email=merged.email,
            phone=merged.phone,
            coverage=Coverage(*merged.coverage) if merged.coverage else None,
        )


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


@dataclass(frozen=True)
class CareRelationship:
    """A clinician (``user_id``, their account) in a patient's care: assigned by reception, or
    following from an appointment or admission (whose id it then has)."""

    id: uuid.UUID
    patient_id: uuid.UUID
    user_id: uuid.UUID
    source: CareSource
    valid_from: datetime
    valid_until: datetime | None


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


@dataclass(frozen=True)
class EmergencyGrant:
    """Break-the-glass access of one clinician to one patient, with the roles they had and the
    reason they gave (kept in patients only)."""

    id: uuid.UUID
    patient_id: uuid.UUID
    user_id: uuid.UUID
    roles: tuple[str, ...]
    reason: str
    granted_at: datetime
    expires_at: datetime

    def active(self, now: datetime) -> bool:
        return is_active(self.granted_at, self.expires_at, now)


def emergency_expiry(now: datetime, minutes: float) -> datetime:
    """When an emergency grant made now ends."""
    if minutes <= 0:
        raise ValueError("emergency access must last a positive time")
    return now + timedelta(minutes=minutes)


# --- Medical-record entries -----------------------------------------------------------------

RECORD_KINDS = ("note", "diagnosis", "allergy", "medication", "observation")
RECORD_TEXT_MAX = 20_000


@dataclass(frozen=True)
class RecordEntry:
    """A medical-record entry as stored: its text encrypted (``text_cipher``), bound to its
    patient and entry, so a ciphertext moved to another row does not decrypt."""

    id: uuid.UUID
    patient_id: uuid.UUID
    #: One of ``RECORD_KINDS``.
    kind: str
    code: str | None
    text_cipher: bytes
    author_id: uuid.UUID
    author_roles: tuple[str, ...]
    created_at: datetime

    def decrypted(self, text: str) -> DecryptedEntry:
        return DecryptedEntry(
            self.id, self.patient_id, self.kind, self.code, text, self.author_id, self.author_roles, self.created_at
        )


@dataclass(frozen=True)
class DecryptedEntry:
    """A medical-record entry with its text decrypted, as it is read."""

    id: uuid.UUID
    patient_id: uuid.UUID
    kind: str
    code: str | None
    text: str
    author_id: uuid.UUID
    author_roles: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class LabResult:
    """One result of a lab order, as the chart keeps it (copied from the laboratory's event).

    ``flag`` is one of N, L, H, LL, HH, A (HL7 table 0078, as the laboratory sets it)."""

    code: str
    value: str
    unit: str | None
    reference_low: Decimal | None
    reference_high: Decimal | None
    flag: str


@dataclass(frozen=True)
class ResultedOrder:
    """A resulted lab order in a patient's chart: its results in the order the tests were ordered."""

    order_id: uuid.UUID
    patient_id: uuid.UUID
    ordered_by: uuid.UUID
    priority: str
    resulted_at: datetime
    results: tuple[LabResult, ...]


# --- Portal invitations ---------------------------------------------------------------------


class Channel(StrEnum):
    """How an invitation's code reaches the patient: their e-mail address or phone on record."""

    EMAIL = "email"
    SMS = "sms"


#: Crockford's base32: no I, L, O or U, so a code read from a text message is typed right.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: 12 characters of 5 bits: 60 bits, shown in three groups of four (``7KQ2-M9XD-4RTA``).
CODE_LENGTH = 12
_LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})


class InvalidInvitationCodeError(ValueError):
    """The text is not an invitation code at all (wrong length or characters)."""


def normalise_code(text: str) -> str:
    """The code as typed, without blanks and dashes, in capitals, look-alike letters read as digits."""
    code = "".join(text.split()).replace("-", "").upper().translate(_LOOKALIKES)
    if len(code) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in code):
        raise InvalidInvitationCodeError(
            f"an invitation code has {CODE_LENGTH} letters and digits, as in the message (e.g. 7KQ2-M9XD-4RTA)"
        )
    return code


def code_digest(code: str) -> bytes:
    """What is stored of a code: its SHA-256 (the code itself is never stored)."""
    return hashlib.sha256(b"his-invitation-code:" + normalise_code(code).encode()).digest()


class InvitationCodes:
    """Each invitation's code, derived from its id with a secret key (HMAC-SHA-256).

    Only the code's digest is stored; the code can be derived again, by whoever holds the key,
    to send it. Keys come newest first (as ``HIS_RECORDS_KEYS`` lists them): a code is made with
    the newest, and found again with whichever key made the stored digest.
    """

    def __init__(self, keys: Iterable[bytes]) -> None:
        # A key of its own per purpose: the records key is never used as is.
        self._keys = [hmac.new(k, b"his-invitation-codes", hashlib.sha256).digest() for k in keys]
        if not self._keys:
            raise ValueError("at least one key is needed")

    @staticmethod
    def _code(key: bytes, invitation_id: uuid.UUID) -> str:
        number = int.from_bytes(hmac.new(key, invitation_id.bytes, hashlib.sha256).digest()[:8], "big")
        return "".join(CODE_ALPHABET[(number >> (5 * i)) & 31] for i in range(CODE_LENGTH))

    def code(self, invitation_id: uuid.UUID) -> str:
        """The code of a new invitation, as shown to the patient."""
        return format_code(self._code(self._keys[0], invitation_id))

    def recover(self, invitation_id: uuid.UUID, digest: bytes) -> str | None:
        """The code of an invitation whose stored digest is ``digest``; None if no key made it."""
        for key in self._keys:
            code = self._code(key, invitation_id)
            if hmac.compare_digest(code_digest(code), digest):
                return format_code(code)
        return None


def format_code(code: str) -> str:
    return "-".join(code[i : i + 4] for i in range(0, CODE_LENGTH, 4))


def invitation_expiry(now: datetime, minutes: float) -> datetime:
    """When an invitation issued now stops being redeemable."""
    if minutes <= 0:
        raise ValueError("an invitation must be valid for a positive time")
    return now + timedelta(minutes=minutes)


class Refusal(StrEnum):
    """Why an invitation cannot be redeemed."""

    UNKNOWN = "unknown"
    REDEEMED = "redeemed"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"
    #: The record was linked to an account meanwhile.
    RECORD_LINKED = "record_linked"


def invitation_refusal(
    *, redeemed: bool, revoked: bool, expires_at: datetime, now: datetime, record_linked: bool
) -> Refusal | None:
    """Why an invitation cannot be redeemed now, or None if it can: once, before it expires,
    while it is the patient's latest and the record has no account yet."""
    if redeemed:
        return Refusal.REDEEMED
    if revoked:
        return Refusal.SUPERSEDED
    if now >= expires_at:
        return Refusal.EXPIRED
    if record_linked:
        return Refusal.RECORD_LINKED
    return None


@dataclass(frozen=True)
class Invitation:
    """An invitation to link a patient's record to their own account. Of its code only the
    digest is kept (``code_digest``); ``revoked_at`` is when a newer invitation superseded it."""

    id: uuid.UUID
    patient_id: uuid.UUID
    code_digest: bytes
    channel: Channel
    issued_by: uuid.UUID
    issued_at: datetime
    expires_at: datetime
    redeemed_at: datetime | None = None
    redeemed_by: uuid.UUID | None = None
    revoked_at: datetime | None = None

    def refusal(self, now: datetime, *, record_linked: bool) -> Refusal | None:
        """Why it cannot be redeemed now (``invitation_refusal``), or None if it can."""
        return invitation_refusal(
            redeemed=self.redeemed_at is not None,
            revoked=self.revoked_at is not None,
            expires_at=self.expires_at,
            now=now,
            record_linked=record_linked,
        )


def may_redeem(roles: Iterable[str]) -> bool:
    """Only a patient's own account redeems an invitation: role PATIENT and no other, so a staff
    account never becomes the owner of a record (owners read its clinical data)."""
    return frozenset(roles) == {"PATIENT"}
