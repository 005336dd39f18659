"""Notifications on the real database: dispatchers racing for one queue.

What is queued for which event, what goes out and when, and what happens when the patient
directory does not answer are unit tests over the in-memory ports
(``tests/unit/test_notifications_use_cases.py``); the ports' contract with PostgreSQL is
``tests/integration/test_notifications_contract.py``. Here two dispatchers claim due deliveries
at once (``FOR UPDATE SKIP LOCKED``), which only the database can settle. The contact directory
is the package's in-memory fake; the maildir is real; the clock is a fake one on a hard date.
"""

from __future__ import annotations

import asyncio
import mailbox
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from his.events.scheduling import AppointmentBooked
from his.kernel import migrations
from his.kernel.clock import FakeClock
from his.kernel.db import Database
from his.kernel.events import Envelope
from his.kernel.mail import Channel, MaildirChannel, SpoolSmsChannel
from his.notifications import handlers
from his.notifications.contacts import FakeContacts
from his.notifications.dispatcher import Dispatcher
from his.notifications.domain import Contact
from his.notifications.store import NotificationsStore
from his.notifications.templates import Renderer
from tests.support.calendar import HARD_DATES, ZONE

#: What the clock shows: a hard date's eve, three days before it.
START = HARD_DATES[0].at(12, 0, days=-3)


@pytest.fixture
async def db(admin_dsn: str) -> AsyncIterator[Database]:
    dsn = await migrations.provision(admin_dsn, "notifications", "pw-notifications-test")
    await migrations.upgrade(admin_dsn, "notifications")
    conn = await asyncpg.connect(admin_dsn)
    await conn.execute("TRUNCATE notifications.delivery, notifications.preference")
    await conn.close()
    db = Database(dsn, schema="notifications", max_size=6, clock=FakeClock(START))
    await db.open()
    yield db
    await db.close()


async def test_two_dispatchers_never_send_one_message_twice(db: Database, tmp_path: Path) -> None:
    contacts = FakeContacts()
    units = NotificationsStore(db)
    patients = []
    for _ in range(30):
        pid = uuid.uuid4()
        contacts.contacts[pid] = Contact(email="selin@example.org", phone=None, name="Selin")
        patients.append(pid)
        ev = AppointmentBooked(
            appointment_id=uuid.uuid4(),
            patient_id=pid,
            practitioner_id=uuid.uuid4(),
            service="consultation",
            start=START + timedelta(days=3),
            end=START + timedelta(days=3, minutes=20),
        )
        async with db.uow() as uow:
            await handlers.on_appointment_booked(uow, Envelope.wrap(ev, aggregate_id=pid), ev)
    maildir = tmp_path / "maildir"
    channels: dict[str, Channel] = {"email": MaildirChannel(maildir), "sms": SpoolSmsChannel(tmp_path / "sms.jsonl")}
    racing = [Dispatcher(units, contacts, channels, Renderer(ZONE), batch=4) for _ in range(2)]

    async def drain(d: Dispatcher) -> int:
        handled = 0
        while done := await d.tick():
            handled += done
        return handled

    handled = await asyncio.gather(*(drain(d) for d in racing))
    assert sum(handled) == 30 and sum(d.sent for d in racing) == 30
    assert len(list(mailbox.Maildir(maildir, create=False))) == 30
    statuses = await db.pool.fetch("SELECT status, count(*) FROM delivery GROUP BY status ORDER BY status")
    assert [tuple(r) for r in statuses] == [("queued", 30), ("sent", 30)]  # the reminders wait for their day
