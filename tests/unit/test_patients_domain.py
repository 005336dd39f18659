"""Patient rules, without IO."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from his.patients.domain import (
    CareSource,
    Coverage,
    EmergencyGrant,
    InvalidCareRelationshipError,
    InvalidEmergencyReasonError,
    InvalidPatientError,
    InvalidReviewError,
    NewCareRelationship,
    NewPatient,
    Patient,
    PatientChanges,
    ReasonRule,
    RecordEntry,
    ReviewNotAllowedError,
    ReviewState,
    Sex,
    emergency_expiry,
    emergency_reason,
    format_mrn,
    is_active,
    master_data,
    over_limit,
    review,
)

TODAY = date(2026, 11, 26)


def patient(**kw: object) -> NewPatient:
    base: dict[str, object] = {
        "given_name": " Ayşe ",
        "family_name": "Yılmaz",
        "birth_date": date(1980, 2, 3),
        "sex": Sex.FEMALE,
        "email": " Ayse@Example.ORG ",
        "phone": "+90 555 000 1122",
    }
    base.update(kw)
    return NewPatient(**base)  # type: ignore[arg-type]


def test_valid_patient_is_normalised() -> None:
    p = patient().validated(TODAY)
    assert p.given_name == "Ayşe"
    assert p.email == "ayse@example.org"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("given_name", "   ", "blank"),
        ("family_name", "", "blank"),
        ("birth_date", date(2027, 1, 1), "future"),
        ("birth_date", date(1850, 1, 1), "implausibly old"),
        ("email", "not-an-address", "email"),
        ("phone", "call me", "phone"),
        ("given_name", "x" * 101, "100 characters"),
    ],
)
def test_invalid_patients_are_refused_with_the_field_named(field: str, value: object, message: str) -> None:
    with pytest.raises(InvalidPatientError, match=message):
        patient(**{field: value}).validated(TODAY)


def test_mrn_format() -> None:
    assert format_mrn(42) == "MRN-00000042"


REGISTERED = Patient(
    id=uuid.uuid4(),
    mrn="MRN-00000042",
    given_name="Ayşe",
    family_name="Yılmaz",
    birth_date=date(1980, 2, 29),
    sex=Sex.FEMALE,
    email="ayse@example.org",
    phone="+90 555 000 1122",
    user_id=uuid.uuid4(),
    coverage=Coverage("SGK", "S-1"),
    created_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
)


def changes(**kw: object) -> PatientChanges:
    return PatientChanges(frozenset(kw), **kw)  # type: ignore[arg-type]


def test_a_change_of_master_data_changes_only_the_named_fields_validated_as_a_whole() -> None:
    changed = changes(given_name=" Ayşe Nur ", email=" NEW@Example.org ").applied_to(REGISTERED, TODAY)
    assert (changed.given_name, changed.email) == ("Ayşe Nur", "new@example.org")
    assert changed == replace(REGISTERED, given_name="Ayşe Nur", email="new@example.org")
    assert master_data(changed).keys() == master_data(REGISTERED).keys()
    assert [k for k, v in master_data(changed).items() if master_data(REGISTERED)[k] != v] == ["given_name", "email"]
    assert changes().applied_to(REGISTERED, TODAY) == REGISTERED
    with pytest.raises(InvalidPatientError, match="future"):
        changes(birth_date=date(2027, 1, 1)).applied_to(REGISTERED, TODAY)


def test_a_named_none_clears_contact_and_coverage_and_keeps_the_rest() -> None:
    cleared = changes(email=None, phone=None, coverage=None).applied_to(REGISTERED, TODAY)
    assert (cleared.email, cleared.phone, cleared.coverage) == (None, None, None)
    kept = changes(given_name=None, family_name=None, birth_date=None, sex=None).applied_to(REGISTERED, TODAY)
    assert kept == REGISTERED
    insured = changes(coverage=Coverage("ALLIANZ", "A-9")).applied_to(REGISTERED, TODAY)
    assert master_data(insured)["coverage_payer"] == "ALLIANZ"
    assert master_data(insured)["coverage_member_id"] == "A-9"
    assert master_data(cleared)["coverage_payer"] is None


# --- care relationships --------------------------------------------------------------------

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def test_care_relationships_are_active_from_start_to_end() -> None:
    later = NOW + timedelta(hours=8)
    assert is_active(NOW, None, NOW)
    assert is_active(NOW, later, later - timedelta(microseconds=1))
    assert not is_active(NOW, later, later)
    assert not is_active(NOW, None, NOW - timedelta(seconds=1))


@pytest.mark.parametrize(
    ("until", "message"),
    [(NOW, "future"), (NOW - timedelta(days=1), "future"), (datetime(2027, 1, 1), "offset")],
)
def test_a_care_relationship_must_end_after_it_starts(until: datetime, message: str) -> None:
    rel = NewCareRelationship(uuid.uuid4(), uuid.uuid4(), CareSource.ASSIGNMENT, NOW, until)
    with pytest.raises(InvalidCareRelationshipError, match=message):
        rel.validated()


def test_an_open_ended_care_relationship_is_valid() -> None:
    rel = NewCareRelationship(uuid.uuid4(), uuid.uuid4(), CareSource.ASSIGNMENT, NOW)
    assert rel.validated() is rel


def test_an_emergency_grant_is_active_from_its_grant_until_it_expires() -> None:
    later = NOW + timedelta(hours=1)
    grant = EmergencyGrant(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), ("DOCTOR",), "unconscious, no history", NOW, later)
    assert grant.active(NOW) and grant.active(later - timedelta(microseconds=1))
    assert not grant.active(later) and not grant.active(NOW - timedelta(seconds=1))


def test_a_record_entry_read_keeps_everything_but_its_ciphertext() -> None:
    stored = RecordEntry(uuid.uuid4(), uuid.uuid4(), "allergy", "Z88.0", b"\x01cipher", uuid.uuid4(), ("DOCTOR",), NOW)
    read = stored.decrypted("Allergic to penicillin")
    assert read.text == "Allergic to penicillin"
    assert (read.id, read.patient_id, read.kind, read.code, read.author_id, read.author_roles, read.created_at) == (
        stored.id,
        stored.patient_id,
        stored.kind,
        stored.code,
        stored.author_id,
        stored.author_roles,
        stored.created_at,
    )
    assert not hasattr(read, "text_cipher")


# --- break-the-glass -----------------------------------------------------------------------


def test_a_reason_is_a_sentence_normalised() -> None:
    text = "  Unconscious patient in the ED,\n\tno relatives reachable  "
    assert emergency_reason(text) == "Unconscious patient in the ED, no relatives reachable"
    assert emergency_reason("Çocuk acilde, bilinci kapalı, ailesine ulaşılamıyor")  # any alphabet


#: Reasons a clinician really gives: each stands, whatever words of the placeholder list it holds.
REAL_REASONS = [
    "Unconscious patient in the ED, no relatives reachable",
    "Collapsed in the waiting room, unresponsive, no one to ask about allergies",
    "Test results needed: chest pain after contrast, cardiology on call asks",
    "Acil serviste bilinci kapalı hasta, yakınlarına ulaşılamıyor",
    "ACİL: göğüs ağrısı, önceki EKG kayıtlarına bakmam lazım",
    "Transferred from Ward 3 at 02:00, on-call doctor covering for Dr Aydın",
    "Anaphylaxis after 10000 units heparin, need drug history now",
]


@pytest.mark.parametrize("text", REAL_REASONS)
def test_real_reasons_stand(text: str) -> None:
    assert emergency_reason(text) == " ".join(text.split())


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        # Placeholders alone, English and Turkish, in any case.
        ("", ReasonRule.PLACEHOLDER),
        (".", ReasonRule.PLACEHOLDER),
        ("x", ReasonRule.PLACEHOLDER),
        ("n/a", ReasonRule.PLACEHOLDER),
        ("N/A N/A N/A N/A N/A N/A N/A", ReasonRule.PLACEHOLDER),
        ("test", ReasonRule.PLACEHOLDER),
        ("test test test test test test", ReasonRule.PLACEHOLDER),
        ("TESTING THE EMERGENCY ACCESS", ReasonRule.PLACEHOLDER),
        ("asdf asdf asdf asdf asdf", ReasonRule.PLACEHOLDER),
        ("emergency", ReasonRule.PLACEHOLDER),
        ("emergency emergency emergency", ReasonRule.PLACEHOLDER),
        ("Urgent: need access to this patient now please", ReasonRule.PLACEHOLDER),
        ("acil", ReasonRule.PLACEHOLDER),
        ("ACİL ACİL ACİL ACİL ACİL", ReasonRule.PLACEHOLDER),
        ("deneme deneme deneme deneme", ReasonRule.PLACEHOLDER),
        ("Acil durum, hastanın dosyasına bakmak gerekli", ReasonRule.PLACEHOLDER),
        ("test deneme acil test deneme acil", ReasonRule.PLACEHOLDER),
        ("1234567890 1234567890 1234", ReasonRule.PLACEHOLDER),
        ("...................................", ReasonRule.PLACEHOLDER),
        ("a b c d e f g h i j k l m n o", ReasonRule.PLACEHOLDER),
        # Repeated characters and keyboard runs, typed to get past the form.
        ("a" * 40, ReasonRule.REPEATED),
        ("hastaaaaa kalp durmasi yasadi", ReasonRule.REPEATED),
        ("zzzzz patient fell down the stairs", ReasonRule.REPEATED),
        ("qwertyuiop asdfghjkl zxcvbnm", ReasonRule.KEYBOARD_RUN),
        ("sdfg hjkl wert yuio poiu lkjh", ReasonRule.KEYBOARD_RUN),
        ("abcdefg hijklmn opqrstu vwxyz", ReasonRule.KEYBOARD_RUN),
        ("ğüşiöç şğüiöç fgğıod rnhpqw", ReasonRule.KEYBOARD_RUN),
        # Too short a sentence, or too few words of its own.
        ("chest pain, fell", ReasonRule.TOO_SHORT),
        ("Fall: 1234567890 9876543210 hip", ReasonRule.TOO_SHORT),
        ("ok ok ok chest pain ok ok ok ok", ReasonRule.TOO_FEW_WORDS),
        ("patient emergency access needed for chest pain", ReasonRule.TOO_FEW_WORDS),
        # Neither too long nor anything but text.
        ("x" * 501, ReasonRule.TOO_LONG),
        ("unconscious patient\x00 in the ED", ReasonRule.CONTROL),
        ("unconscious patient\x7f in the ED", ReasonRule.CONTROL),
    ],
)
def test_placeholder_reasons_are_refused_naming_the_rule(text: str, rule: ReasonRule) -> None:
    with pytest.raises(InvalidEmergencyReasonError) as refused:
        emergency_reason(text)
    assert refused.value.rule is rule, str(refused.value)
    assert str(refused.value)  # a sentence the clinician reads


@pytest.mark.parametrize(
    ("earlier", "refused"),
    [
        ([REAL_REASONS[0]], True),
        (["  unconscious PATIENT in the ED; no relatives reachable! "], True),  # the same words
        ([REAL_REASONS[1], REAL_REASONS[0]], True),
        ([REAL_REASONS[1]], False),
        (["Unconscious patient in the ED, relatives reachable"], False),  # other words
        ([], False),
    ],
)
def test_the_same_reason_for_another_patient_is_refused(earlier: list[str], refused: bool) -> None:
    if refused:
        with pytest.raises(InvalidEmergencyReasonError) as caught:
            emergency_reason(REAL_REASONS[0], earlier=earlier)
        assert caught.value.rule is ReasonRule.REUSED
    else:
        assert emergency_reason(REAL_REASONS[0], earlier=earlier) == REAL_REASONS[0]


@pytest.mark.parametrize(("in_window", "limit", "over"), [(1, 3, False), (3, 3, False), (4, 3, True), (2, 1, True)])
def test_a_clinician_goes_over_the_limit_with_one_grant_more_than_it(in_window: int, limit: int, over: bool) -> None:
    assert over_limit(in_window, limit) is over


def _grant(state: ReviewState = ReviewState.PENDING) -> EmergencyGrant:
    return EmergencyGrant(
        uuid.uuid4(),
        uuid.uuid4(),
        uuid.uuid4(),
        ("DOCTOR",),
        REAL_REASONS[0],
        NOW,
        NOW + timedelta(hours=1),
        review_state=state,
    )


@pytest.mark.parametrize(
    ("state", "decision", "note", "outcome"),
    [
        (ReviewState.PENDING, ReviewState.REVIEWED, None, None),
        (ReviewState.PENDING, ReviewState.REVIEWED, "  Seen with the ED lead.  ", "Seen with the ED lead."),
        (ReviewState.PENDING, ReviewState.ESCALATED, "Not on shift that night", "Not on shift that night"),
        (ReviewState.ESCALATED, ReviewState.REVIEWED, "Rota confirmed the cover", "Rota confirmed the cover"),
        (ReviewState.PENDING, ReviewState.ESCALATED, None, InvalidReviewError),
        (ReviewState.PENDING, ReviewState.ESCALATED, "   ", InvalidReviewError),
        (ReviewState.PENDING, ReviewState.PENDING, None, InvalidReviewError),
        (ReviewState.PENDING, ReviewState.REVIEWED, "x" * 2001, InvalidReviewError),
        (ReviewState.REVIEWED, ReviewState.REVIEWED, None, 409),
        (ReviewState.REVIEWED, ReviewState.ESCALATED, "Second thoughts", 409),
        (ReviewState.ESCALATED, ReviewState.ESCALATED, "Again", 409),
    ],
)
def test_a_review_decides_once_and_an_escalation_says_why(
    state: ReviewState, decision: ReviewState, note: str | None, outcome: object
) -> None:
    grant, reviewer = _grant(state), uuid.uuid4()
    if outcome is InvalidReviewError:
        with pytest.raises(InvalidReviewError):
            review(grant, decision, note, reviewer)
    elif outcome == 409:
        with pytest.raises(ReviewNotAllowedError) as refused:
            review(grant, decision, note, reviewer)
        assert refused.value.status == 409
    else:
        assert review(grant, decision, note, reviewer) == outcome


def test_nobody_reviews_their_own_grant() -> None:
    grant = _grant()
    with pytest.raises(ReviewNotAllowedError) as refused:
        review(grant, ReviewState.REVIEWED, None, grant.user_id)
    assert refused.value.status == 403


def test_a_grant_lasts_to_its_end_or_to_now() -> None:
    grant = _grant()
    assert grant.lasted(NOW - timedelta(minutes=5)) == timedelta(0)
    assert grant.lasted(NOW + timedelta(minutes=20)) == timedelta(minutes=20)
    assert grant.lasted(NOW + timedelta(days=2)) == timedelta(hours=1)


def test_emergency_access_lasts_the_configured_time() -> None:
    assert emergency_expiry(NOW, 60) == NOW + timedelta(hours=1)
    assert emergency_expiry(NOW, 0.1) == NOW + timedelta(seconds=6)
    with pytest.raises(ValueError, match="positive"):
        emergency_expiry(NOW, 0)
