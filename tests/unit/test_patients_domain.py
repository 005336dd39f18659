"""Patient rules, without IO."""

from __future__ import annotations

from datetime import date

import pytest

from his.patients.domain import InvalidPatientError, NewPatient, Sex, format_mrn

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
