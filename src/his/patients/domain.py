"""Patient rules: pure, no IO."""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
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

_WORD = re.compile(r"[^\W\d_]+")
_REPEATED = re.compile(r"([^\W\d_])\1{3,}")

#: Letters a reason needs at the least, whatever else it holds.
REASON_LETTERS = 15
#: Different words of three or more letters, other than ``FILLER``, a reason needs.
REASON_WORDS = 3
#: How long a clinician's reason stays theirs for one patient: the same words for another
#: patient within this time are refused.
REASON_REUSE = timedelta(days=1)
#: Keyboard rows (English and Turkish Q and F layouts) and the alphabet: four or more letters in
#: a row of one of them, either way, are a run, not a word.
KEYBOARD_ROWS = (
    "qwertyuiop",
    "asdfghjkl",
    "zxcvbnm",
    "qwertyuiopgu",
    "asdfghjklsi",
    "zxcvbnmoc",
    "fgigodrnhpqwx",
    "uieaitkmlyst",
    "jovcczsbxw",
    "abcdefghijklmnopqrstuvwxyz",
)
#: Words that say nothing about why this patient needs to be opened: placeholders, the request
#: itself, and the small words around them (English and Turkish, folded as ``fold`` folds).
_FILLER = """
    test tests testing tester asdf qwerty foo bar baz lorem ipsum dummy sample example xxx yyy zzz abc
    emergency emergent urgent urgently acute asap access accessing need needed needs required
    require requested request reason reasons now please pls patient patients record records chart
    file open opening see view check checking look none nil null nothing the and for with this
    that from into was are has have had you our its not yes okay aaa
    acil acilen durum deneme denemek denem ornek erisim erisimi gerek gerekli gerekiyor lazim
    lutfen simdi hasta hastanin hastaya kayit kaydi dosya dosyasi dosyasina kaydina bak bakmak bakilacak icin ile
    olan var yok tamam sebep sebebi neden nedeni
"""
FILLER = frozenset(_FILLER.split())


class ReasonRule(StrEnum):
    """Which rule a reason for emergency access broke (the 422's ``rule``)."""

    CONTROL = "control_characters"
    TOO_LONG = "too_long"
    PLACEHOLDER = "placeholder"
    REPEATED = "repeated_characters"
    KEYBOARD_RUN = "keyboard_run"
    TOO_SHORT = "too_short"
    TOO_FEW_WORDS = "too_few_words"
    REUSED = "reused"


class InvalidEmergencyReasonError(ValueError):
    """The stated reason for emergency access is not acceptable; the message says why and
    ``rule`` names the rule."""

    def __init__(self, message: str, rule: ReasonRule) -> None:
        super().__init__(message)
        self.rule = rule


def fold(text: str) -> str:
    """Lower case without accents or dots, so that ``ACİL``, ``acil`` and ``Acil`` are one word
    and Turkish letters meet their keyboard rows (``ı`` and ``i`` alike, ``ş`` as ``s``)."""
    plain = unicodedata.normalize("NFKD", text.replace("ı", "i").replace("I", "i"))
    return "".join(ch for ch in plain if not unicodedata.combining(ch)).casefold()


def reason_words(text: str) -> list[str]:
    """The words of a reason, folded, in order."""
    return _WORD.findall(fold(text))


def _keyboard_run(word: str) -> bool:
    return len(word) >= 4 and any(word in row or word in row[::-1] for row in KEYBOARD_ROWS)


def emergency_reason(text: str, *, earlier: Iterable[str] = ()) -> str:
    """The reason for breaking the glass, normalised (whitespace runs become one space), or
    ``InvalidEmergencyReasonError`` naming the placeholder it is.

    A privacy officer reads every reason later: it must say why this patient, now. Refused are
    control characters, more than ``REASON_MAX`` characters, text made only of placeholders and
    filler (``test``, ``asdf``, ``emergency``, ``x``, ``n/a``, ``.``, ``acil``, ``deneme`` …), a
    letter four times in a row, a keyboard or alphabet run of four letters, fewer than
    ``REASON_MIN`` characters or ``REASON_LETTERS`` letters, fewer than ``REASON_WORDS`` different
    words of three letters or more outside ``FILLER``, and the very words of a reason in
    ``earlier`` (the clinician's reasons for other patients within ``REASON_REUSE``).
    """
    reason = " ".join(text.split())
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in reason):
        raise InvalidEmergencyReasonError("reason must not contain control characters", ReasonRule.CONTROL)
    if len(reason) > REASON_MAX:
        raise InvalidEmergencyReasonError(f"reason is limited to {REASON_MAX} characters", ReasonRule.TOO_LONG)
    words = reason_words(reason)
    if all(w in FILLER or len(w) < 3 for w in words):
        said = f"'{reason}'" if len(reason) <= 40 else "it"
        raise InvalidEmergencyReasonError(
            f"reason is a placeholder: {said} does not say why this patient needs to be opened now",
            ReasonRule.PLACEHOLDER,
        )
    _patterns(reason, words)
    if len(reason) < REASON_MIN or sum(ch.isalpha() for ch in reason) < REASON_LETTERS:
        raise InvalidEmergencyReasonError(
            f"reason is too short: at least {REASON_MIN} characters and {REASON_LETTERS} letters saying why",
            ReasonRule.TOO_SHORT,
        )
    if len({w for w in words if len(w) >= 3 and w not in FILLER}) < REASON_WORDS:
        raise InvalidEmergencyReasonError(
            "reason must be a sentence saying what happened and why this patient: "
            f"at least {REASON_WORDS} different words besides 'emergency', 'access', 'patient' and the like",
            ReasonRule.TOO_FEW_WORDS,
        )
    if words in (reason_words(e) for e in earlier):
        raise InvalidEmergencyReasonError(
            "you gave this same reason for another patient within a day: say why this patient",
            ReasonRule.REUSED,
        )
    return reason


def _patterns(reason: str, words: list[str]) -> None:
    """Repeated letters and keyboard runs: typed to get past the form, not to say why."""
    repeated = _REPEATED.search(fold(reason))
    if repeated is not None:
        raise InvalidEmergencyReasonError(
            f"reason repeats a character ('{repeated.group(0)}'): say why access is needed", ReasonRule.REPEATED
        )
    run = next((w for w in words if _keyboard_run(w)), None)
    if run is not None:
        raise InvalidEmergencyReasonError(
            f"reason holds a keyboard run ('{run}'): say why access is needed", ReasonRule.KEYBOARD_RUN
        )


def over_limit(grants_in_window: int, limit: int) -> bool:
    """Whether a clinician's grants within the window (the new one counted) are more than the
    limit: the grant stands (it is an emergency), administrators are alerted."""
    return grants_in_window > limit


@dataclass(frozen=True)
class EmergencyLimit:
    """More than ``grants`` emergency accesses by one clinician within ``window`` raise an alert."""

    grants: int = 3
    window: timedelta = timedelta(hours=24)


class ReviewState(StrEnum):
    """Where a grant stands in the administrators' review."""

    PENDING = "pending"
    REVIEWED = "reviewed"
    ESCALATED = "escalated"


#: A review's decision: the states a review may move a grant to.
REVIEW_DECISIONS = frozenset({ReviewState.REVIEWED, ReviewState.ESCALATED})
#: From which state each decision may be taken: an escalated grant is closed as reviewed once it
#: is settled; a reviewed one stays reviewed.
REVIEW_FROM: dict[ReviewState, frozenset[ReviewState]] = {
    ReviewState.REVIEWED: frozenset({ReviewState.PENDING, ReviewState.ESCALATED}),
    ReviewState.ESCALATED: frozenset({ReviewState.PENDING}),
}
REVIEW_NOTE_MAX = 2000


class InvalidReviewError(ValueError):
    """The review's decision or note is not acceptable (422); the message says why."""


class ReviewNotAllowedError(Exception):
    """The grant's state does not allow this decision (409), or the reviewer is the clinician
    who broke the glass (403); the message says which."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class EmergencyRead:
    """What the patients service gave a clinician under a grant: the resource, how, when."""

    resource: str
    action: str
    at: datetime


@dataclass(frozen=True)
class EmergencyGrant:
    """Break-the-glass access of one clinician to one patient, with the roles they had and the
    reason they gave (kept in patients only), whether it went over the clinician's limit, and
    its review."""

    id: uuid.UUID
    patient_id: uuid.UUID
    user_id: uuid.UUID
    roles: tuple[str, ...]
    reason: str
    granted_at: datetime
    expires_at: datetime
    over_limit: bool = False
    review_state: ReviewState = ReviewState.PENDING
    reviewed_by: uuid.UUID | None = None
    reviewed_at: datetime | None = None
    review_note: str | None = None

    def active(self, now: datetime) -> bool:
        return is_active(self.granted_at, self.expires_at, now)

    def lasted(self, now: datetime) -> timedelta:
        """How long the grant has been open: to its end, or to now while it is active."""
        return max(timedelta(0), min(now, self.expires_at) - self.granted_at)


def review(grant: EmergencyGrant, decision: ReviewState, note: str | None, reviewer: uuid.UUID) -> str | None:
    """Check an administrator's decision on a grant; the note, normalised (None if empty).

    An escalation says why (a note); nobody reviews their own grant; a reviewed grant stays
    reviewed and an escalated one may only be closed as reviewed.
    """
    if decision not in REVIEW_DECISIONS:
        raise InvalidReviewError("decision must be 'reviewed' or 'escalated'")
    text = (note or "").strip() or None
    if text is not None and len(text) > REVIEW_NOTE_MAX:
        raise InvalidReviewError(f"note is limited to {REVIEW_NOTE_MAX} characters")
    if text is not None and any(ord(ch) < 0x20 and ch not in "\n\t" for ch in text):
        raise InvalidReviewError("note must not contain control characters")
    if decision is ReviewState.ESCALATED and text is None:
        raise InvalidReviewError("an escalation needs a note saying what is wrong")
    if reviewer == grant.user_id:
        raise ReviewNotAllowedError("nobody reviews their own emergency access: another administrator does", status=403)
    if grant.review_state not in REVIEW_FROM[decision]:
        raise ReviewNotAllowedError(
            f"this grant is {grant.review_state.value}; it cannot be marked {decision.value}", status=409
        )
    return text


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
