"""Notifications on the real database and a real maildir: what is queued for which event, what
goes out and when, and what happens when the patient directory does not answer.

The contact directory is the package's in-memory fake here (its gRPC adapter runs under
`his up`); the maildir is real and is read back as a mail client reads it (``mailbox``, with
headers parsed and unfolded by ``email.policy.default``). The service's clock is a fake one,
set on hard dates (``tests.support.calendar``).
"""

from __future__ import annotations

import email
import mailbox
import stat
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import BinaryIO

import asyncpg
import pytest

from his.events.scheduling import AppointmentBooked, AppointmentCancelled, AppointmentRescheduled
from his.kernel import migrations
from his.kernel.clock import FakeClock
from his.kernel.db import Database
from his.kernel.events import Envelope, Event
from his.notifications import handlers
from his.notifications.channels import Channel, MaildirChannel, Outgoing, SpoolSmsChannel
from his.notifications.contacts import FakeContacts
from his.notifications.dispatcher import Dispatcher
from his.notifications.domain import Contact, Preferences
from his.notifications.store import NotificationsStore
from his.notifications.templates import TEMPLATES, Renderer
from tests.support.calendar import HARD_DATES, ZONE, HardDate

#: What the clock shows unless a test sets it: a hard date's eve, three days before it.
START = HARD_DATES[0].at(12, 0, days=-3)


def parsed(fh: BinaryIO) -> EmailMessage:
    msg = email.message_from_binary_file(fh, policy=default)
    assert isinstance(msg, EmailMessage)
    return msg


@dataclass
class Post:
    db: Database
    contacts: FakeContacts
    dispatcher: Dispatcher
    maildir: Path
    clock: FakeClock

    async def handle(self, ev: Event, handler: object) -> Envelope:
        env = Envelope.wrap(ev, aggregate_id=uuid.uuid4())
        async with self.db.uow() as uow:
            await handler(uow, env, ev)  # type: ignore[operator]
        return env

    async def redeliver(self, env: Envelope, ev: Event, handler: object) -> None:
        async with self.db.uow() as uow:
            await handler(uow, env, ev)  # type: ignore[operator]

    def mail(self) -> list[EmailMessage]:
        """The messages in the maildir, oldest first, with decoded header values."""
        box = mailbox.Maildir(self.maildir, factory=parsed, create=False)  # type: ignore[arg-type]
        return sorted(box, key=lambda m: m["Date"].datetime)  # type: ignore[arg-type]

    async def deliveries(self, patient: uuid.UUID) -> list[dict[str, object]]:
        rows = await self.db.pool.fetch(
            "SELECT template, channel, status, due_at, last_error FROM delivery WHERE patient_id = $1 ORDER BY due_at",
            patient,
        )
        return [dict(r) for r in rows]


@pytest.fixture
async def post(admin_dsn: str, tmp_path: Path) -> AsyncIterator[Post]:
    dsn = await migrations.provision(admin_dsn, "notifications", "pw-notifications-test")
    await migrations.upgrade(admin_dsn, "notifications")
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute("TRUNCATE notifications.delivery, notifications.preference")
    await conn.close()
    clock = FakeClock(START)
    db = Database(dsn, schema="notifications", max_size=4, clock=clock)
    await db.open()
    contacts = FakeContacts()
    maildir = tmp_path / "maildir"
    channels: dict[str, Channel] = {"email": MaildirChannel(maildir), "sms": SpoolSmsChannel(tmp_path / "sms.jsonl")}
    yield Post(db, contacts, Dispatcher(NotificationsStore(db), contacts, channels, Renderer(ZONE)), maildir, clock)
    await db.close()


def booked(patient: uuid.UUID, start: datetime, appointment: uuid.UUID | None = None) -> AppointmentBooked:
    return AppointmentBooked(
        appointment_id=appointment or uuid.uuid4(),
        patient_id=patient,
        practitioner_id=uuid.uuid4(),
        service="consultation",
        start=start,
        end=start + timedelta(minutes=20),
    )


def someone(post: Post, **kw: object) -> uuid.UUID:
    pid = uuid.uuid4()
    post.contacts.contacts[pid] = Contact(
        **{
            "email": "selin@example.org",
            "phone": "+90 555 111 2233",  # type: ignore[arg-type]
            "name": "Selin",
            **kw,
        }
    )
    return pid


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_a_booking_is_confirmed_in_the_maildir_and_reminded_once_a_day_before(post: Post, hard: HardDate) -> None:
    """Booked three days ahead for 10:00 on the hard date; reminded 24 hours before."""
    patient = someone(post)
    start = hard.at(10, 0)
    post.clock.now = hard.at(12, 0, days=-3)
    ev = booked(patient, start)
    env = await post.handle(ev, handlers.on_appointment_booked)
    await post.redeliver(env, ev, handlers.on_appointment_booked)  # a redelivered event queues nothing new
    rows = await post.deliveries(patient)
    assert [(r["template"], r["status"]) for r in rows] == [
        ("appointment_booked", "queued"),
        ("appointment_reminder", "queued"),
    ]
    assert rows[1]["due_at"] == start - timedelta(hours=24)

    assert await post.dispatcher.tick() == 1  # only the confirmation is due
    mail = post.mail()
    when = start.astimezone(hard.tz).strftime("%A %d %B %Y, %H:%M")  # e.g. Wednesday 29 September 2027, 10:00
    assert len(mail) == 1 and mail[0]["To"] == "selin@example.org"
    assert mail[0]["Subject"] == f"Your appointment on {when}"
    assert mail[0]["Date"].datetime == post.clock.now
    content = mail[0].get_content()
    assert "Dear Selin" in content and f"booked for {when} (until 10:20)" in content

    # The reminder goes out when due (not a second earlier), exactly once.
    post.clock.now = start - timedelta(hours=24, seconds=1)
    assert await post.dispatcher.tick() == 0
    post.clock.advance(timedelta(seconds=1))
    assert await post.dispatcher.tick() == 1
    assert await post.dispatcher.tick() == 0
    subjects = [m["Subject"] for m in post.mail()]
    assert subjects == [f"Your appointment on {when}", f"Reminder: your appointment tomorrow, {when}"]


async def test_moving_or_cancelling_an_appointment_moves_or_drops_its_reminder(post: Post) -> None:
    patient, appt = someone(post), uuid.uuid4()
    start = post.clock.now + timedelta(days=3)
    await post.handle(booked(patient, start, appt), handlers.on_appointment_booked)
    moved = AppointmentRescheduled(
        appointment_id=appt,
        patient_id=patient,
        practitioner_id=uuid.uuid4(),
        service="consultation",
        start=start + timedelta(days=1),
        end=start + timedelta(days=1, minutes=20),
        previous_start=start,
        previous_end=start + timedelta(minutes=20),
    )
    await post.handle(moved, handlers.on_appointment_rescheduled)
    reminders = [r for r in await post.deliveries(patient) if r["template"] == "appointment_reminder"]
    assert [(r["status"], r["due_at"]) for r in reminders] == [
        ("cancelled", start - timedelta(hours=24)),
        ("queued", start),
    ]
    gone = AppointmentCancelled(
        appointment_id=appt,
        patient_id=patient,
        practitioner_id=uuid.uuid4(),
        service="consultation",
        start=moved.start,
        end=moved.end,
    )
    await post.handle(gone, handlers.on_appointment_cancelled)
    statuses = {(r["template"], r["status"]) for r in await post.deliveries(patient)}
    assert ("appointment_reminder", "queued") not in statuses
    assert ("appointment_cancelled", "queued") in statuses


async def test_with_the_directory_down_messages_wait_and_go_out_when_it_returns(post: Post) -> None:
    patient = someone(post)
    await post.handle(booked(patient, post.clock.now + timedelta(days=3)), handlers.on_appointment_booked)
    post.contacts.down = True
    assert await post.dispatcher.tick() == 1
    row = (await post.deliveries(patient))[0]
    assert row["status"] == "queued" and "patients is unavailable" in str(row["last_error"])
    assert row["due_at"] == post.clock.now + timedelta(seconds=2)  # tried again after a backoff
    assert post.mail() == []  # nothing sent, no address guessed
    post.contacts.down = False
    assert await post.dispatcher.tick() == 0  # not before the backoff is over
    post.clock.advance(timedelta(seconds=2))
    assert await post.dispatcher.tick() == 1
    assert len(post.mail()) == 1


async def test_opt_out_and_missing_addresses(post: Post) -> None:
    quiet, no_email = someone(post), someone(post, email=None)
    units = NotificationsStore(post.db)
    async with units.uow() as u:
        await u.preferences.set(quiet, Preferences(email=True, sms=False, opted_out=False), u.clock())
    start = post.clock.now + timedelta(days=3)
    await post.handle(booked(quiet, start), handlers.on_appointment_booked)
    await post.handle(booked(no_email, start), handlers.on_appointment_booked)
    async with units.uow() as u:  # opting out after the message was queued still counts
        await u.preferences.set(quiet, Preferences(opted_out=True), u.clock())
    await post.dispatcher.tick()
    assert next(r["status"] for r in await post.deliveries(quiet)) == "suppressed"
    failed = (await post.deliveries(no_email))[0]
    assert failed["status"] == "failed" and failed["last_error"] == "the patient has no email address"
    assert post.mail() == []


async def test_the_maildir_never_holds_one_delivery_twice(post: Post) -> None:
    channel = MaildirChannel(post.maildir)
    message = Outgoing(uuid.uuid4(), "email", "a@example.org", "Subject", "Body")
    await channel.send(message)
    await channel.send(message)  # e.g. a crash after sending, before it was recorded
    assert len(post.mail()) == 1


async def test_messages_on_disk_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    """Queued e-mail and text messages hold names, addresses and appointment details: other local
    users must not read them."""
    root = tmp_path / "mail"
    mail, sms = MaildirChannel(root / "maildir"), SpoolSmsChannel(root / "sms.jsonl")
    await mail.send(Outgoing(uuid.uuid4(), "email", "ayse@example.org", "Your appointment", "Dear Ayse"))
    await sms.send(Outgoing(uuid.uuid4(), "sms", "+90 555 000 0000", "Your appointment", "Dear Ayse"))
    private = [
        root / "maildir",
        *(root / "maildir").iterdir(),
        *(root / "maildir" / "new").iterdir(),
        root / "sms.jsonl",
    ]
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in private}
    assert all(int(m, 8) & 0o077 == 0 for m in modes.values()), modes


def test_every_template_renders() -> None:
    r = Renderer("UTC")
    when = datetime(2026, 12, 1, 9, 0, tzinfo=UTC).isoformat()
    ctx = {
        "name": "Selin",
        "start": when,
        "end": when,
        "previous_start": when,
        "expires_at": when,
        "service": "follow_up",
        "code": "7KQ2-M9XD-4RTA",
    }
    for template in TEMPLATES:
        subject, body = r.render(template, ctx)
        assert subject and "Selin" in body, template
