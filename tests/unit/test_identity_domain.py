"""Identity rules: e-mail folding, the password policy, refresh-token families."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from his.identity.domain import (
    InvalidEmailError,
    PasswordPolicy,
    RefreshOutcome,
    RefreshToken,
    WeakPasswordError,
    judge_refresh,
    normalise_email,
)

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def test_emails_are_unique_case_insensitively() -> None:
    assert normalise_email("  Ayse.Yilmaz@Example.ORG ") == "ayse.yilmaz@example.org"
    assert normalise_email("ＡＢＣ@example.org") == "abc@example.org"  # full-width folds too


@pytest.mark.parametrize("bad", ["", "nobody", "a@b", "two@@example.org", "sp ace@example.org"])
def test_bad_emails_are_refused(bad: str) -> None:
    with pytest.raises(InvalidEmailError):
        normalise_email(bad)


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short1!", "at least 12"),
        ("x" * 129, "at most 128"),
        ("password1234", "too common"),
        ("Galatasaray1905", "too common"),
        ("aaaaaaaaaaaaaaa", "too few"),
        ("abcdefghijklmnop", "sequence"),
        ("zeynep.kaya-is-great", "e-mail"),
        ("my name is Demirci!!", "name"),
        # What a 100-word blocklist let through: a strength estimate refuses them.
        ("123456789012", "too easy to guess"),
        ("1q2w3e4r5t6y", "too easy to guess"),
        ("12345678901234567890", "too easy to guess"),
        ("qwertyuiopasdfgh", "too easy to guess"),
        ("Ankara06Ankara06", "too easy to guess"),
        ("Kaya1985Kaya1985", "too easy to guess"),  # the person's surname and a year, repeated
        ("p@ssw0rdp@ssw0rd", "too easy to guess"),
    ],
)
def test_weak_passwords_are_refused_with_a_reason(password: str, why: str) -> None:
    with pytest.raises(WeakPasswordError, match=why):
        PasswordPolicy().check(password, email="zeynep.kaya@example.org", full_name="Ali Demirci")


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",
        "Quiet-Orchard-Lamp-58",
        "kirmizi bisiklet ve mavi deniz",
        "x" * 60 + "Tr0ub4dour&3",
    ],
)
def test_a_long_uncommon_passphrase_is_accepted(password: str) -> None:
    PasswordPolicy().check(password, email="ali@example.org", full_name="Ali Demirci")


def _token(**kw: object) -> RefreshToken:
    base: dict[str, object] = {
        "id": "t",
        "family_id": "f",
        "user_id": "u",
        "expires_at": NOW + timedelta(days=1),
        "rotated_at": None,
        "revoked_at": None,
    }
    base.update(kw)
    return RefreshToken(**base)  # type: ignore[arg-type]


def test_refresh_token_outcomes() -> None:
    assert judge_refresh(_token(), NOW) is RefreshOutcome.ROTATE
    assert judge_refresh(_token(rotated_at=NOW), NOW) is RefreshOutcome.REUSED
    assert judge_refresh(_token(revoked_at=NOW, rotated_at=NOW), NOW) is RefreshOutcome.REVOKED
    assert judge_refresh(_token(expires_at=NOW), NOW) is RefreshOutcome.EXPIRED
