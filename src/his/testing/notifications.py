"""The notifications service's ports in memory (``his.notifications.ports``).

What the tables refuse, the fakes refuse too. The unique indexes the use cases rely on behave as
the store's ``ON CONFLICT DO NOTHING`` does: a causing event queues a template on a channel once
(``delivery_once``), an appointment's reminder is queued or sent once per start and channel
(``reminder_once``), and an alert is raised once per causing event and, for a lab result, once
per order (``queue`` and ``Alerts.add`` answer False). The CHECKs raise ``ValueError``, which no
use case handles, as none meets the database's errors for them: a delivery's status is one of
the five, an alert's kind one of three and its audience a role or ``user:<uuid>``; CHECKs are
checked before the unique indexes, as PostgreSQL does. Text with a NUL character, which
PostgreSQL cannot store, is refused with the error it raises (an ``asyncpg.DataError``), and
``jsonb`` values come back as JSON gives them (lists for tuples).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from asyncpg.exceptions import UntranslatableCharacterError

from his.kernel import tracing
from his.kernel.clock import Clock, utc_now
from his.notifications.domain import REMINDER, Alert, Context, Delivery, Due, Message, Preferences
from his.testing.admissions import storable
from his.testing.units import FakeUnits, FakeWork

#: The statuses ``delivery_status_check`` allows.
STATUSES = frozenset({"queued", "sent", "failed", "suppressed", "cancelled"})
#: The kinds ``alert_kind_check`` allows.
KINDS = frozenset({"break_glass", "break_glass_limit", "lab_result"})
#: ``alert_audience_check``: a role, or one user.
AUDIENCE = re.compile(r"[A-Z_]+|user:[0-9a-f-]{36}")


def _utc(at: datetime) -> datetime:
    return at.astimezone(UTC)


def _jsonb(value: Mapping[str, object]) -> Any:
    """A value as a ``jsonb`` column keeps it: never with a NUL character."""
    text = json.dumps(dict(value))
    if "\\u0000" in text:
        raise UntranslatableCharacterError("unsupported Unicode escape sequence")
    return json.loads(text)


@dataclass(frozen=True)
class StoredDelivery:
    """A row of ``delivery``."""

    id: uuid.UUID
    patient_id: uuid.UUID
    template: str
    channel: str
    status: str
    cause_event_id: uuid.UUID
    created_at: datetime
    due_at: datetime
    appointment_id: uuid.UUID | None
    context: dict[str, str]
    traceparent: str | None
    attempts: int = 0
    last_error: str | None = None
    sent_at: datetime | None = None


@dataclass(frozen=True)
class StoredAlert:
    """A row of ``alert``."""

    alert: Alert
    cause_event_id: uuid.UUID


@dataclass
class NotificationsState:
    """The notifications service's tables."""

    deliveries: dict[uuid.UUID, StoredDelivery] = field(default_factory=dict)
    #: Each patient's choice and when it was made.
    preferences: dict[uuid.UUID, tuple[Preferences, datetime]] = field(default_factory=dict)
    #: Which account owns which patient's record.
    accounts: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    alerts: dict[uuid.UUID, StoredAlert] = field(default_factory=dict)


def _reminder_key(d: StoredDelivery) -> tuple[uuid.UUID, str, str] | None:
    """The row's key in ``reminder_once``, if the partial index holds it (NULLs are distinct)."""
    if d.template != REMINDER or d.status not in ("queued", "sent"):
        return None
    start = d.context.get("start")
    if d.appointment_id is None or start is None:
        return None
    return (d.appointment_id, d.channel, start)


class FakeDeliveries:
    def __init__(self, state: NotificationsState) -> None:
        self.state = state

    def _conflicts(self, new: StoredDelivery) -> bool:
        """Whether a unique index already holds the row's key (``ON CONFLICT DO NOTHING``)."""
        reminder = _reminder_key(new)
        for d in self.state.deliveries.values():
            if d.id == new.id:
                return True  # the primary key
            if (d.cause_event_id, d.template, d.channel) == (new.cause_event_id, new.template, new.channel):
                return True  # delivery_once
            if reminder is not None and _reminder_key(d) == reminder:
                return True  # reminder_once
        return False

    def _insert(self, new: StoredDelivery) -> bool:
        storable(new.template)
        storable(new.channel)
        if new.traceparent is not None:
            storable(new.traceparent)
        if self._conflicts(new):
            return False
        self.state.deliveries[new.id] = new
        return True

    def _row(
        self,
        *,
        patient_id: uuid.UUID,
        template: str,
        channel: str,
        event_id: uuid.UUID,
        due_at: datetime,
        at: datetime,
        appointment_id: uuid.UUID | None,
        context: Context | None,
    ) -> StoredDelivery:
        return StoredDelivery(
            id=uuid.uuid4(),
            patient_id=patient_id,
            template=template,
            channel=channel,
            status="queued",
            cause_event_id=event_id,
            created_at=_utc(at),
            due_at=_utc(due_at),
            appointment_id=appointment_id,
            context=_jsonb(context or {}),
            traceparent=tracing.current_traceparent(),
        )

    async def queue(
        self,
        *,
        patient_id: uuid.UUID,
        template: str,
        channel: str,
        event_id: uuid.UUID,
        due_at: datetime,
        at: datetime,
        appointment_id: uuid.UUID | None = None,
        context: Context | None = None,
    ) -> bool:
        return self._insert(
            self._row(
                patient_id=patient_id,
                template=template,
                channel=channel,
                event_id=event_id,
                due_at=due_at,
                at=at,
                appointment_id=appointment_id,
                context=context,
            )
        )

    async def queue_many(
        self,
        *,
        patient_id: uuid.UUID,
        event_id: uuid.UUID,
        appointment_id: uuid.UUID | None,
        messages: Sequence[Message],
        at: datetime,
    ) -> None:
        rows = [
            self._row(
                patient_id=patient_id,
                template=m.template,
                channel=m.channel,
                event_id=event_id,
                due_at=m.due_at,
                at=at,
                appointment_id=appointment_id,
                context=m.context,
            )
            for m in messages
        ]
        for row in rows:  # one statement: the rows before it count as there
            self._insert(row)

    async def cancel_reminders(self, appointment_id: uuid.UUID) -> None:
        for d in list(self.state.deliveries.values()):
            if d.appointment_id == appointment_id and d.template == REMINDER and d.status == "queued":
                self.state.deliveries[d.id] = replace(d, status="cancelled")

    async def claim_due(self, limit: int, now: datetime) -> list[Due]:
        due = sorted(
            (d for d in self.state.deliveries.values() if d.status == "queued" and d.due_at <= now),
            key=lambda d: d.due_at,
        )
        return [
            Due(d.id, d.patient_id, d.template, d.channel, d.attempts, dict(d.context), d.traceparent)
            for d in due[:limit]
        ]

    def _update(self, delivery_id: uuid.UUID, **changes: Any) -> None:
        found = self.state.deliveries.get(delivery_id)
        if found is not None:  # an UPDATE of no row changes nothing
            self.state.deliveries[delivery_id] = replace(found, **changes)

    async def finish(self, delivery_id: uuid.UUID, status: str, error: str | None = None, *, at: datetime) -> None:
        if error is not None:
            storable(error)
        found = self.state.deliveries.get(delivery_id)
        if found is None:
            return  # an UPDATE of no row checks nothing
        if status not in STATUSES:
            raise ValueError(f"a delivery is never {status!r}")  # delivery_status_check
        attempts = found.attempts + 1
        sent_at = _utc(at) if status == "sent" else None
        self._update(delivery_id, status=status, last_error=error, attempts=attempts, sent_at=sent_at)

    async def retry_later(self, delivery_id: uuid.UUID, due_at: datetime, error: str) -> None:
        storable(error)
        found = self.state.deliveries.get(delivery_id)
        if found is None:
            return
        self._update(delivery_id, attempts=found.attempts + 1, due_at=_utc(due_at), last_error=error)

    async def of(self, patient_id: uuid.UUID, *, limit: int) -> list[Delivery]:
        mine = [d for d in self.state.deliveries.values() if d.patient_id == patient_id]
        mine.sort(key=lambda d: d.id)
        mine.sort(key=lambda d: (d.created_at, d.due_at), reverse=True)
        return [
            Delivery(d.id, d.template, d.channel, d.status, d.created_at, d.due_at, d.sent_at, d.last_error)
            for d in mine[:limit]
        ]


class FakePreferences:
    def __init__(self, state: NotificationsState) -> None:
        self.state = state

    async def get(self, patient_id: uuid.UUID) -> Preferences:
        found = self.state.preferences.get(patient_id)
        return found[0] if found else Preferences()

    async def set(self, patient_id: uuid.UUID, chosen: Preferences, at: datetime) -> None:
        self.state.preferences[patient_id] = (chosen, _utc(at))


class FakeAccountLinks:
    def __init__(self, state: NotificationsState) -> None:
        self.state = state

    async def link(self, patient_id: uuid.UUID, account_id: uuid.UUID) -> None:
        self.state.accounts[patient_id] = account_id

    async def owns(self, account_id: uuid.UUID, patient_id: uuid.UUID) -> bool:
        return self.state.accounts.get(patient_id) == account_id


class FakeAlerts:
    def __init__(self, state: NotificationsState) -> None:
        self.state = state

    async def add(
        self,
        *,
        kind: str,
        audience: str,
        patient_id: uuid.UUID | None,
        actor_id: uuid.UUID | None,
        detail: Mapping[str, object],
        event_id: uuid.UUID,
        at: datetime,
    ) -> bool:
        storable(kind)
        storable(audience)
        kept = _jsonb(detail)
        if kind not in KINDS:
            raise ValueError(f"an alert is never {kind!r}")  # alert_kind_check
        if not AUDIENCE.fullmatch(audience):
            raise ValueError(f"an alert is never for {audience!r}")  # alert_audience_check
        order = kept.get("order_id") if kind == "lab_result" else None
        for stored in self.state.alerts.values():
            if stored.cause_event_id == event_id:
                return False  # UNIQUE (cause_event_id)
            if order is not None and stored.alert.kind == "lab_result" and stored.alert.detail.get("order_id") == order:
                return False  # alert_lab_result_once
        alert = Alert(uuid.uuid4(), kind, audience, patient_id, actor_id, kept, _utc(at))
        self.state.alerts[alert.id] = StoredAlert(alert, event_id)
        return True

    async def addressed_to(self, audiences: Sequence[str], *, limit: int) -> list[Alert]:
        found = [s.alert for s in self.state.alerts.values() if s.alert.audience in audiences]
        found.sort(key=lambda a: a.id)
        found.sort(key=lambda a: a.created_at, reverse=True)
        return found[:limit]


class FakeNotificationsWork(FakeWork):
    def __init__(self, state: NotificationsState, clock: Clock) -> None:
        super().__init__(clock)
        self.deliveries = FakeDeliveries(state)
        self.preferences = FakePreferences(state)
        self.accounts = FakeAccountLinks(state)
        self.alerts = FakeAlerts(state)


class FakeNotifications(FakeUnits[NotificationsState, FakeNotificationsWork]):
    """The notifications service's units of work in memory, with nothing queued yet."""

    def __init__(self, clock: Clock = utc_now, state: NotificationsState | None = None) -> None:
        super().__init__(state or NotificationsState(), FakeNotificationsWork, clock)
