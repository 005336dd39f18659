"""The e-mail the hospital writes: every template's Subject on every hard date reaches a mail
client whole (folded, if at all, only at a space, within 78 characters a line), read back as a
client reads it: parsed and unfolded with ``email.policy.default``, never as raw header text."""

from __future__ import annotations

import email
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default

import pytest

from his.kernel.mail import Outgoing, email_message
from his.notifications.templates import TEMPLATES, Renderer
from tests.support.calendar import HARD_DATES, HardDate

SENDER = "his <no-reply@his.local>"


def written(subject: str, at: datetime | None = None) -> bytes:
    out = Outgoing(uuid.uuid4(), "email", "selin@example.org", subject, "Dear Selin,\n", at or datetime.now(UTC))
    return bytes(email_message(out, SENDER))


def read(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    return msg


def header_lines(raw: bytes) -> list[str]:
    return raw.split(b"\n\n", 1)[0].decode("ascii").split("\n")


def assert_whole(raw: bytes, subject: str) -> None:
    lines = header_lines(raw)
    assert all(len(line) <= 78 for line in lines), [line for line in lines if len(line) > 78]
    first = next(line for line in lines if line.startswith("Subject:"))
    assert first.removeprefix("Subject:").strip(), f"the Subject line is empty: {lines}"
    assert read(raw)["Subject"] == subject


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
@pytest.mark.parametrize("template", TEMPLATES)
def test_every_subject_on_every_hard_date_reaches_a_mail_client_whole(template: str, hard: HardDate) -> None:
    start = hard.at(10, 0)
    when = start.isoformat()
    ctx = {
        "name": "Selin",
        "start": when,
        "end": (start + timedelta(minutes=20)).isoformat(),
        "expires_at": when,
        "previous_start": hard.at(16, 45, days=-1).isoformat(),
        "service": "follow_up",
        "code": "7KQ2-M9XD-4RTA",
    }
    subject, _ = Renderer(hard.zone).render(template, ctx)
    assert_whole(written(subject, hard.at(9, 0, days=-1)), subject)


def test_the_reminder_on_a_wednesday_in_september_is_folded_after_the_subject_text() -> None:
    subject = "Reminder: your appointment tomorrow, Wednesday 29 September 2027, 10:00"
    raw = written(subject)
    assert b"Subject: Reminder: your appointment tomorrow, Wednesday 29 September 2027,\n 10:00\n" in raw
    assert_whole(raw, subject)


@pytest.mark.parametrize(
    "subject",
    [
        "short",
        " ".join(["word"] * 60),  # three lines
        "Çarşamba 29 Eylül 2027 saat 10:00: randevunuzu hatırlatırız, Ayşe Yılmaz-Öztürk",  # encoded words
    ],
)
def test_long_and_non_ascii_subjects_come_back_as_they_were(subject: str) -> None:
    assert_whole(written(subject), subject)


def test_a_subject_with_line_breaks_or_runs_of_spaces_is_one_line() -> None:
    assert read(written("Your  appointment\n on Monday"))["Subject"] == "Your appointment on Monday"


def test_the_date_is_the_moment_of_sending_and_the_message_id_the_delivery() -> None:
    at = datetime(2027, 10, 31, 1, 30, tzinfo=UTC)  # in Berlin, the second 02:30 of the night
    out = Outgoing(uuid.uuid4(), "email", "selin@example.org", "Hello", "Body", at)
    msg = read(bytes(email_message(out, SENDER)))
    assert msg["Date"].datetime == at
    assert msg["Message-ID"] == f"<{out.delivery_id.hex}@his.local>"
