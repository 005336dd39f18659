"""Use cases of the scheduling service: one function per command or consumed event, and the
``Scheduling`` use cases its routes call. They work through the service's ports
(``his.scheduling.ports``): its units of work, on PostgreSQL in the hospital and in memory in
unit tests.

Remote reads (the practitioner's working time, an unknown patient) happen before the unit of work
opens, so no transaction waits on the network; the exclusion constraints then decide between
concurrent bookings inside it.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from prometheus_client import Counter

from his.access import NONE, Decision, Relationship
from his.clients import replica
from his.clients.audited import AccessLog
from his.clients.patients import refused, relationship_for
from his.clients.practitioners import Listed
from his.events.audit import Action as AuditAction
from his.events.audit import SchedulingRecordAccessed
from his.events.scheduling import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentCheckedIn,
    AppointmentCompleted,
    AppointmentEvent,
    AppointmentMissed,
    AppointmentRescheduled,
    WaitlistOffered,
)
from his.kernel.clock import Clock
from his.kernel.consumer import PermanentError
from his.kernel.db import UnitOfWork, retry_aborted
from his.kernel.events import Envelope, Event
from his.kernel.intervals import Interval, subtract
from his.kernel.params import one_of
from his.kernel.problems import ProblemError
from his.kernel.security import Principal
from his.scheduling import policy
from his.scheduling.domain import (
    OPEN,
    Action,
    Appointment,
    CollisionError,
    InvalidBookingError,
    InvalidTransitionError,
    NewAppointment,
    Offer,
    Status,
    WaitlistDuplicateError,
    WaitlistEntry,
    WaitlistStatus,
    can_reschedule,
    check_booking,
    duration_of,
    slots,
    transition,
)
from his.scheduling.policy import Operation
from his.scheduling.ports import (
    Calendar,
    PatientLookup,
    PatientRef,
    PractitionerRoster,
    SchedulingUnits,
    SchedulingWork,
)
from his.scheduling.store import SchedulingUnit

T = TypeVar("T")


class UnknownError(LookupError):
    """A patient, practitioner or appointment that does not exist."""


class UnavailableError(Exception):
    """The practitioner does not work then (no shift, or approved leave)."""


@dataclass(frozen=True)
class Booking:
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID
    service: str
    start: datetime
    end: datetime


async def ensure_working(calendar: Calendar, practitioner_id: uuid.UUID, span: Interval) -> None:
    working = await calendar.working_time(practitioner_id, span)
    if working is None:
        raise UnknownError("practitioner not found")
    if subtract([span], working):  # some of the span lies outside working time
        raise UnavailableError("the practitioner is not working then (no shift, or on approved leave)")


def _event(model: type[AppointmentEvent], a: Appointment, **extra: datetime) -> AppointmentEvent:
    return model(
        appointment_id=a.id,
        patient_id=a.patient_id,
        practitioner_id=a.practitioner_id,
        service=a.service,
        start=a.start,
        end=a.end,
        **extra,
    )


BOOKED = Counter("his_appointments_booked_total", "Appointments booked (counted after their commit)")


async def prepare(now: datetime, calendar: Calendar, b: Booking, actor: uuid.UUID) -> NewAppointment:
    """A new appointment, once its times are valid at ``now`` and the practitioner works then
    (asked of practitioners before any transaction opens)."""
    span = check_booking(b.start, b.end, b.service, now)
    await ensure_working(calendar, b.practitioner_id, span)
    return NewAppointment(uuid.uuid4(), b.patient_id, b.practitioner_id, b.service, span, actor)


async def book(uow: SchedulingWork, new: NewAppointment) -> Appointment:
    """Insert a prepared appointment; the exclusion constraints refuse a collision
    (``CollisionError``). Publishes ``AppointmentBooked``."""
    saved = await uow.appointments.add(new, uow.clock())
    uow.add(_event(AppointmentBooked, saved), aggregate_id=new.id, aggregate_version=saved.version)
    uow.on_commit(BOOKED.inc)
    return saved


async def attempted(
    units: SchedulingUnits, attempt: Callable[[], Awaitable[T]], wanted: NewAppointment | Appointment
) -> T:
    """Run a booking's transaction again if it deadlocked with an overlapping one (see
    ``retry_aborted``); a collision names the appointment it collides with."""
    try:
        return await retry_aborted(attempt)
    except CollisionError as exc:
        raise await _described(units, exc, wanted) from exc


async def _described(
    units: SchedulingUnits, exc: CollisionError, wanted: NewAppointment | Appointment
) -> CollisionError:
    """The collision naming the other appointment, looked up once the failed unit rolled back."""
    async with units.read() as unit:
        return CollisionError(exc.who, await unit.appointments.colliding(exc.who, wanted))


async def act(uow: SchedulingWork, appointment_id: uuid.UUID, action: Action) -> Appointment:
    """Move an appointment along its life: check in, complete, cancel, or mark a no-show."""
    found = await uow.appointments.get(appointment_id, lock=True)
    if found is None:
        raise UnknownError("appointment not found")
    after = transition(found.status, action)
    changed = await uow.appointments.set_status(found, after, uow.clock())
    model = {
        Status.CHECKED_IN: AppointmentCheckedIn,
        Status.COMPLETED: AppointmentCompleted,
        Status.CANCELLED: AppointmentCancelled,
        Status.NO_SHOW: AppointmentMissed,
    }[after]
    uow.add(_event(model, changed), aggregate_id=appointment_id, aggregate_version=changed.version)
    return changed


async def prepare_move(
    now: datetime, calendar: Calendar, current: Appointment, start: datetime, end: datetime
) -> Interval:
    """An appointment's new times, once they are valid at ``now`` and the practitioner works then."""
    span = check_booking(start, end, current.service, now)
    await ensure_working(calendar, current.practitioner_id, span)
    return span


async def reschedule(uow: SchedulingWork, appointment_id: uuid.UUID, during: Interval) -> Appointment:
    """Move a (locked) appointment to ``during``; publishes ``AppointmentRescheduled``."""
    current = await uow.appointments.get(appointment_id, lock=True)
    assert current is not None
    if not can_reschedule(current.status):
        raise InvalidTransitionError(f"a {current.status.value} appointment cannot be rescheduled")
    before = current.during
    moved = await uow.appointments.move(current, during, uow.clock())
    uow.add(
        _event(AppointmentRescheduled, moved, previous_start=before.start, previous_end=before.end),
        aggregate_id=appointment_id,
        aggregate_version=moved.version,
    )
    return moved


async def free_slots(
    units: SchedulingUnits, calendar: Calendar, practitioner_id: uuid.UUID, day: Interval, service: str, *, now: Clock
) -> list[Interval]:
    """Slots of ``service`` length: the practitioner's working time minus their appointments,
    none starting before ``now``."""
    length = duration_of(service)
    working = await calendar.working_time(practitioner_id, day)
    if working is None:
        raise UnknownError("practitioner not found")
    async with units.read() as unit:
        taken = await unit.appointments.busy(practitioner_id, day)
    return slots(subtract(working, taken), length, not_before=now())


@dataclass(frozen=True)
class FreeSlot:
    """A free slot of one practitioner."""

    practitioner: Listed
    during: Interval


#: How many practitioners' days the first free slots ask of practitioners (and read) at once.
AT_ONCE = 4


async def first_free_slots(
    units: SchedulingUnits,
    calendar: Calendar,
    practitioners: Iterable[Listed],
    days: Iterable[Interval],
    *,
    service: str,
    limit: int,
    now: Clock,
) -> list[FreeSlot]:
    """The earliest ``limit`` free slots of ``service`` across ``practitioners``, earliest first
    (ties by the practitioner's name, then id), each practitioner's slots computed day by day as
    ``free_slots`` computes them. ``days`` are searched in order, and the search stops after the
    first day that brings the total to ``limit``: one working-time question per practitioner per
    day searched, none for a day already over. A practitioner who is gone meanwhile has none."""
    listed = list(practitioners)
    gate = asyncio.Semaphore(AT_ONCE)
    found: list[FreeSlot] = []
    for day in days:
        if day.end <= now():
            continue

        async def of(p: Listed, day: Interval = day) -> list[FreeSlot]:
            async with gate:
                try:
                    free = await free_slots(units, calendar, p.practitioner_id, day, service, now=now)
                except UnknownError:
                    return []
            return [FreeSlot(p, s) for s in free]

        each = await asyncio.gather(*(of(p) for p in listed))
        found += sorted(
            itertools.chain.from_iterable(each),
            key=lambda f: (f.during.start, f.practitioner.full_name, f.practitioner.practitioner_id),
        )
        if len(found) >= limit:
            break
    return found[:limit]


async def of_practitioners(
    unit: SchedulingWork, practitioners: tuple[uuid.UUID, ...], window: Interval, limit: int
) -> list[Appointment]:
    """The appointments of ``practitioners`` that start within ``window``, the earliest first (at
    one start by practitioner, then by id, as each practitioner's list is), at most ``limit``."""
    found = [a for p in practitioners for a in await unit.appointments.of_practitioner(p, window, limit)]
    return sorted(found, key=lambda a: (a.start, str(a.practitioner_id), str(a.id)))[:limit]


#: How long a waitlisted patient has to take up an offered slot (never past the slot's start).
OFFER_TIME = timedelta(minutes=30)


async def join_waitlist(
    uow: SchedulingWork, patient_id: uuid.UUID, practitioner_id: uuid.UUID, service: str, actor: uuid.UUID
) -> WaitlistEntry:
    duration_of(service)
    return await uow.waitlist.add(
        entry_id=uuid.uuid4(),
        patient_id=patient_id,
        practitioner_id=practitioner_id,
        service=service,
        created_by=actor,
        at=uow.clock(),
    )


async def on_slot_freed(uow: UnitOfWork, env: Envelope, ev: Event) -> None:
    """``slot_freed`` in the unit of work the consumer loop opened."""
    await slot_freed(SchedulingUnit(uow), env, ev)


async def slot_freed(uow: SchedulingWork, env: Envelope, ev: Event) -> None:
    """A cancelled (or moved) appointment freed time: offer it to the first patient waiting for
    that practitioner whose service fits, if the time is still free and still ahead."""
    if isinstance(ev, AppointmentRescheduled):
        freed = Interval(ev.previous_start, ev.previous_end)
    elif isinstance(ev, AppointmentCancelled):
        freed = Interval(ev.start, ev.end)
    else:
        raise PermanentError(f"unexpected event {env.type}")
    moment = uow.clock()
    if freed.end <= moment:
        return
    freed = Interval(max(freed.start, moment), freed.end)
    free = subtract([freed], await uow.appointments.busy(ev.practitioner_id, freed))
    for entry in await uow.waitlist.waiting_for(ev.practitioner_id):
        length = duration_of(entry.service)
        piece = next((p for p in free if p.end - p.start >= length), None)
        if piece is None:
            continue
        slot = Interval(piece.start, piece.start + length)
        expires = min(slot.start, moment + OFFER_TIME)
        await uow.waitlist.set_status(entry.id, WaitlistStatus.OFFERED, Offer(slot, expires))
        uow.add(
            WaitlistOffered(
                entry_id=entry.id,
                patient_id=entry.patient_id,
                practitioner_id=ev.practitioner_id,
                service=entry.service,
                start=slot.start,
                end=slot.end,
                expires_at=expires,
            ),
            aggregate_id=entry.id,
        )
        return


class OfferError(Exception):
    """The waitlist entry holds no offer that can still be taken."""


def offered(entry: WaitlistEntry, now: datetime) -> Booking:
    """The booking an entry's open offer stands for (``OfferError`` if it expired or is gone)."""
    offer = entry.offer
    if entry.status is not WaitlistStatus.OFFERED or offer is None or offer.expires_at <= now:
        raise OfferError("there is no open offer on this waitlist entry")
    return Booking(entry.patient_id, entry.practitioner_id, entry.service, offer.start, offer.end)


class Scheduling:
    """The use cases patients and staff call, each with its caller, decided through
    ``his.scheduling.policy``; every decision on a patient's appointment or waitlist entry,
    allowed or denied, is recorded in the access log (an allowed change in its own transaction)."""

    def __init__(
        self,
        units: SchedulingUnits,
        calendar: Calendar,
        patients: PatientLookup,
        zone: ZoneInfo,
        clock: Clock,
        *,
        practitioners: PractitionerRoster,
    ) -> None:
        self.units, self.calendar, self.patients, self.zone = units, calendar, patients, zone
        #: The practitioner directory (ids, names, specialties), asked once per search for slots.
        self.practitioners = practitioners
        #: The clock the units run by: a booking's times are checked by it before its unit opens.
        self.clock = clock
        self.log = AccessLog(units, SchedulingRecordAccessed, "appointment")

    async def book(self, who: Principal, b: Booking) -> Appointment:
        """Book (a patient for themself, RECEPTIONIST, ADMIN); 409 on a collision or when the
        practitioner does not work then, 422 for invalid times or an unknown practitioner."""
        decision = await self.booking(who, b.patient_id, Operation.BOOK)
        if not decision.allowed:
            raise await self.log.refuse(who, b.patient_id, decision, "create")
        try:
            new = await prepare(self.clock(), self.calendar, b, uuid.UUID(who.subject))

            async def attempt() -> Appointment:
                async with self.units.uow() as uow:
                    saved = await book(uow, new)
                    self.log.record(uow, who, b.patient_id, "create", decision)
                return saved

            return await attempted(self.units, attempt, new)
        except InvalidBookingError as exc:
            raise ProblemError(422, str(exc)) from None
        except UnknownError as exc:
            raise ProblemError(422, f"unknown practitioner_id: {exc}") from None
        except UnavailableError as exc:
            raise ProblemError(409, str(exc), conflict={"with": "availability"}) from None
        except CollisionError as exc:
            raise conflict(exc, who, b.patient_id) from None

    async def appointment(self, who: Principal, appointment_id: uuid.UUID) -> Appointment:
        """One appointment: its patient, reception, or clinicians in the patient's care."""
        found, decision = await self.opened(who, appointment_id, Operation.READ, "read")
        async with self.units.read() as uow:
            self.log.record(uow, who, found.patient_id, "read", decision)
        return found

    async def of_patient(self, who: Principal, patient_id: uuid.UUID, limit: int) -> list[Appointment]:
        """A patient's appointments, latest first."""
        decision = await self.decide(who, Operation.READ, patient_id, "patient")
        if not decision.allowed:
            raise await self.log.refuse(who, patient_id, decision, "read")
        async with self.units.read() as uow:
            found = await uow.appointments.of_patient(patient_id, limit)
            self.log.record(uow, who, patient_id, "read", decision)
        return found

    async def day_list(self, who: Principal, practitioner_id: uuid.UUID, day: date, limit: int) -> list[Appointment]:
        """A practitioner's appointments, in every state, that start on ``day`` of the hospital's
        calendar (from its local midnight to the next: 23, 24 or 25 hours), the earliest first,
        at most ``limit``; none for a practitioner who has none (or does not exist).

        Reception and ADMIN read the whole list by role. A clinician reads the appointments of
        the patients in their care or under an emergency grant (asked of patients for each
        patient before the list is read for the answer); the others are left out. Other roles,
        patients among them, are refused before anything is read (403). Each patient on the list
        is a read of their record: recorded with the read that answers, allowed for each patient
        shown and denied for each left out."""
        self.day_lists_for(who)
        return await self.days_of(who, (practitioner_id,), day, limit)

    async def clinic_day(self, who: Principal, specialty: str, day: date, limit: int) -> list[Appointment]:
        """A clinic's day: the appointments of every practitioner of ``specialty`` that start on
        ``day``, the earliest first (at one start, by practitioner, then by id), at most
        ``limit``; read and recorded as a practitioner's day list is (``day_list``). A specialty
        that does not exist is a 422 naming those that do."""
        self.day_lists_for(who)
        roster = await self.practitioners.roster(specialty)
        one_of("specialty", specialty, roster.specialties)
        return await self.days_of(who, tuple(p.practitioner_id for p in roster.practitioners), day, limit)

    @staticmethod
    def day_lists_for(who: Principal) -> None:
        """Refuse (403) a caller whose roles read no day list, before anything is read."""
        if not policy.RULES[Operation.DAY_LIST].admits(who.roles):
            raise ProblemError(
                403, "not allowed for your role: a day list is for reception and clinicians (patients give patient_id)"
            )

    async def days_of(
        self, who: Principal, practitioners: tuple[uuid.UUID, ...], day: date, limit: int
    ) -> list[Appointment]:
        """The day lists of ``practitioners`` on ``day`` as one, for a caller allowed day lists."""
        rule = policy.RULES[Operation.DAY_LIST]
        window = local_day(day, self.zone)
        #: Each patient's decision, for a clinician; None: one decision by role for every patient.
        decided: dict[uuid.UUID, Decision] | None = None
        if rule.needs_relationship(who.roles):
            async with self.units.read() as unit:  # whose appointments they are, to ask patients about
                seen = await of_practitioners(unit, practitioners, window, limit)
            decided = await self.decide_each(who, Operation.DAY_LIST, (a.patient_id for a in seen))
        by_role = policy.decide(Operation.DAY_LIST, who.roles, NONE)
        async with self.units.read() as uow:
            found = await of_practitioners(uow, practitioners, window, limit)
            decisions: dict[uuid.UUID, Decision | None] = {
                pid: by_role if decided is None else decided.get(pid)
                for pid in dict.fromkeys(a.patient_id for a in found)
            }
            for pid, decision in decisions.items():
                if decision is not None:  # None: booked since patients were asked; neither decided nor shown
                    self.log.record(uow, who, pid, "read", decision)
        return [a for a in found if (d := decisions[a.patient_id]) is not None and d.allowed]

    async def reschedule(
        self, who: Principal, appointment_id: uuid.UUID, start: datetime, end: datetime
    ) -> Appointment:
        """Move a booked appointment (its patient, RECEPTIONIST, ADMIN); 409 on a collision."""
        found, decision = await self.opened(who, appointment_id, Operation.RESCHEDULE, "update")
        try:
            during = await prepare_move(self.clock(), self.calendar, found, start, end)

            async def attempt() -> Appointment:
                async with self.units.uow() as uow:
                    moved = await reschedule(uow, appointment_id, during)
                    self.log.record(uow, who, found.patient_id, "update", decision)
                return moved

            return await attempted(self.units, attempt, replace(found, during=during))
        except InvalidBookingError as exc:
            raise ProblemError(422, str(exc)) from None
        except InvalidTransitionError as exc:
            raise ProblemError(409, str(exc)) from None
        except UnavailableError as exc:
            raise ProblemError(409, str(exc), conflict={"with": "availability"}) from None
        except CollisionError as exc:
            raise conflict(exc, who, found.patient_id) from None

    async def act(self, who: Principal, appointment_id: uuid.UUID, action: Action) -> Appointment:
        """Check in, complete, cancel or mark a no-show; 409 when the state does not allow it."""
        _, decision = await self.opened(who, appointment_id, policy.OF_ACTION[action], "update")
        try:
            async with self.units.uow() as uow:
                acted = await act(uow, appointment_id, action)
                self.log.record(uow, who, acted.patient_id, "update", decision)
        except InvalidTransitionError as exc:
            raise ProblemError(409, str(exc)) from None
        return acted

    async def join(
        self, who: Principal, patient_id: uuid.UUID, practitioner_id: uuid.UUID, service: str
    ) -> WaitlistEntry:
        """Wait for a practitioner (a patient for themself, RECEPTIONIST, ADMIN)."""
        decision = await self.booking(who, patient_id, Operation.WAITLIST)
        if not decision.allowed:
            raise await self.log.refuse(who, patient_id, decision, "create", resource=WAITLIST)
        if await self.calendar.working_time(practitioner_id, today(self.clock(), self.zone)) is None:
            raise ProblemError(422, "unknown practitioner_id")
        try:
            async with self.units.uow() as uow:
                entry = await join_waitlist(uow, patient_id, practitioner_id, service, uuid.UUID(who.subject))
                self.log.record(uow, who, patient_id, "create", decision, resource=WAITLIST)
        except InvalidBookingError as exc:
            raise ProblemError(422, str(exc)) from None
        except WaitlistDuplicateError:
            raise ProblemError(409, "the patient already waits for this practitioner and service") from None
        return entry

    async def waiting(self, who: Principal, patient_id: uuid.UUID) -> list[WaitlistEntry]:
        """A patient's waitlist entries and their offers."""
        decision = await self.decide(who, Operation.WAITLIST, patient_id, "patient")
        if not decision.allowed:
            raise await self.log.refuse(who, patient_id, decision, "read", resource=WAITLIST)
        async with self.units.read() as uow:
            entries = await uow.waitlist.of_patient(patient_id)
            self.log.record(uow, who, patient_id, "read", decision, resource=WAITLIST)
        return entries

    async def accept(self, who: Principal, entry_id: uuid.UUID) -> Appointment:
        """Book the slot offered to a waitlist entry; 409 if the offer expired or the time was taken."""
        entry, decision = await self.entry(who, entry_id, "create")
        try:
            now = self.clock()
            new = await prepare(now, self.calendar, offered(entry, now), uuid.UUID(who.subject))

            async def attempt() -> Appointment:
                async with self.units.uow() as uow:  # the booking and the entry's change: both, or neither
                    saved = await book(uow, new)
                    await uow.waitlist.set_status(entry_id, WaitlistStatus.BOOKED)
                    self.log.record(uow, who, entry.patient_id, "create", decision)
                return saved

            return await attempted(self.units, attempt, new)
        except OfferError as exc:
            raise ProblemError(409, str(exc)) from None
        except (InvalidBookingError, UnavailableError) as exc:
            raise ProblemError(409, f"the offered slot can no longer be booked: {exc}") from None
        except CollisionError as exc:
            raise conflict(exc, who, entry.patient_id) from None

    async def withdraw(self, who: Principal, entry_id: uuid.UUID) -> None:
        """Leave the waitlist (the patient, reception, ADMIN); 409 once booked or withdrawn."""
        entry, decision = await self.entry(who, entry_id, "update")
        if entry.status not in OPEN:
            raise ProblemError(409, f"a {entry.status.value} waitlist entry cannot be withdrawn")
        async with self.units.uow() as uow:
            await uow.waitlist.set_status(entry_id, WaitlistStatus.WITHDRAWN)
            self.log.record(uow, who, entry.patient_id, "update", decision, resource=WAITLIST)

    async def slots(self, practitioner_id: uuid.UUID, window: Interval, service: str) -> list[Interval]:
        """Free slots of a practitioner in ``window`` (any signed-in user); 404 for an unknown one."""
        try:
            return await free_slots(self.units, self.calendar, practitioner_id, window, service, now=self.clock)
        except UnknownError:
            raise ProblemError(404, "practitioner not found") from None

    async def first_available(
        self, service: str, specialty: str | None, first_day: date | None, days: int, limit: int
    ) -> tuple[date, list[FreeSlot]]:
        """The first free slots of ``service`` across every practitioner, or those of
        ``specialty`` (any signed-in user), searched day by day in the hospital's time zone from
        ``first_day`` (today by the service's clock when None) for at most ``days`` days: the
        day the search began, and at most ``limit`` slots, earliest first. A specialty that does
        not exist is a 422 naming those that do."""
        roster = await self.practitioners.roster(specialty)
        if specialty is not None:
            one_of("specialty", specialty, roster.specialties)
        begin = first_day if first_day is not None else self.clock().astimezone(self.zone).date()
        window = (local_day(begin + timedelta(days=n), self.zone) for n in range(days))
        free = await first_free_slots(
            self.units, self.calendar, roster.practitioners, window, service=service, limit=limit, now=self.clock
        )
        return begin, free

    async def known(self, patient_id: uuid.UUID) -> PatientRef | None:
        """A patient known from patients' events, else asked of patients (authoritative)."""
        return await replica.known(self.units, self.patients, patient_id)

    async def decide(self, who: Principal, op: Operation, patient_id: uuid.UUID, what: str) -> Decision:
        """The policy's decision on ``op`` for the caller and this patient (not yet recorded)."""
        rel = await relationship_for(self.patients, policy.RULES[op], patient_id, who, self.known)
        if rel is None:
            raise refused(policy.not_found(op, who.roles), patient_id, what)
        return policy.decide(op, who.roles, rel)

    async def decide_each(
        self, who: Principal, op: Operation, patient_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, Decision]:
        """The policy's decision on ``op`` for the caller and each patient, asked of patients
        together (not yet recorded); a patient patients do not know is refused as an unknown id."""
        ids = list(dict.fromkeys(patient_ids))
        rule = policy.RULES[op]
        relationships = await asyncio.gather(
            *(relationship_for(self.patients, rule, pid, who, self.known) for pid in ids)
        )
        return {
            pid: policy.not_found(op, who.roles) if rel is None else policy.decide(op, who.roles, rel)
            for pid, rel in zip(ids, relationships, strict=True)
        }

    async def booking(self, who: Principal, patient_id: uuid.UUID, op: Operation) -> Decision:
        """Booking or joining the waitlist for a patient named in the body: unknown to staff who
        book by role is a 422; the rest is the policy's (a patient's other id answers 404)."""
        ref = await self.known(patient_id)
        if ref is None:
            if who.has_any(*policy.BOOKERS):
                raise ProblemError(422, "unknown patient_id")
            raise refused(policy.not_found(op, who.roles), patient_id, "patient")
        owner = ref.account_id is not None and str(ref.account_id) == who.subject
        return policy.decide(op, who.roles, Relationship(owner=owner))

    async def opened(
        self, who: Principal, appointment_id: uuid.UUID, op: Operation, action: AuditAction
    ) -> tuple[Appointment, Decision]:
        """The appointment and the policy's decision on ``op``; a refusal is recorded and raised."""
        async with self.units.read() as unit:
            found = await unit.appointments.get(appointment_id)

        async def decide(a: Appointment) -> Decision:
            return await self.decide(who, op, a.patient_id, "appointment")

        missing = policy.not_found(op, who.roles)
        return await self.log.admit(who, found, decide, missing=missing, action=action, what="appointment")

    async def entry(self, who: Principal, entry_id: uuid.UUID, action: AuditAction) -> tuple[WaitlistEntry, Decision]:
        """The waitlist entry and the policy's decision; a refusal is recorded and raised."""
        async with self.units.read() as unit:
            found = await unit.waitlist.get(entry_id)

        async def decide(e: WaitlistEntry) -> Decision:
            return await self.decide(who, Operation.WAITLIST, e.patient_id, "waitlist entry")

        missing = policy.not_found(Operation.WAITLIST, who.roles)
        what = "waitlist entry"
        return await self.log.admit(who, found, decide, missing=missing, action=action, resource=WAITLIST, what=what)


WAITLIST = "waitlist"


def conflict(exc: CollisionError, who: Principal, patient_id: uuid.UUID) -> ProblemError:
    """The 409 of a collision. Reception and ADMIN see which appointment the time collides
    with; anyone else (a patient booking for themself) learns that the time is taken, and
    which appointment only when it is one of this patient's own."""
    other = exc.other
    if who.has_any(*policy.BOOKERS) or (other is not None and other.patient_id == patient_id):
        return ProblemError(
            409,
            f"the time collides with another appointment of the {exc.who}",
            conflict={"with": exc.who, "appointment": _named(other)},
        )
    return ProblemError(409, "the time is no longer free", conflict={"with": exc.who})


def _named(a: Appointment | None) -> dict[str, str] | None:
    """The appointment a collision names: its id and times."""
    return None if a is None else {"id": str(a.id), "start": a.start.isoformat(), "end": a.end.isoformat()}


def local_day(day: date, zone: ZoneInfo) -> Interval:
    """The hospital's day ``day``: from its local midnight to the next, 23, 24 or 25 hours long."""
    start = datetime.combine(day, time(0), tzinfo=zone)
    return Interval(start, datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone))


def today(now: datetime, zone: ZoneInfo) -> Interval:
    """The hospital's day around ``now``."""
    return local_day(now.astimezone(zone).date(), zone)
