"""Notifications sends a portal invitation: on the channel reception chose, with the code asked
of patients at sending time (never stored here), only while the invitation can be redeemed; and
learns from a redemption which account now owns the record.

The patient directory is the package's in-memory fake (its gRPC adapter is tested against a real
patients server in test_portal_invitations.py); the maildir and the SMS spool are real files.
"""

from __future__ import annotations

import email
import email.policy
import json
import mailbox
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from his.events.patients import InvitationIssued, InvitationRedeemed
from his.kernel import migrations
from his.kernel.db import Database
from his.kernel.events import Envelope, Event
from his.notifications import handlers
from his.notifications.channels import Channel, MaildirChannel, SpoolSmsChannel
from his.notifications.contacts import FakeContacts
from his.notifications.dispatcher import Dispatcher
from his.notifications.domain import Contact, Preferences
from his.notifications.store import NotificationsStore
from his.notifications.templates import Renderer

CODE = "7KQ2-M9XD-4RTA"


@dataclass
class Post:
    db: Database
    contacts: FakeContacts
    dispatcher: Dispatcher
    maildir: Path
    sms: Path

    async def handle(self, ev: Event, handler: object) -> Envelope:
        env = Envelope.wrap(ev, aggregate_id=uuid.uuid4())
        async with self.db.uow() as uow:
            await handler(uow, env, ev)  # type: ignore[operator]
        return env

    async def deliveries(self, patient: uuid.UUID) -> list[dict[str, object]]:
        rows = await self.db.pool.fetch(
            "SELECT channel, status, last_error, context::text AS context FROM delivery WHERE patient_id = $1",
            patient,
        )
        return [dict(r) for r in rows]

    def patient(self) -> uuid.UUID:
        pid = uuid.uuid4()
        self.contacts.contacts[pid] = Contact(email="deniz@example.org", phone="+90 555 111 2233", name="Deniz")
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
        env = await self.handle(ev, handlers.on_invitation_issued)
        async with self.db.uow() as uow:  # a redelivered event queues nothing new
            await handlers.on_invitation_issued(uow, env, ev)
        return ev


@pytest.fixture
async def post(admin_dsn: str, tmp_path: Path) -> AsyncIterator[Post]:
    dsn = await migrations.provision(admin_dsn, "notifications", "pw-notifications-invitations")
    await migrations.upgrade(admin_dsn, "notifications")
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute("TRUNCATE notifications.delivery, notifications.preference")
    await conn.close()
    db = Database(dsn, schema="notifications", max_size=4)
    await db.open()
    contacts = FakeContacts()
    channels: dict[str, Channel] = {
        "email": MaildirChannel(tmp_path / "maildir"),
        "sms": SpoolSmsChannel(tmp_path / "sms.jsonl"),
    }
    dispatcher = Dispatcher(NotificationsStore(db), contacts, channels, Renderer("Europe/Istanbul"))
    yield Post(db, contacts, dispatcher, tmp_path / "maildir", tmp_path / "sms.jsonl")
    await db.close()


async def test_the_code_goes_by_mail_whatever_the_preferences_and_is_kept_nowhere(post: Post) -> None:
    patient = post.patient()
    # The patient wants no e-mail, or nothing at all: they asked at the desk.
    async with NotificationsStore(post.db).uow() as u:
        await u.preferences.set(patient, Preferences(email=False, sms=False, opted_out=True), u.clock())
    await post.invite(patient)
    assert await post.dispatcher.tick() == 1
    (path,) = [*(post.maildir / "new").iterdir()]
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(mail, email.message.EmailMessage) and mail["To"] == "deniz@example.org"
    body = mail.get_content()
    assert CODE in body and "Dear Deniz" in body and "1 March 2026, 12:30" in body  # the hospital's time
    (row,) = await post.deliveries(patient)
    assert row["status"] == "sent" and CODE not in str(row)


async def test_a_text_message_carries_the_code(post: Post) -> None:
    patient = post.patient()
    await post.invite(patient, channel="sms")
    assert await post.dispatcher.tick() == 1
    (line,) = [json.loads(x) for x in post.sms.read_text().splitlines()]
    assert line["to"] == "+90 555 111 2233" and CODE in line["text"]


async def test_an_invitation_that_can_no_longer_be_redeemed_is_not_sent(post: Post) -> None:
    patient = post.patient()
    await post.invite(patient, code=None)  # used, replaced or expired before the message went out
    assert await post.dispatcher.tick() == 1
    assert not post.maildir.exists() or not list(mailbox.Maildir(post.maildir, create=False))
    (row,) = await post.deliveries(patient)
    assert (row["status"], row["last_error"]) == ("cancelled", "the invitation can no longer be redeemed")


async def test_the_invitation_waits_while_patients_does_not_answer(post: Post) -> None:
    patient = post.patient()
    await post.invite(patient)
    post.contacts.down = True
    assert await post.dispatcher.tick() == 1
    (row,) = await post.deliveries(patient)
    assert row["status"] == "queued" and "told to be down" in str(row["last_error"])
    post.contacts.down = False
    await post.db.pool.execute("UPDATE delivery SET due_at = now() - interval '1 second'")
    assert await post.dispatcher.tick() == 1
    assert len(list(mailbox.Maildir(post.maildir, create=False))) == 1


async def test_a_redemption_makes_the_account_the_records_owner_here_too(post: Post) -> None:
    patient, account = post.patient(), uuid.uuid4()
    async with NotificationsStore(post.db).uow() as u:
        assert not await u.accounts.owns(account, patient)
    redeemed = InvitationRedeemed(invitation_id=uuid.uuid4(), patient_id=patient, account_id=account)
    await post.handle(redeemed, handlers.on_invitation_redeemed)
    async with NotificationsStore(post.db).uow() as u:
        assert await u.accounts.owns(account, patient)
