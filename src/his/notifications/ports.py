"""What the notifications service's use cases work through: the deliveries queue, patients'
preferences, which account owns which record, and the alerts to staff, inside a unit of work
(``his.kernel.ports``). The store implements them on PostgreSQL (``his.notifications.store``);
``his.testing.notifications`` in memory, for unit tests. Both pass the same contract tests
(``tests/integration/test_notifications_contract.py``).

Moments are the unit's clock's (``at``, ``now``), never the database server's.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from his.kernel.ports import Units, Work
from his.notifications.domain import Alert, Context, Delivery, Due, Message, Preferences


class Deliveries(Protocol):
    """Messages to patients, one per channel: queued until due, then sent, suppressed, failed or
    cancelled. A causing event queues a template on a channel once (``delivery_once``), and a
    reminder is queued or sent once per appointment time and channel (``reminder_once``)."""

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
        """Queue one message, created ``at``; False if this event already queued it (or the
        reminder exists). It keeps the current trace context."""
        ...

    async def queue_many(
        self,
        *,
        patient_id: uuid.UUID,
        event_id: uuid.UUID,
        appointment_id: uuid.UUID | None,
        messages: Sequence[Message],
        at: datetime,
    ) -> None:
        """Queue the messages one event causes, each skipped as in ``queue`` if it exists."""
        ...

    async def cancel_reminders(self, appointment_id: uuid.UUID) -> None:
        """Cancel the appointment's reminders still queued."""
        ...

    async def claim_due(self, limit: int, now: datetime) -> list[Due]:
        """Up to ``limit`` queued deliveries due at ``now``, earliest due first, held until the
        unit ends; other units skip them."""
        ...

    async def finish(self, delivery_id: uuid.UUID, status: str, error: str | None = None, *, at: datetime) -> None:
        """Record the end of a delivery: ``status`` with the reason (``error``), one more attempt,
        and when it was sent (``at``, only if ``sent``)."""
        ...

    async def retry_later(self, delivery_id: uuid.UUID, due_at: datetime, error: str) -> None:
        """One more attempt failed with ``error``: the delivery is due again at ``due_at``."""
        ...

    async def of(self, patient_id: uuid.UUID, *, limit: int) -> list[Delivery]:
        """One patient's messages, newest first (by creation, then due time, then id)."""
        ...


class PatientPreferences(Protocol):
    """How each patient wants to hear from the hospital."""

    async def get(self, patient_id: uuid.UUID) -> Preferences:
        """The patient's choice; the defaults (e-mail only) if they never chose."""
        ...

    async def set(self, patient_id: uuid.UUID, chosen: Preferences, at: datetime) -> None:
        """Keep the patient's choice, made ``at``."""
        ...


class AccountLinks(Protocol):
    """Which account owns which patient's record (from patients' events)."""

    async def link(self, patient_id: uuid.UUID, account_id: uuid.UUID) -> None:
        """The account owns the record (replacing the one that did)."""
        ...

    async def owns(self, account_id: uuid.UUID, patient_id: uuid.UUID) -> bool: ...


class Alerts(Protocol):
    """Alerts to staff: addressed to a role ("ADMIN") or one user (``user_audience``)."""

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
        """Raise an alert, created ``at``; False if its causing event already raised one (or, for
        a lab result, its order)."""
        ...

    async def addressed_to(self, audiences: Sequence[str], *, limit: int) -> list[Alert]:
        """The newest alerts addressed to any of ``audiences`` (ties by id)."""
        ...


class NotificationsWork(Work, Protocol):
    """A unit of work of the notifications service."""

    @property
    def deliveries(self) -> Deliveries: ...

    @property
    def preferences(self) -> PatientPreferences: ...

    @property
    def accounts(self) -> AccountLinks: ...

    @property
    def alerts(self) -> Alerts: ...


#: Where the notifications service's units of work come from.
NotificationsUnits = Units[NotificationsWork]
