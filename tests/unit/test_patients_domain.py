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
    NewCareRelationship,
    NewPatient,
    Patient,
    PatientChanges,
    RecordEntry,
    Sex,
    emergency_expiry,
    emergency_reason,
    format_mrn,
    is_active,
    master_data,
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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "at least 20"),
        ("emergency now", "at least 20"),
        ("x" * 501, "limited to 500"),
        ("a" * 40, "sentence"),
        ("emergency emergency emergency", "sentence"),
        ("1234567890 1234567890 1234", "sentence"),
        ("a b c d e f g h i j k l m n o", "sentence"),
        ("unconscious patient\x00 in the ED", "control"),
    ],
)
def test_placeholder_reasons_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidEmergencyReasonError, match=message):
        emergency_reason(text)


def test_emergency_access_lasts_the_configured_time() -> None:
    assert emergency_expiry(NOW, 60) == NOW + timedelta(hours=1)
    assert emergency_expiry(NOW, 0.1) == NOW + timedelta(seconds=6)
    with pytest.raises(ValueError, match="positive"):
        emergency_expiry(NOW, 0)
