"""A service's own copy of the patient directory: which patients exist, and which user account is
each one's (the patient may act on their own record). It is learnt from patients' events
(``patient.registered``, and ``invitation.redeemed`` when a record gets its account later) into
the service's ``known_patient`` table, so a booking, an order or an invoice does not ask patients
each time. A patient not in it yet is asked of patients over gRPC (authoritative) and remembered.

Written once here for every service that keeps one (scheduling, laboratory, billing): the SQL,
the handler and its two subscriptions. Each service's migration creates its own table:
``known_patient (patient_id uuid PRIMARY KEY, account_id uuid)``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from his.clients.patients import PatientLookup, PatientRef
from his.events.patients import InvitationRedeemed, PatientRegistered
from his.kernel.consumer import Subscription
from his.kernel.db import Connection, Database, UnitOfWork
from his.kernel.events import Envelope
from his.kernel.ports import Units, Work


async def remember(conn: Connection, patient_id: uuid.UUID, account_id: uuid.UUID | None) -> None:
    """Add the patient, or link their account; an account once known is never unlinked by a
    later event without one."""
    await conn.execute(
        """INSERT INTO known_patient (patient_id, account_id) VALUES ($1, $2)
           ON CONFLICT (patient_id)
           DO UPDATE SET account_id = COALESCE(EXCLUDED.account_id, known_patient.account_id)""",
        patient_id,
        account_id,
    )


async def find(conn: Connection, patient_id: uuid.UUID) -> PatientRef | None:
    row = await conn.fetchrow("SELECT patient_id, account_id FROM known_patient WHERE patient_id = $1", patient_id)
    return PatientRef(row["patient_id"], row["account_id"]) if row else None


async def account_of(conn: Connection, patient_id: uuid.UUID) -> uuid.UUID | None:
    account: uuid.UUID | None = await conn.fetchval(
        "SELECT account_id FROM known_patient WHERE patient_id = $1", patient_id
    )
    return account


async def patients_of_account(conn: Connection, account_id: uuid.UUID) -> list[uuid.UUID]:
    return [r[0] for r in await conn.fetch("SELECT patient_id FROM known_patient WHERE account_id = $1", account_id)]


class Known(Protocol):
    """The replica as a use case's unit of work carries it (``his.testing.FakeKnown`` in tests)."""

    async def find(self, patient_id: uuid.UUID) -> PatientRef | None: ...

    async def remember(self, patient_id: uuid.UUID, account_id: uuid.UUID | None) -> None: ...


@dataclass(frozen=True)
class KnownPatients:
    """The replica in the service's ``known_patient`` table, over one connection."""

    conn: Connection

    async def find(self, patient_id: uuid.UUID) -> PatientRef | None:
        return await find(self.conn, patient_id)

    async def remember(self, patient_id: uuid.UUID, account_id: uuid.UUID | None) -> None:
        await remember(self.conn, patient_id, account_id)


class _Reads(Work, Protocol):
    @property
    def patients(self) -> Known: ...


async def known(units: Units[_Reads], directory: PatientLookup, patient_id: uuid.UUID) -> PatientRef | None:
    """The patient from the replica of ``units``, else from patients
    (``DependencyUnavailableError`` if it cannot answer); None if there is no such patient."""
    async with units.read() as unit:
        ref = await unit.patients.find(patient_id)
    return ref if ref is not None else await directory.find(patient_id)


async def resolve(db: Database, directory: PatientLookup, patient_id: uuid.UUID) -> PatientRef | None:
    """The patient from the replica, else from patients (``DependencyUnavailableError`` if it
    cannot answer); None if there is no such patient."""
    async with db.pool.acquire() as conn:
        ref = await find(conn, patient_id)
    return ref if ref is not None else await directory.find(patient_id)


async def on_patient_registered(uow: UnitOfWork, env: Envelope, ev: PatientRegistered | InvitationRedeemed) -> None:
    """Remember the patient and, when there is one, their account."""
    await remember(uow.conn, ev.patient_id, ev.account_id)


def subscriptions(service: str) -> tuple[Subscription, Subscription]:
    """The service's two durable consumers that keep its replica."""
    return (
        Subscription.of(f"{service}_patient_registered", PatientRegistered, on_patient_registered),
        Subscription.of(f"{service}_invitation_redeemed", InvitationRedeemed, on_patient_registered),
    )
