"""One contract for the notifications service's ports, run against PostgreSQL
(``his.notifications.store``) and the in-memory fakes (``his.testing.notifications``) alike: what
the use cases' unit tests assume of the fake holds of the database.

Both sides start empty. Every unit of work runs half an hour after midnight of a new year's day
in Berlin (the UTC date is still the old year's); the moments given to the repositories are
that one and others around it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import pytest
from asyncpg.exceptions import CharacterNotInRepertoireError, UntranslatableCharacterError

from his.events.patients import InvitationRedeemed
from his.kernel import migrations, tracing
from his.kernel.clock import FakeClock
from his.kernel.db import Database
from his.notifications.domain import REMINDER, Delivery, Due, Message, Preferences, retry_delay, user_audience
from his.notifications.ports import NotificationsUnits
from his.notifications.store import NotificationsStore
from his.testing.notifications import FakeNotifications
from tests.support.calendar import HARD_DATES

HARD = HARD_DATES[0]
#: The moment every unit of work here says it is.
NOW = HARD.at(0, 30)
TABLES = "delivery, preference, patient_account, alert, outbox, inbox"
REDEEMED = "his.patients.invitation.redeemed.v1"


@dataclass
class Side:
    units: NotificationsUnits
    #: The types of the events committed so far, in commit order.
    published: Callable[[], Awaitable[list[str]]]
    #: What a CHECK refuses with.
    check: type[Exception]


@pytest.fixture(params=["memory", "postgres"])
async def side(request: pytest.FixtureRequest, admin_dsn: str) -> AsyncIterator[Side]:
    clock = FakeClock(NOW)
    if request.param == "memory":
        fake = FakeNotifications(clock)

        async def in_memory() -> list[str]:
            return [e.type for e in fake.published]

        yield Side(fake, in_memory, ValueError)
        return
    dsn = await migrations.provision(admin_dsn, "notifications", "pw-notifications-contract")
    await migrations.upgrade(admin_dsn, "notifications")
    await _empty(admin_dsn)
    db = Database(dsn, schema="notifications", max_size=4, clock=clock)
    await db.open()

    async def in_outbox() -> list[str]:
        return [r[0] for r in await db.pool.fetch("SELECT subject FROM outbox ORDER BY id")]

    try:
        yield Side(NotificationsStore(db), in_outbox, asyncpg.CheckViolationError)
    finally:
        await db.close()
        await _empty(admin_dsn)  # the next file's tests find the schema as a fresh one


async def _empty(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"TRUNCATE {', '.join(f'notifications.{t.strip()}' for t in TABLES.split(','))}")
    finally:
        await conn.close()


async def _queue(
    side: Side,
    patient: uuid.UUID,
    template: str = "welcome",
    channel: str = "email",
    *,
    event: uuid.UUID | None = None,
    due_at: datetime = NOW,
    at: datetime = NOW,
    appointment: uuid.UUID | None = None,
    context: dict[str, str] | None = None,
) -> bool:
    async with side.units.uow() as u:
        return await u.deliveries.queue(
            patient_id=patient,
            template=template,
            channel=channel,
            event_id=event or uuid.uuid4(),
            due_at=due_at,
            at=at,
            appointment_id=appointment,
            context=context,
        )


async def _history(side: Side, patient: uuid.UUID, limit: int = 50) -> list[Delivery]:
    async with side.units.read() as u:
        return await u.deliveries.of(patient, limit=limit)


async def _claim(side: Side, limit: int = 20, now: datetime = NOW) -> list[Due]:
    async with side.units.uow() as u:
        return await u.deliveries.claim_due(limit, now)


# --- deliveries ----------------------------------------------------------------------------------


async def test_a_message_is_queued_once_per_event_template_and_channel(side: Side) -> None:
    patient, event = uuid.uuid4(), uuid.uuid4()
    due = NOW + timedelta(hours=5)
    assert await _queue(side, patient, event=event, due_at=due, context={"queued_at": NOW.isoformat()})
    assert not await _queue(side, patient, event=event, due_at=due + timedelta(hours=1))  # redelivered
    assert await _queue(side, patient, channel="sms", event=event)  # another channel
    assert await _queue(side, patient, template="appointment_booked", event=event)  # another template
    (first,) = [d for d in await _history(side, patient) if d.channel == "email" and d.template == "welcome"]
    assert first == Delivery(first.id, "welcome", "email", "queued", NOW, due, None, None)
    assert len(await _history(side, patient)) == 3
    assert await _history(side, uuid.uuid4()) == []


async def test_the_history_is_newest_first_then_latest_due_then_by_id(side: Side) -> None:
    patient = uuid.uuid4()
    old, new = NOW - timedelta(days=2), NOW - timedelta(minutes=1)
    await _queue(side, patient, "welcome", at=old, due_at=old)
    await _queue(side, patient, "appointment_booked", at=new, due_at=new)
    await _queue(side, patient, REMINDER, at=new, due_at=NOW + timedelta(days=1), appointment=uuid.uuid4())
    for _ in range(3):  # equal moments: by id
        await _queue(side, patient, "waitlist_offer", at=old, due_at=old)
    listed = await _history(side, patient)
    assert [d.template for d in listed[:2]] == [REMINDER, "appointment_booked"]
    assert sorted(d.template for d in listed[2:]) == ["waitlist_offer"] * 3 + ["welcome"]
    assert [d.created_at for d in listed] == [new, new, old, old, old, old]
    ties = listed[2:]
    assert ties == sorted(ties, key=lambda d: d.id)
    assert await _history(side, patient, limit=2) == listed[:2]


async def test_an_events_messages_go_in_together_each_once(side: Side) -> None:
    patient, event, appointment = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    start = (NOW + timedelta(days=3)).isoformat()
    later = NOW + timedelta(days=2)
    messages = [
        Message("appointment_booked", "email", NOW, {"start": start}),
        Message("appointment_booked", "sms", NOW, {"start": start}),
        Message(REMINDER, "email", later, {"start": start}),
        Message(REMINDER, "email", later + timedelta(hours=1), {"start": start}),  # the same key: skipped
    ]
    async with side.units.uow() as u:
        await u.deliveries.queue_many(
            patient_id=patient, event_id=event, appointment_id=appointment, messages=messages, at=NOW
        )
        await u.deliveries.queue_many(  # redelivered: nothing new
            patient_id=patient, event_id=event, appointment_id=appointment, messages=messages, at=NOW
        )
        await u.deliveries.queue_many(patient_id=patient, event_id=event, appointment_id=None, messages=[], at=NOW)
    listed = await _history(side, patient)
    assert sorted((d.template, d.channel, d.due_at, d.created_at) for d in listed) == [
        ("appointment_booked", "email", NOW, NOW),
        ("appointment_booked", "sms", NOW, NOW),
        (REMINDER, "email", later, NOW),
    ]


async def test_a_reminder_is_queued_once_per_appointment_time_and_channel_until_cancelled(side: Side) -> None:
    patient, appointment, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    start = {"start": (NOW + timedelta(days=2)).isoformat()}
    due = NOW + timedelta(days=1)
    assert await _queue(side, patient, REMINDER, appointment=appointment, due_at=due, context=start)
    assert not await _queue(side, patient, REMINDER, appointment=appointment, due_at=due, context=start)
    assert await _queue(side, patient, REMINDER, "sms", appointment=appointment, due_at=due, context=start)
    moved = {"start": (NOW + timedelta(days=3)).isoformat()}
    assert await _queue(side, patient, REMINDER, appointment=appointment, due_at=due + timedelta(days=1), context=moved)
    assert await _queue(side, patient, REMINDER, appointment=other, due_at=due, context=start)
    assert await _queue(side, patient, "appointment_booked", appointment=appointment, context=start)
    async with side.units.uow() as u:
        await u.deliveries.cancel_reminders(appointment)
    statuses = sorted((d.template, d.channel, d.status) for d in await _history(side, patient))
    assert statuses == [
        ("appointment_booked", "email", "queued"),  # not a reminder
        (REMINDER, "email", "cancelled"),
        (REMINDER, "email", "cancelled"),
        (REMINDER, "email", "queued"),  # another appointment's
        (REMINDER, "sms", "cancelled"),
    ]
    # A cancelled reminder holds no time: the same one may be queued again.
    assert await _queue(side, patient, REMINDER, appointment=appointment, due_at=due, context=start)


async def test_a_sent_reminder_stays_and_holds_its_time(side: Side) -> None:
    patient, appointment = uuid.uuid4(), uuid.uuid4()
    start = {"start": (NOW + timedelta(days=1, hours=1)).isoformat()}
    await _queue(side, patient, REMINDER, appointment=appointment, context=start)
    async with side.units.uow() as u:
        (due,) = await u.deliveries.claim_due(5, NOW)
        await u.deliveries.finish(due.id, "sent", at=NOW)
        await u.deliveries.cancel_reminders(appointment)
    assert [d.status for d in await _history(side, patient)] == ["sent"]
    assert not await _queue(side, patient, REMINDER, appointment=appointment, context=start)


async def test_due_deliveries_are_claimed_earliest_first_up_to_the_limit(side: Side) -> None:
    patient = uuid.uuid4()
    times = [NOW + timedelta(seconds=1), NOW - timedelta(days=1), NOW, NOW - timedelta(hours=1)]
    traces: list[str] = []  # the trace ids
    for n, due in enumerate(times):
        with tracing.span("the causing event"):  # the delivery keeps the trace that queued it
            traces.append(tracing.current_traceparent().split("-")[1])
            await _queue(side, patient, f"t{n}", due_at=due, context={"n": str(n)})
    done = await _claim(side, 1)
    await _queue(side, patient, "gone", due_at=NOW - timedelta(days=3))
    async with side.units.uow() as u:
        (gone,) = await u.deliveries.claim_due(1, NOW)
        await u.deliveries.finish(gone.id, "failed", "no such patient", at=NOW)
    claimed = await _claim(side)
    assert [d.template for d in done] == ["t1"]
    assert [(d.template, d.context, d.attempts) for d in claimed] == [
        ("t1", {"n": "1"}, 0),
        ("t3", {"n": "3"}, 0),
        ("t2", {"n": "2"}, 0),  # due at the moment itself
    ]
    assert [(d.traceparent or "").split("-")[1] for d in claimed] == [traces[1], traces[3], traces[2]]
    assert {(d.patient_id, d.channel) for d in claimed} == {(patient, "email")}
    assert [d.template for d in await _claim(side, 20, NOW + timedelta(seconds=1))][-1] == "t0"
    assert await _claim(side, 0) == []


async def test_a_delivery_is_finished_with_its_reason_and_sent_at_only_when_sent(side: Side) -> None:
    patient = uuid.uuid4()
    for template in ("welcome", "appointment_booked", "waitlist_offer"):
        await _queue(side, patient, template)
    later = NOW + timedelta(minutes=7)
    async with side.units.uow() as u:
        by = {d.template: d for d in await u.deliveries.claim_due(5, NOW)}
        await u.deliveries.finish(by["welcome"].id, "sent", at=later)
        await u.deliveries.finish(by["appointment_booked"].id, "suppressed", "opted out", at=later)
        await u.deliveries.finish(by["waitlist_offer"].id, "failed", "the patient has no sms address", at=later)
        await u.deliveries.finish(uuid.uuid4(), "sent", at=later)  # no such delivery: nothing happens
    got = {d.template: (d.status, d.sent_at, d.reason) for d in await _history(side, patient)}
    assert got == {
        "welcome": ("sent", later, None),
        "appointment_booked": ("suppressed", None, "opted out"),
        "waitlist_offer": ("failed", None, "the patient has no sms address"),
    }
    assert await _claim(side) == []


async def test_a_retry_is_due_after_its_backoff_counting_attempts(side: Side) -> None:
    patient = uuid.uuid4()
    await _queue(side, patient, context={"queued_at": NOW.isoformat()})
    at = NOW
    for attempt in range(3):
        async with side.units.uow() as u:
            (due,) = await u.deliveries.claim_due(5, at)
            assert due.attempts == attempt
            await u.deliveries.retry_later(due.id, at + retry_delay(due.attempts), "patients is unavailable")
        wait = retry_delay(attempt)
        assert await _claim(side, 5, at + wait - timedelta(microseconds=1)) == []
        at += wait
    (d,) = await _history(side, patient)
    assert (d.status, d.due_at, d.reason) == ("queued", NOW + timedelta(seconds=2 + 4 + 8), "patients is unavailable")
    async with side.units.uow() as u:
        (due,) = await u.deliveries.claim_due(5, at)
        assert due.attempts == 3
        await u.deliveries.finish(due.id, "sent", at=at)
        await u.deliveries.retry_later(uuid.uuid4(), at, "nothing")  # no such delivery: nothing happens
    assert [(d.status, d.sent_at) for d in await _history(side, patient)] == [("sent", at)]


async def test_a_status_outside_the_check_is_refused(side: Side) -> None:
    patient = uuid.uuid4()
    await _queue(side, patient)
    with pytest.raises(side.check):
        async with side.units.uow() as u:
            (due,) = await u.deliveries.claim_due(5, NOW)
            await u.deliveries.finish(due.id, "lost", at=NOW)
    assert [d.status for d in await _history(side, patient)] == ["queued"]


async def test_text_with_a_nul_character_is_refused(side: Side) -> None:
    patient = uuid.uuid4()
    with pytest.raises(CharacterNotInRepertoireError):
        await _queue(side, patient, "wel\x00come")
    with pytest.raises(UntranslatableCharacterError):
        await _queue(side, patient, context={"service": "a\x00b"})
    await _queue(side, patient)
    with pytest.raises(CharacterNotInRepertoireError):
        async with side.units.uow() as u:
            (due,) = await u.deliveries.claim_due(5, NOW)
            await u.deliveries.retry_later(due.id, NOW, "broken\x00")
    assert [(d.template, d.reason) for d in await _history(side, patient)] == [("welcome", None)]


# --- preferences and accounts -----------------------------------------------------------------------


async def test_preferences_default_to_email_and_are_replaced_by_a_choice(side: Side) -> None:
    patient, other = uuid.uuid4(), uuid.uuid4()
    async with side.units.uow() as u:
        assert await u.preferences.get(patient) == Preferences(email=True, sms=False, opted_out=False)
        await u.preferences.set(patient, Preferences(email=False, sms=True), NOW)
        await u.preferences.set(other, Preferences(opted_out=True), NOW)
    async with side.units.uow() as u:
        assert await u.preferences.get(patient) == Preferences(email=False, sms=True, opted_out=False)
        await u.preferences.set(patient, Preferences(email=True, sms=True), NOW + timedelta(hours=1))
    async with side.units.read() as u:
        assert await u.preferences.get(patient) == Preferences(email=True, sms=True, opted_out=False)
        assert await u.preferences.get(other) == Preferences(opted_out=True)


async def test_an_account_owns_the_record_it_was_linked_to_last(side: Side) -> None:
    patient, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with side.units.uow() as u:
        assert not await u.accounts.owns(first, patient)
        await u.accounts.link(patient, first)
        assert await u.accounts.owns(first, patient)
        assert not await u.accounts.owns(first, uuid.uuid4())
        await u.accounts.link(patient, second)
    async with side.units.read() as u:
        assert await u.accounts.owns(second, patient)
        assert not await u.accounts.owns(first, patient)


# --- alerts --------------------------------------------------------------------------------------


async def _alert(
    side: Side,
    *,
    kind: str = "break_glass",
    audience: str = "ADMIN",
    order: uuid.UUID | None = None,
    event: uuid.UUID | None = None,
    at: datetime = NOW,
    patient: uuid.UUID | None = None,
) -> bool:
    detail: dict[str, object] = {"roles": ("DOCTOR",), "critical": True}
    if order is not None:
        detail["order_id"] = str(order)
    async with side.units.uow() as u:
        return await u.alerts.add(
            kind=kind,
            audience=audience,
            patient_id=patient,
            actor_id=None,
            detail=detail,
            event_id=event or uuid.uuid4(),
            at=at,
        )


async def test_an_alert_is_raised_once_per_event_and_a_lab_result_once_per_order(side: Side) -> None:
    event, order, doctor = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert await _alert(side, event=event)
    assert not await _alert(side, event=event, audience=user_audience(doctor))
    assert await _alert(side, kind="lab_result", audience=user_audience(doctor), order=order)
    assert not await _alert(side, kind="lab_result", audience=user_audience(doctor), order=order)  # another event
    assert await _alert(side, kind="break_glass", order=order)  # one order: only lab results are once per order
    assert await _alert(side, kind="lab_result", audience=user_audience(doctor), order=uuid.uuid4())
    async with side.units.read() as u:
        mine = await u.alerts.addressed_to([user_audience(doctor)], limit=50)
        admins = await u.alerts.addressed_to(["ADMIN"], limit=50)
    assert len(mine) == 2 and len(admins) == 2
    assert str(order) in {a.detail["order_id"] for a in mine} and mine[0].detail != mine[1].detail
    assert all(a.detail["roles"] == ["DOCTOR"] and a.detail["critical"] is True for a in admins)  # as JSON gives it


async def test_alerts_are_listed_newest_first_then_by_id_for_their_audiences(side: Side) -> None:
    doctor, patient = uuid.uuid4(), uuid.uuid4()
    old, new = NOW - timedelta(days=1), NOW + timedelta(minutes=1)
    await _alert(side, at=old, patient=patient)
    for _ in range(3):
        await _alert(side, at=NOW)
    await _alert(side, kind="lab_result", audience=user_audience(doctor), order=uuid.uuid4(), at=new)
    await _alert(side, audience="RECEPTIONIST", at=new)
    async with side.units.read() as u:
        both = await u.alerts.addressed_to(["ADMIN", user_audience(doctor)], limit=50)
        few = await u.alerts.addressed_to(["ADMIN"], limit=2)
        none = await u.alerts.addressed_to([], limit=50)
    assert [(a.audience, a.created_at) for a in both] == [
        (user_audience(doctor), new),
        *[("ADMIN", NOW)] * 3,
        ("ADMIN", old),
    ]
    assert both[1:4] == sorted(both[1:4], key=lambda a: a.id)
    assert both[-1].patient_id == patient and both[-1].kind == "break_glass" and both[-1].actor_id is None
    assert few == both[1:3]
    assert none == []


@pytest.mark.parametrize(
    ("kind", "audience"),
    [("lab", "ADMIN"), ("break_glass", "admins"), ("break_glass", "user:me"), ("break_glass", "ADMIN\n")],
)
async def test_an_alert_outside_the_checks_is_refused(side: Side, kind: str, audience: str) -> None:
    with pytest.raises(side.check):
        await _alert(side, kind=kind, audience=audience)
    async with side.units.read() as u:
        assert await u.alerts.addressed_to(["ADMIN", audience], limit=50) == []


# --- units ---------------------------------------------------------------------------------------


def _redeemed(patient: uuid.UUID, account: uuid.UUID) -> InvitationRedeemed:
    return InvitationRedeemed(invitation_id=uuid.uuid4(), patient_id=patient, account_id=account)


async def test_a_unit_that_fails_leaves_nothing_and_publishes_nothing(side: Side) -> None:
    patient, account = uuid.uuid4(), uuid.uuid4()
    await _queue(side, patient, "appointment_booked")
    with pytest.raises(RuntimeError):
        async with side.units.uow() as u:
            await u.deliveries.queue(
                patient_id=patient, template="welcome", channel="email", event_id=uuid.uuid4(), due_at=NOW, at=NOW
            )
            (due,) = await u.deliveries.claim_due(1, NOW)
            await u.deliveries.finish(due.id, "sent", at=NOW)
            await u.preferences.set(patient, Preferences(opted_out=True), NOW)
            await u.accounts.link(patient, account)
            await u.alerts.add(
                kind="break_glass",
                audience="ADMIN",
                patient_id=patient,
                actor_id=None,
                detail={},
                event_id=uuid.uuid4(),
                at=NOW,
            )
            u.add(
                InvitationRedeemed(invitation_id=uuid.uuid4(), patient_id=patient, account_id=account),
                aggregate_id=patient,
            )
            raise RuntimeError("the unit fails")
    assert await side.published() == []
    assert [(d.template, d.status) for d in await _history(side, patient)] == [("appointment_booked", "queued")]
    async with side.units.read() as u:
        assert await u.preferences.get(patient) == Preferences()
        assert not await u.accounts.owns(account, patient)
        assert await u.alerts.addressed_to(["ADMIN"], limit=5) == []
    async with side.units.uow() as u:
        u.add(
            InvitationRedeemed(invitation_id=uuid.uuid4(), patient_id=patient, account_id=account), aggregate_id=patient
        )
    assert await side.published() == [REDEEMED]
