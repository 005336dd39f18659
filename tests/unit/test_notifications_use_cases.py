"""The notifications service's use cases over the in-memory ports (no database, no network):
what is queued for which event, what goes out and when, what happens when the patient directory
does not answer, portal invitations sent on the channel chosen at the desk with a code asked for
at sending and kept nowhere, and who may read a patient's messages and choose their channels.

The event handlers' use cases run in a unit of ``his.testing.notifications``, whose contract with
the PostgreSQL store is ``tests/integration/test_notifications_contract.py``; the dispatcher ticks
over the same fake, with the package's fake contact directory and real channels: the maildir and
the SMS spool are files in ``tmp_path``, read back as a mail client reads them (``mailbox``, with
headers parsed and unfolded by ``email.policy.default``). The routes are the service's own,
mounted in-process. The service's clock is a fake one on hard dates (``tests.support.calendar``):
every test runs on new year's day and the day the clocks go back, the booking on every hard date.
What needs the real servers (dispatchers racing for one queue, events through NATS, the patient
directory over gRPC) stays in the integration tests.
"""

from __future__ import annotations

import email
import email.policy
import json
import mailbox
import stat
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import BinaryIO, TypeVar

import pytest

from his.events.laboratory import LabOrderResulted, LabOrderResultedV2, ResultFlag, opening
from his.events.patients import InvitationIssued, InvitationRedeemed
from his.events.scheduling import AppointmentBooked, AppointmentCancelled, AppointmentRescheduled
from his.kernel.clock import FakeClock
from his.kernel.crypto import new_key_text
from his.kernel.events import Envelope, Event
from his.kernel.mail import Channel, MaildirChannel, Outgoing, SpoolSmsChannel
from his.kernel.sealing import Seal, UnsealableError
from his.notifications import handlers
from his.notifications.app import http_over
from his.notifications.contacts import FakeContacts
from his.notifications.dispatcher import Dispatcher
from his.notifications.domain import Contact, Preferences
from his.notifications.ports import NotificationsWork
from his.notifications.templates import TEMPLATES, Renderer
from his.testing.notifications import FakeNotifications, StoredDelivery
from tests.support.api import bearer, serve
from tests.support.calendar import HARD_DATES, ZONE, HardDate
from tests.support.sealing import SEAL, sealed_result

CODE = "7KQ2-M9XD-4RTA"
E = TypeVar("E", bound=Event)
Handler = Callable[[NotificationsWork, Envelope, E], Awaitable[None]]


def parsed(fh: BinaryIO) -> EmailMessage:
    msg = email.message_from_binary_file(fh, policy=default)
    assert isinstance(msg, EmailMessage)
    return msg


@dataclass
class Post:
    fake: FakeNotifications
    contacts: FakeContacts
    dispatcher: Dispatcher
    maildir: Path
    sms: Path
    clock: FakeClock

    async def handle(self, ev: E, handler: Handler[E]) -> Envelope:
        env = Envelope.wrap(ev, aggregate_id=uuid.uuid4())
        await self.redeliver(env, ev, handler)
        return env

    async def redeliver(self, env: Envelope, ev: E, handler: Handler[E]) -> None:
        async with self.fake.uow() as u:
            await handler(u, env, ev)

    def mail(self) -> list[EmailMessage]:
        """The messages in the maildir, oldest first, with decoded header values."""
        box = mailbox.Maildir(self.maildir, factory=parsed, create=False)  # type: ignore[arg-type]
        return sorted(box, key=lambda m: m["Date"].datetime)  # type: ignore[arg-type]

    def deliveries(self, patient: uuid.UUID) -> list[StoredDelivery]:
        """The patient's rows of ``delivery``, by due time."""
        mine = [d for d in self.fake.state.deliveries.values() if d.patient_id == patient]
        return sorted(mine, key=lambda d: d.due_at)

    async def prefer(self, patient: uuid.UUID, chosen: Preferences) -> None:
        async with self.fake.uow() as u:
            await u.preferences.set(patient, chosen, u.clock())

    def someone(self, **kw: str | None) -> uuid.UUID:
        pid = uuid.uuid4()
        found = {"email": "selin@example.org", "phone": "+90 555 111 2233", "name": "Selin", **kw}
        self.contacts.contacts[pid] = Contact(found["email"], found["phone"], str(found["name"]))
        return pid

    async def invite(self, patient: uuid.UUID, channel: str = "email", code: str | None = CODE) -> InvitationIssued:
        invitation = uuid.uuid4()
        if code is not None:
            self.contacts.invitations[invitation] = code
        ev = InvitationIssued(
            invitation_id=invitation,
            patient_id=patient,
            channel=channel,
            expires_at=datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
            issued_by=uuid.uuid4(),
        )
        env = await self.handle(ev, handlers.invitation_issued)
        await self.redeliver(env, ev, handlers.invitation_issued)  # a redelivered event queues nothing new
        assert len([d for d in self.deliveries(patient) if d.cause_event_id == env.id]) == 1
        return ev


def _post(tmp_path: Path, clock: FakeClock, zone: str = ZONE) -> Post:
    fake, contacts = FakeNotifications(clock), FakeContacts()
    maildir, sms = tmp_path / "maildir", tmp_path / "sms.jsonl"
    channels: dict[str, Channel] = {"email": MaildirChannel(maildir), "sms": SpoolSmsChannel(sms)}
    return Post(fake, contacts, Dispatcher(fake, contacts, channels, Renderer(zone)), maildir, sms, clock)


@pytest.fixture(params=[HARD_DATES[0], HARD_DATES[4]], ids=str)
def hard(request: pytest.FixtureRequest) -> HardDate:
    """New year's day, or the day the clocks go back (the booking: every hard date)."""
    day: HardDate = request.param
    return day


@pytest.fixture
def post(hard: HardDate, tmp_path: Path) -> Post:
    """The clock stands three days before the hard date, at noon."""
    return _post(tmp_path, hard.clock(12, 0, days=-3))


@pytest.fixture
def desk(hard: HardDate, tmp_path: Path) -> Post:
    """As ``post``, in a hospital in Istanbul (for invitations)."""
    return _post(tmp_path, hard.clock(12, 0, days=-3), "Europe/Istanbul")


def booked(patient: uuid.UUID, start: datetime, appointment: uuid.UUID | None = None) -> AppointmentBooked:
    return AppointmentBooked(
        appointment_id=appointment or uuid.uuid4(),
        patient_id=patient,
        practitioner_id=uuid.uuid4(),
        service="consultation",
        start=start,
        end=start + timedelta(minutes=20),
    )


# --- appointments --------------------------------------------------------------------------------


@pytest.mark.parametrize("hard", HARD_DATES, ids=str)
async def test_a_booking_is_confirmed_in_the_maildir_and_reminded_once_a_day_before(post: Post, hard: HardDate) -> None:
    """Booked three days ahead for 10:00 on the hard date; reminded 24 hours before."""
    patient = post.someone()
    start = hard.at(10, 0)
    post.clock.now = hard.at(12, 0, days=-3)
    ev = booked(patient, start)
    env = await post.handle(ev, handlers.appointment_booked)
    await post.redeliver(env, ev, handlers.appointment_booked)  # a redelivered event queues nothing new
    rows = post.deliveries(patient)
    assert [(r.template, r.status) for r in rows] == [
        ("appointment_booked", "queued"),
        ("appointment_reminder", "queued"),
    ]
    assert rows[1].due_at == start - timedelta(hours=24)

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
    patient, appt = post.someone(), uuid.uuid4()
    start = post.clock.now + timedelta(days=3)
    await post.handle(booked(patient, start, appt), handlers.appointment_booked)
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
    await post.handle(moved, handlers.appointment_rescheduled)
    reminders = [r for r in post.deliveries(patient) if r.template == "appointment_reminder"]
    assert [(r.status, r.due_at) for r in reminders] == [
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
    await post.handle(gone, handlers.appointment_cancelled)
    statuses = {(r.template, r.status) for r in post.deliveries(patient)}
    assert ("appointment_reminder", "queued") not in statuses
    assert ("appointment_cancelled", "queued") in statuses


async def test_with_the_directory_down_messages_wait_and_go_out_when_it_returns(post: Post) -> None:
    patient = post.someone()
    await post.handle(booked(patient, post.clock.now + timedelta(days=3)), handlers.appointment_booked)
    post.contacts.down = True
    assert await post.dispatcher.tick() == 1
    row = post.deliveries(patient)[0]
    assert row.status == "queued" and "patients is unavailable" in str(row.last_error)
    assert row.due_at == post.clock.now + timedelta(seconds=2)  # tried again after a backoff
    assert post.mail() == []  # nothing sent, no address guessed
    post.contacts.down = False
    assert await post.dispatcher.tick() == 0  # not before the backoff is over
    post.clock.advance(timedelta(seconds=2))
    assert await post.dispatcher.tick() == 1
    assert len(post.mail()) == 1


async def test_opt_out_and_missing_addresses(post: Post) -> None:
    quiet, no_email = post.someone(), post.someone(email=None)
    await post.prefer(quiet, Preferences(email=True, sms=False, opted_out=False))
    start = post.clock.now + timedelta(days=3)
    await post.handle(booked(quiet, start), handlers.appointment_booked)
    await post.handle(booked(no_email, start), handlers.appointment_booked)
    await post.prefer(quiet, Preferences(opted_out=True))  # opting out after the message was queued still counts
    await post.dispatcher.tick()
    assert next(r.status for r in post.deliveries(quiet)) == "suppressed"
    failed = post.deliveries(no_email)[0]
    assert failed.status == "failed" and failed.last_error == "the patient has no email address"
    assert post.mail() == []


# --- the channels and templates --------------------------------------------------------------------


async def test_the_maildir_never_holds_one_delivery_twice(post: Post) -> None:
    channel = MaildirChannel(post.maildir)
    message = Outgoing(uuid.uuid4(), "email", "a@example.org", "Subject", "Body", HARD_DATES[0].at(0, 30))
    await channel.send(message)
    await channel.send(message)  # e.g. a crash after sending, before it was recorded
    assert len(post.mail()) == 1


async def test_messages_on_disk_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    """Queued e-mail and text messages hold names, addresses and appointment details: other local
    users must not read them."""
    root = tmp_path / "mail"
    mail, sms = MaildirChannel(root / "maildir"), SpoolSmsChannel(root / "sms.jsonl")
    at = HARD_DATES[0].at(0, 30)
    await mail.send(Outgoing(uuid.uuid4(), "email", "ayse@example.org", "Your appointment", "Dear Ayse", at))
    await sms.send(Outgoing(uuid.uuid4(), "sms", "+90 555 000 0000", "Your appointment", "Dear Ayse", at))
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


# --- portal invitations -----------------------------------------------------------------------------


async def test_the_code_goes_by_mail_whatever_the_preferences_and_is_kept_nowhere(desk: Post) -> None:
    patient = desk.someone(name="Deniz", email="deniz@example.org")
    # The patient wants no e-mail, or nothing at all: they asked at the desk.
    await desk.prefer(patient, Preferences(email=False, sms=False, opted_out=True))
    await desk.invite(patient)
    assert await desk.dispatcher.tick() == 1
    (path,) = [*(desk.maildir / "new").iterdir()]
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(mail, email.message.EmailMessage) and mail["To"] == "deniz@example.org"
    body = mail.get_content()
    assert CODE in body and "Dear Deniz" in body and "1 March 2026, 12:30" in body  # the hospital's time
    (row,) = desk.deliveries(patient)
    assert row.status == "sent" and CODE not in str(row)


async def test_a_text_message_carries_the_code(desk: Post) -> None:
    patient = desk.someone(name="Deniz")
    await desk.invite(patient, channel="sms")
    assert await desk.dispatcher.tick() == 1
    (line,) = [json.loads(x) for x in desk.sms.read_text().splitlines()]
    assert line["to"] == "+90 555 111 2233" and CODE in line["text"]


async def test_an_invitation_that_can_no_longer_be_redeemed_is_not_sent(desk: Post) -> None:
    patient = desk.someone(name="Deniz")
    await desk.invite(patient, code=None)  # used, replaced or expired before the message went out
    assert await desk.dispatcher.tick() == 1
    assert not desk.maildir.exists() or not list(mailbox.Maildir(desk.maildir, create=False))
    (row,) = desk.deliveries(patient)
    assert (row.status, row.last_error) == ("cancelled", "the invitation can no longer be redeemed")


async def test_the_invitation_waits_while_patients_does_not_answer(desk: Post) -> None:
    patient = desk.someone(name="Deniz")
    await desk.invite(patient)
    desk.contacts.down = True
    assert await desk.dispatcher.tick() == 1
    (row,) = desk.deliveries(patient)
    assert row.status == "queued" and "told to be down" in str(row.last_error)
    desk.contacts.down = False
    desk.clock.advance(timedelta(seconds=2))  # the backoff is over
    assert await desk.dispatcher.tick() == 1
    assert len(list(mailbox.Maildir(desk.maildir, create=False))) == 1


async def test_a_redemption_makes_the_account_the_records_owner_here_too(desk: Post) -> None:
    patient, account = desk.someone(name="Deniz"), uuid.uuid4()
    async with desk.fake.read() as u:
        assert not await u.accounts.owns(account, patient)
    redeemed = InvitationRedeemed(invitation_id=uuid.uuid4(), patient_id=patient, account_id=account)
    await desk.handle(redeemed, handlers.invitation_redeemed)
    async with desk.fake.read() as u:
        assert await u.accounts.owns(account, patient)


# --- the routes ------------------------------------------------------------------------------------


async def test_a_patients_messages_and_preferences_reach_themself_reception_and_admin_only(post: Post) -> None:
    patient, account = post.someone(), uuid.uuid4()
    await post.handle(
        InvitationRedeemed(invitation_id=uuid.uuid4(), patient_id=patient, account_id=account),
        handlers.invitation_redeemed,
    )
    await post.handle(booked(patient, post.clock.now + timedelta(days=3)), handlers.appointment_booked)
    own, clerk, admin = bearer(account, "PATIENT"), bearer(uuid.uuid4(), "RECEPTIONIST"), bearer(uuid.uuid4(), "ADMIN")
    params = {"patient_id": str(patient)}
    async with serve(http_over(post.fake)) as client:
        mine = await client.get("/notifications", params=params, headers=own)
        assert mine.status_code == 200, mine.text
        assert [d["template"] for d in mine.json()["items"]] == ["appointment_reminder", "appointment_booked"]
        assert (await client.get("/notifications", params=params, headers=admin)).status_code == 200
        assert (await client.get("/notifications", params=params, headers=clerk)).status_code == 403
        other = bearer(uuid.uuid4(), "PATIENT")
        assert (await client.get("/notifications", params=params, headers=other)).status_code == 404
        chosen = {"email": False, "sms": True, "opted_out": False}
        put = await client.put("/notifications/preferences", params=params, json=chosen, headers=clerk)
        assert put.status_code == 200 and put.json() == chosen
        got = await client.get("/notifications/preferences", params=params, headers=own)
        assert got.json() == chosen
    assert post.fake.state.preferences[patient] == (Preferences(email=False, sms=True), post.clock.now)
    outcomes = [(e.data["resource"], e.data["outcome"]) for e in post.fake.published if "accessed" in e.type]
    assert ("delivery", "denied") in outcomes and ("preference", "allowed") in outcomes


async def test_alerts_reach_admins_and_the_ordering_doctor_only(post: Post) -> None:
    admin, doctor = uuid.uuid4(), uuid.uuid4()
    async with post.fake.uow() as u:
        await u.alerts.add(
            kind="break_glass",
            audience="ADMIN",
            patient_id=uuid.uuid4(),
            actor_id=doctor,
            detail={},
            event_id=uuid.uuid4(),
            at=u.clock(),
        )
    async with serve(http_over(post.fake)) as client:
        admins = await client.get("/notifications/alerts", headers=bearer(admin, "ADMIN"))
        assert [a["kind"] for a in admins.json()["items"]] == ["break_glass"]
        assert (await client.get("/notifications/alerts", headers=bearer(doctor, "DOCTOR"))).json()["items"] == []
        assert (await client.get("/notifications/alerts", headers=bearer(doctor, "NURSE"))).status_code == 403


async def test_a_sealed_abnormal_result_alerts_its_doctor_and_a_box_that_does_not_open_is_permanent(
    post: Post,
) -> None:
    """The codes and flags travel sealed (v3): notifications opens the box and alerts the
    ordering doctor to the flagged tests only; a normal result raises nothing; a v2 event left in
    the stream (flags in clear) alerts the same; a box under a key it does not hold does not
    open: a ``PermanentError`` (a dead letter), and no alert."""
    doctor, patient = uuid.uuid4(), uuid.uuid4()
    on_result = opening(SEAL, handlers.lab_order_resulted)

    def result(*flags: tuple[str, str], seal: Seal = SEAL) -> LabOrderResulted:
        return sealed_result(
            order_id=uuid.uuid4(),
            patient_id=patient,
            ordered_by=doctor,
            priority="stat",
            resulted_at=post.clock(),
            results=[ResultFlag(code=c, flag=f) for c, f in flags],
            charges=[],
            abnormal=any(f != "N" for _, f in flags),
            critical=any(f in ("LL", "HH") for _, f in flags),
            seal=seal,
        )

    await post.handle(result(("HIV", "A"), ("K", "N")), on_result)
    await post.handle(result(("K", "N")), on_result)
    leftover = LabOrderResultedV2(**result(("K", "HH")).opened(SEAL).model_dump())
    await post.handle(leftover.upcast(), on_result)
    with pytest.raises(UnsealableError, match="key that is not configured"):
        await post.handle(result(("TROPI", "HH"), seal=Seal("HIS_LAB_SEAL_KEYS", new_key_text())), on_result)
    async with serve(http_over(post.fake)) as client:
        alerts = (await client.get("/notifications/alerts", headers=bearer(doctor, "DOCTOR"))).json()["items"]
    flagged = sorted(
        (a["detail"]["critical"], [(f["code"], f["flag"]) for f in a["detail"]["flagged"]]) for a in alerts
    )
    assert flagged == [(False, [("HIV", "A")]), (True, [("K", "HH")])]
