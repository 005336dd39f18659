"""One contract for the patients' ports, run against PostgreSQL (``his.patients.store``) and the
in-memory fakes (``his.testing.patients``) alike: what the use cases' unit tests assume of the
fake holds of the database, its unique keys, foreign keys and checks included.

Search is covered only where both agree (an MRN or a name found as typed, accents and case
aside, birth dates, ties by name then id, limits): PostgreSQL's trigram ranking of misspelt
names is the database's alone (``tests/integration/test_patient_search.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal

import asyncpg
import pytest

from his.events.patients import PatientUpdated
from his.kernel import migrations
from his.kernel.clock import FakeClock
from his.kernel.db import Database
from his.patients.domain import (
    AccountLinkedError,
    CareRelationship,
    CareSource,
    Channel,
    ContactDetails,
    Coverage,
    EmergencyRead,
    Invitation,
    LabResult,
    NewCareRelationship,
    NewPatient,
    Patient,
    ResultedOrder,
    ReviewState,
    Sex,
    code_digest,
)
from his.patients.ports import PatientsUnits
from his.patients.store import PatientsStore
from his.testing.patients import FakeChart
from tests.support.calendar import HARD_DATES
from tests.support.portal import CODES

NEW_YEAR = HARD_DATES[0]
#: Half a minute before the new year: the moment every unit of work here says it is.
NOW = NEW_YEAR.at(23, 59, days=-1, second=30)
H = timedelta(hours=1)
REASON = "Unconscious on arrival, no relatives reachable"
Refused = type[BaseException] | tuple[type[BaseException], ...]
#: What a table's constraint raises on each side.
refused: Refused = (ValueError, asyncpg.IntegrityConstraintViolationError)


@dataclass
class Side:
    units: PatientsUnits
    #: The types of the events committed so far, in commit order.
    published: Callable[[], Awaitable[list[str]]]


@pytest.fixture(params=["memory", "postgres"])
async def side(request: pytest.FixtureRequest, admin_dsn: str) -> AsyncIterator[Side]:
    clock = FakeClock(NOW)
    if request.param == "memory":
        fake = FakeChart(clock)

        async def in_memory() -> list[str]:
            return [e.type for e in fake.published]

        yield Side(fake, in_memory)
        return
    dsn = await migrations.provision(admin_dsn, "patients", "pw-patients-contract")
    await migrations.upgrade(admin_dsn, "patients")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(
            "TRUNCATE patients.patient, patients.clinician, patients.known_practitioner, "
            "patients.practitioner_care, patients.outbox CASCADE"
        )
    finally:
        await conn.close()
    db = Database(dsn, schema="patients", max_size=4, clock=clock)
    await db.open()

    async def in_outbox() -> list[str]:
        return [r[0] for r in await db.pool.fetch("SELECT subject FROM outbox ORDER BY id")]

    try:
        yield Side(PatientsStore(db), in_outbox)
    finally:
        await db.close()


def new(given: str = "Ayşe", family: str = "Yılmaz", born: date = date(1980, 2, 3), **extra: object) -> NewPatient:
    return NewPatient(given, family, born, Sex.FEMALE, **extra)  # type: ignore[arg-type]


async def _add(side: Side, *patients: NewPatient) -> list[Patient]:
    async with side.units.uow() as u:
        return [await u.patients.add(p, NOW) for p in patients]


async def test_a_patient_is_kept_as_registered_with_the_next_mrn(side: Side) -> None:
    account = uuid.uuid4()
    full = new(email="ayse@example.org", phone="+90 555 123 4567", user_id=account, coverage=("SGK", "123"))
    first, second = await _add(side, full, new("Can", "Demir", date(1990, 1, 2)))
    assert (first.given_name, first.family_name, first.birth_date, first.sex) == (
        "Ayşe",
        "Yılmaz",
        date(1980, 2, 3),
        Sex.FEMALE,
    )
    assert (first.email, first.phone, first.user_id, first.coverage, first.created_at) == (
        "ayse@example.org",
        "+90 555 123 4567",
        account,
        Coverage("SGK", "123"),
        NOW,
    )
    assert second.coverage is None and second.user_id is None
    assert first.mrn.startswith("MRN-") and first.mrn < second.mrn
    async with side.units.read() as u:
        assert await u.patients.get(first.id) == first
        assert await u.patients.get(uuid.uuid4()) is None
        assert await u.patients.of_user(account) == first
        assert await u.patients.of_user(uuid.uuid4()) is None
        assert await u.patients.contact(first.id) == ContactDetails(
            first.id, "Ayşe", "ayse@example.org", "+90 555 123 4567"
        )
        assert await u.patients.contact(uuid.uuid4()) is None
        unknown = uuid.uuid4()
        found = await u.patients.many([second.id, unknown, first.id, second.id])
        assert sorted(found, key=lambda p: p.mrn) == [first, second]  # each once, in no particular order
        assert await u.patients.many([unknown]) == [] and await u.patients.many([]) == []
    async with side.units.uow() as u:
        assert await u.patients.get(first.id, lock=True) == first


async def test_a_user_account_is_linked_to_one_patient_at_most(side: Side) -> None:
    account = uuid.uuid4()
    await _add(side, new(user_id=account))
    with pytest.raises(AccountLinkedError):
        async with side.units.uow() as u:
            await u.patients.add(new("Can", "Demir", user_id=account), NOW)
    await _add(side, new("Can", "Demir"), new("Can", "Demir"))  # without an account, any number
    async with side.units.read() as u:
        everyone = await u.patients.search(None, date(1980, 2, 3), 10)
    assert [(p.family_name, p.user_id) for p in everyone] == [("Demir", None), ("Demir", None), ("Yılmaz", account)]


async def test_search_finds_an_mrn_or_a_name_as_typed_by_birth_date_with_ties_by_name_and_id(side: Side) -> None:
    ayse, kaya1, kaya2, mehmet, odd = await _add(
        side,
        new("Ayşe", "Yılmaz"),
        new("Zeynep", "Kaya"),
        new("Zeynep", "Kaya"),
        new("Mehmet", "Öztürk", date(1975, 6, 7)),
        new("Eli", "Kaya_Demir", date(1961, 2, 3)),
    )
    twins = sorted([kaya1.id, kaya2.id])
    async with side.units.read() as u:
        for q in ("yılmaz", "YILMAZ", "Yilmaz", "ayse yilmaz", "  AYŞE  "):
            assert [p.id for p in await u.patients.search(q, None, 10)][:1] == [ayse.id], q
        assert [p.id for p in await u.patients.search(ayse.mrn.lower(), None, 10)][:1] == [ayse.id]
        assert [p.id for p in await u.patients.search("ozturk", None, 10)] == [mehmet.id]
        assert [p.id for p in await u.patients.search("zeynep kaya", None, 10)] == twins
        assert [p.id for p in await u.patients.search("zeynep kaya", None, 1)] == twins[:1]
        born = await u.patients.search(None, date(1980, 2, 3), 10)
        assert [p.id for p in born] == [*twins, ayse.id]  # by family name, given name, id
        assert [p.id for p in await u.patients.search("", date(1980, 2, 3), 2)] == twins
        assert [p.id for p in await u.patients.search("kaya", date(1961, 2, 3), 10)] == [odd.id]
        assert [p.id for p in await u.patients.search("a_d", None, 10)] == [odd.id]  # "_" is an underscore
        assert await u.patients.search("y%m", None, 10) == []  # "%" is a percent sign
        assert await u.patients.search("yılmaz", date(1975, 6, 7), 10) == []


async def test_likely_duplicates_share_a_birth_date_and_a_similar_name_an_email_or_a_phone(side: Side) -> None:
    elif_, _, mail, phone = await _add(
        side,
        new("Elif", "Şahin", date(1991, 9, 10)),
        new("Elif", "Doğan", date(1991, 9, 10)),
        new("Ece", "Mail", date(1960, 1, 1), email="Ece.Mail@Example.org"),
        new("Oya", "Phone", date(1961, 1, 1), phone="+90 532 111 2233"),
    )
    async with side.units.read() as u:
        found = await u.patients.likely_duplicates(new("Elif", "Sahin", date(1991, 9, 10)))
        assert [p.id for p in found] == [elif_.id]
        assert await u.patients.likely_duplicates(new("Elif", "Sahin", date(1991, 9, 11))) == []
        assert [p.id for p in await u.patients.likely_duplicates(new(email="ece.mail@example.ORG"))] == [mail.id]
        assert [p.id for p in await u.patients.likely_duplicates(new(phone="905321112233"))] == [phone.id]
        assert await u.patients.likely_duplicates(new(phone="112233")) == []  # too few digits to tell
        everyone = new("Elif", "Sahin", date(1991, 9, 10), email="ece.mail@example.org", phone="+905321112233")
        assert [p.id for p in await u.patients.likely_duplicates(everyone)] == [elif_.id, mail.id, phone.id]
        assert [p.id for p in await u.patients.likely_duplicates(everyone, limit=2)] == [elif_.id, mail.id]


async def test_master_data_is_updated_by_column(side: Side) -> None:
    (p,) = await _add(side, new(email="a@example.org", coverage=("SGK", "1")))
    async with side.units.uow() as u:
        await u.patients.update(
            p.id,
            {"family_name": "Akın", "sex": "other", "phone": "+90 555 000 1111", "email": None, "mrn": "X"},
        )
        await u.patients.update(p.id, {})
    async with side.units.read() as u:
        got = await u.patients.get(p.id)
    assert got is not None
    assert (got.family_name, got.sex, got.phone, got.email, got.mrn) == (
        "Akın",
        Sex.OTHER,
        "+90 555 000 1111",
        None,
        p.mrn,
    )
    async with side.units.uow() as u:
        await u.patients.update(p.id, {"coverage_payer": None, "coverage_member_id": None})
    async with side.units.read() as u:
        got = await u.patients.get(p.id)
    assert got is not None and got.coverage is None
    with pytest.raises(refused):
        async with side.units.uow() as u:
            await u.patients.update(p.id, {"coverage_payer": "SGK"})  # a payer without a member id


async def test_care_is_assigned_ended_and_followed_from_appointments_and_admissions(side: Side) -> None:
    p, other = await _add(side, new(), new("Can", "Demir"))
    doctor, colleague, nurse, clerk = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    practitioner, unknown, appointment, admission = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with side.units.uow() as u:
        await u.clinicians.remember(doctor, ["DOCTOR"], NOW)
        await u.clinicians.remember(doctor, ["DOCTOR", "RECEPTIONIST"], NOW)
        assert await u.clinicians.known(doctor) and not await u.clinicians.known(clerk)
        await u.clinicians.remember_practitioner(practitioner, uuid.uuid4())
        await u.clinicians.remember_practitioner(practitioner, colleague)  # the latest wins
        open_ended = await u.care.assign(NewCareRelationship(p.id, doctor, CareSource.ASSIGNMENT, NOW), clerk, NOW)
        ending = await u.care.assign(
            NewCareRelationship(p.id, nurse, CareSource.ASSIGNMENT, NOW + H, NOW + 3 * H), clerk, NOW
        )
        await u.care.merge_appointment(
            appointment_id=appointment,
            patient_id=p.id,
            practitioner_id=practitioner,
            version=2,
            seen_at=NOW + 2 * H,
            until=NOW + 30 * H,
            cancelled_at=None,
        )
        await u.care.merge_appointment(  # an earlier version, arriving late: its start counts, not its end
            appointment_id=appointment,
            patient_id=p.id,
            practitioner_id=practitioner,
            version=1,
            seen_at=NOW - H,
            until=NOW + 10 * H,
            cancelled_at=None,
        )
        await u.care.merge_admission(
            admission_id=admission, patient_id=p.id, practitioner_id=unknown, admitted_at=NOW, until=None
        )
    assert open_ended == CareRelationship(open_ended.id, p.id, doctor, CareSource.ASSIGNMENT, NOW, None)
    assert (ending.valid_from, ending.valid_until) == (NOW + H, NOW + 3 * H)
    followed = CareRelationship(appointment, p.id, colleague, CareSource.APPOINTMENT, NOW - H, NOW + 30 * H)
    async with side.units.read() as u:
        assert await u.care.team(p.id, NOW) == [followed, open_ended]
        team = await u.care.team(p.id, NOW + 2 * H)
        assert team == sorted([followed, open_ended, ending], key=lambda r: (r.valid_from, r.id))
        assert await u.care.team(p.id, NOW + 3 * H) == [followed, open_ended]  # an end is exclusive
        assert await u.care.team(other.id, NOW) == []
        assert await u.care.assigned(p.id, doctor, NOW) == open_ended.id
        assert await u.care.assigned(p.id, nurse, NOW) is None  # not yet
        assert await u.care.assigned(p.id, colleague, NOW) is None  # care from an appointment is not assigned
        assert await u.care.follows_event(p.id, appointment) and await u.care.follows_event(p.id, admission)
        assert not await u.care.follows_event(other.id, appointment)
        assert not await u.care.follows_event(p.id, open_ended.id)
        assert await u.care.basis(p.id, colleague, NOW + 29 * H) == (True, False)
        assert await u.care.basis(p.id, colleague, NOW + 30 * H) == (False, False)

    # The practitioner of the admission becomes known; the discharge sets its end; a cancellation ends care.
    async with side.units.uow() as u:
        await u.clinicians.remember_practitioner(unknown, nurse)
        await u.care.merge_admission(
            admission_id=admission, patient_id=p.id, practitioner_id=None, admitted_at=NOW, until=NOW + 5 * H
        )
        await u.care.merge_appointment(
            appointment_id=appointment,
            patient_id=p.id,
            practitioner_id=practitioner,
            version=3,
            seen_at=NOW + 4 * H,
            until=NOW + 40 * H,
            cancelled_at=NOW + 4 * H,
        )
        assert await u.care.end(p.id, open_ended.id, NOW + H, clerk)
        assert await u.care.end(p.id, open_ended.id, NOW + 2 * H, clerk)  # ended already: stays as it was
        assert not await u.care.end(other.id, ending.id, NOW, clerk)  # another patient's
        assert not await u.care.end(p.id, appointment, NOW, clerk)  # follows from an appointment
        assert await u.care.end(p.id, ending.id, NOW, clerk)  # before it began: it ends as it begins
    async with side.units.read() as u:
        team = await u.care.team(p.id, NOW)
        assert [(r.id, r.user_id, r.source, r.valid_from, r.valid_until) for r in team] == [
            (appointment, colleague, CareSource.APPOINTMENT, NOW - H, NOW + 4 * H),
            *sorted(
                [
                    (open_ended.id, doctor, CareSource.ASSIGNMENT, NOW, NOW + H),
                    (admission, nurse, CareSource.ADMISSION, NOW, NOW + 5 * H),
                ]
            ),
        ]
        assert [r.id for r in await u.care.team(p.id, NOW + H)] == [appointment, admission]
        assert await u.care.assigned(p.id, nurse, NOW + 2 * H) is None
        assert await u.care.basis(p.id, nurse, NOW + 4 * H) == (True, False)


async def test_emergency_grants_reach_one_patient_until_they_expire_newest_first(side: Side) -> None:
    p, other, third = await _add(side, new(), new("Can", "Demir"), new("Oya", "Üç"))
    doctor, nurse = uuid.uuid4(), uuid.uuid4()
    async with side.units.uow() as u:
        grant = await u.grants.add(
            patient_id=p.id,
            user_id=doctor,
            roles=["DOCTOR"],
            reason=REASON,
            granted_at=NOW,
            expires_at=NOW + H,
        )
        same_moment = [
            await u.grants.add(
                patient_id=other.id,
                user_id=nurse,
                roles=["NURSE", "ADMIN"],
                reason=REASON,
                granted_at=NOW + H,
                expires_at=NOW + 2 * H,
            )
            for _ in range(2)
        ]
        await u.care.assign(NewCareRelationship(third.id, doctor, CareSource.ASSIGNMENT, NOW), None, NOW)
    assert (grant.patient_id, grant.user_id, grant.roles, grant.reason) == (p.id, doctor, ("DOCTOR",), REASON)
    assert (grant.granted_at, grant.expires_at) == (NOW, NOW + H)
    async with side.units.read() as u:
        assert await u.grants.find(patient_id=None, limit=10) == [*sorted(same_moment, key=lambda g: g.id), grant]
        assert await u.grants.find(patient_id=p.id, limit=10) == [grant]
        assert await u.grants.find(patient_id=None, limit=1) == [min(same_moment, key=lambda g: g.id)]
        assert await u.care.basis(p.id, doctor, NOW) == (False, True)
        assert await u.care.basis(p.id, doctor, NOW + H) == (False, False)
        assert await u.care.basis(p.id, doctor, NOW - timedelta(seconds=1)) == (False, False)
        assert await u.care.basis(p.id, nurse, NOW) == (False, False)
        ids = [p.id, other.id, third.id, uuid.uuid4()]
        assert await u.care.reachable(doctor, ids, NOW) == {p.id: False, third.id: True}
        assert await u.care.reachable(nurse, ids, NOW + H) == {other.id: False}
        assert await u.care.reachable(doctor, [], NOW) == {}


async def test_grants_of_a_user_their_review_and_the_reads_under_them(side: Side) -> None:
    """``of_user`` since a moment, newest first; ``get`` (locked or not); ``review`` keeps the
    last decision; ``find`` by review state; ``note_read`` notes against the user's latest active
    grant of the patient, or nothing; ``reads`` earliest first, per grant."""
    p, other = await _add(side, new(), new("Can", "Demir"))
    doctor, nurse, admin = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    roles = ["DOCTOR"]
    async with side.units.uow() as u:
        early = await u.grants.add(
            patient_id=p.id, user_id=doctor, roles=roles, reason=REASON, granted_at=NOW - H, expires_at=NOW + H
        )
        late = await u.grants.add(
            patient_id=p.id,
            user_id=doctor,
            roles=roles,
            reason=REASON,
            granted_at=NOW,
            expires_at=NOW + H,
            over_limit=True,
        )
        nurses = await u.grants.add(
            patient_id=other.id, user_id=nurse, roles=roles, reason=REASON, granted_at=NOW, expires_at=NOW + H
        )
        assert await u.grants.note_read(patient_id=p.id, user_id=doctor, resource="patient", action="read", at=NOW)
        assert await u.grants.note_read(
            patient_id=p.id, user_id=doctor, resource="patient/record", action="read", at=NOW + H / 2
        )
        assert not await u.grants.note_read(
            patient_id=p.id, user_id=doctor, resource="patient", action="read", at=NOW + H
        )
        assert not await u.grants.note_read(patient_id=p.id, user_id=nurse, resource="patient", action="read", at=NOW)
        assert await u.grants.note_read(
            patient_id=p.id, user_id=doctor, resource="care_team", action="read", at=NOW - H / 2
        )
    assert (early.over_limit, late.over_limit, late.review_state) == (False, True, ReviewState.PENDING)
    assert (late.reviewed_by, late.reviewed_at, late.review_note) == (None, None, None)
    async with side.units.read() as u:
        assert await u.grants.of_user(doctor, NOW - H) == [late, early]
        assert await u.grants.of_user(doctor, NOW - H + timedelta(microseconds=1)) == [late]
        assert await u.grants.of_user(admin, NOW - H) == []
        assert await u.grants.get(late.id) == late and await u.grants.get(uuid.uuid4()) is None
        assert await u.grants.reads([early.id, late.id, nurses.id]) == {
            early.id: [EmergencyRead("care_team", "read", NOW - H / 2)],
            late.id: [EmergencyRead("patient", "read", NOW), EmergencyRead("patient/record", "read", NOW + H / 2)],
        }
        assert await u.grants.reads([]) == {}
    async with side.units.uow() as u:
        assert await u.grants.get(late.id, lock=True) == late
        escalated = await u.grants.review(late.id, state=ReviewState.ESCALATED, by=admin, at=NOW, note="Why so late")
        reviewed = await u.grants.review(late.id, state=ReviewState.REVIEWED, by=admin, at=NOW + H, note=None)
    assert (escalated.review_state, escalated.review_note) == (ReviewState.ESCALATED, "Why so late")
    assert reviewed == replace(late, review_state=ReviewState.REVIEWED, reviewed_by=admin, reviewed_at=NOW + H)
    async with side.units.read() as u:
        assert await u.grants.find(patient_id=None, limit=10, state=ReviewState.REVIEWED) == [reviewed]
        assert await u.grants.find(patient_id=None, limit=10, state=ReviewState.PENDING) == [
            *sorted([nurses], key=lambda g: g.id),
            early,
        ]
        assert await u.grants.find(patient_id=other.id, limit=10, state=ReviewState.ESCALATED) == []


async def test_records_are_kept_as_written_the_latest_first(side: Side) -> None:
    p, other = await _add(side, new(), new("Can", "Demir"))
    author = uuid.uuid4()
    ids = sorted(uuid.uuid4() for _ in range(3))
    async with side.units.uow() as u:
        entries = [
            await u.records.add(
                entry_id=entry_id,
                patient_id=p.id,
                kind="allergy",
                code="Z88.0" if n else None,
                text_cipher=b"\x00ciphertext" + bytes([n]),
                author_id=author,
                author_roles=["DOCTOR", "NURSE"],
                at=NOW + (H if n == 2 else 0 * H),
            )
            for n, entry_id in enumerate(ids)
        ]
    first = entries[0]
    assert (first.id, first.patient_id, first.kind, first.code, first.text_cipher) == (
        ids[0],
        p.id,
        "allergy",
        None,
        b"\x00ciphertext\x00",
    )
    assert (first.author_id, first.author_roles, first.created_at) == (author, ("DOCTOR", "NURSE"), NOW)
    async with side.units.read() as u:
        assert await u.records.of(p.id, 10) == [entries[2], entries[0], entries[1]]
        assert await u.records.of(p.id, 1) == [entries[2]]
        assert await u.records.of(other.id, 10) == []


async def test_lab_results_are_kept_once_per_order_and_test_the_latest_order_first(side: Side) -> None:
    p, other = await _add(side, new(), new("Can", "Demir"))
    doctor = uuid.uuid4()
    glucose = LabResult("GLU", "5.4", "mmol/L", Decimal("3.9"), Decimal("5.6"), "N")
    potassium = LabResult("K", "6.1", "mmol/L", Decimal("3.5"), Decimal("5.1"), "H")
    culture = LabResult("CULT", "no growth", None, None, None, "A")
    orders = sorted([uuid.uuid4(), uuid.uuid4()])
    early = ResultedOrder(uuid.uuid4(), p.id, doctor, "routine", NOW - H, (glucose, potassium))
    tied = [ResultedOrder(o, p.id, doctor, "stat", NOW, (culture,)) for o in orders]
    async with side.units.uow() as u:
        assert await u.lab.add(early, NOW) == 2
        assert await u.lab.add(early, NOW) == 0  # already there: kept as it is
        again = ResultedOrder(early.order_id, p.id, doctor, "routine", NOW - H, (glucose, potassium, culture))
        assert await u.lab.add(again, NOW) == 1
        for order in reversed(tied):
            assert await u.lab.add(order, NOW) == 1
    async with side.units.read() as u:
        chart = await u.lab.of(p.id, 10)
        assert chart[:2] == tied  # the latest first; ties by order id
        assert chart[2].order_id == early.order_id and chart[2].results[:2] == (glucose, potassium)
        assert [r.code for r in chart[2].results] == ["GLU", "K", "CULT"]
        assert (chart[2].ordered_by, chart[2].priority, chart[2].resulted_at) == (doctor, "routine", NOW - H)
        assert await u.lab.of(p.id, 1) == tied[:1]
        assert await u.lab.of(other.id, 10) == []
    async with side.units.uow() as u:  # an order without results adds nothing, for anyone
        assert await u.lab.add(ResultedOrder(uuid.uuid4(), uuid.uuid4(), doctor, "routine", NOW, ()), NOW) == 0


def _invitation(patient_id: uuid.UUID, *, minutes: int = 60) -> Invitation:
    invitation_id = uuid.uuid4()
    return Invitation(
        id=invitation_id,
        patient_id=patient_id,
        code_digest=code_digest(CODES.code(invitation_id)),
        channel=Channel.SMS,
        issued_by=uuid.uuid4(),
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=minutes),
    )


async def test_an_invitation_is_kept_superseded_and_redeemed_once(side: Side) -> None:
    p, linked = await _add(side, new(), new("Can", "Demir", user_id=uuid.uuid4()))
    first, second = _invitation(p.id), _invitation(p.id)
    account = uuid.uuid4()
    async with side.units.uow() as u:
        await u.invitations.add(first)
        with_linked = _invitation(linked.id)
        await u.invitations.add(with_linked)
        assert await u.invitations.by_digest(first.code_digest) == first
        assert await u.invitations.get(first.id) == (first, False)
        assert await u.invitations.get(with_linked.id) == (with_linked, True)
        assert await u.invitations.get(uuid.uuid4()) is None
        assert await u.invitations.by_digest(code_digest(CODES.code(uuid.uuid4())), lock=True) is None
        await u.invitations.supersede(p.id, NOW + H)
        await u.invitations.add(second)
    async with side.units.uow() as u:
        assert await u.invitations.by_digest(first.code_digest) == Invitation(
            **{**first.__dict__, "revoked_at": NOW + H}
        )
        await u.invitations.redeem(second.id, p.id, account, NOW + 2 * H)
        await u.invitations.supersede(p.id, NOW + 3 * H)  # nothing outstanding: the redeemed one stays
    async with side.units.uow() as u:
        used = await u.invitations.by_digest(second.code_digest, lock=True)
        assert used is not None and (used.redeemed_at, used.redeemed_by, used.revoked_at) == (
            NOW + 2 * H,
            account,
            None,
        )
        assert await u.invitations.get(second.id) == (used, True)
        assert (await u.patients.of_user(account)) == (await u.patients.get(p.id))
        got = await u.patients.get(p.id)
        assert got is not None and got.user_id == account


async def test_what_the_tables_refuse_the_fake_refuses(side: Side) -> None:
    """One outstanding invitation per patient, one record per account, foreign keys, checks."""
    p, linked = await _add(side, new(), new("Can", "Demir", user_id=uuid.uuid4()))
    assert linked.user_id is not None
    nobody, who = uuid.uuid4(), uuid.uuid4()
    outstanding = _invitation(p.id)
    async with side.units.uow() as u:
        await u.invitations.add(outstanding)

    async def refusal(attempt: Callable[..., Awaitable[object]], error: Refused = refused) -> None:
        with pytest.raises(error):
            async with side.units.uow() as u:
                await attempt(u)

    await refusal(lambda u: u.invitations.add(_invitation(p.id)))
    await refusal(lambda u: u.invitations.add(_invitation(nobody)))
    await refusal(lambda u: u.invitations.add(_invitation(linked.id, minutes=0)))
    await refusal(lambda u: u.invitations.redeem(outstanding.id, p.id, linked.user_id, NOW), AccountLinkedError)
    await refusal(lambda u: u.care.assign(NewCareRelationship(nobody, who, CareSource.ASSIGNMENT, NOW), None, NOW))
    await refusal(
        lambda u: u.care.assign(NewCareRelationship(p.id, who, CareSource.ASSIGNMENT, NOW, NOW - H), None, NOW)
    )
    grant = {"user_id": who, "roles": ["DOCTOR"], "granted_at": NOW}
    await refusal(lambda u: u.grants.add(patient_id=nobody, reason=REASON, expires_at=NOW + H, **grant))
    await refusal(lambda u: u.grants.add(patient_id=p.id, reason="too short", expires_at=NOW + H, **grant))
    await refusal(lambda u: u.grants.add(patient_id=p.id, reason=REASON, expires_at=NOW, **grant))
    async with side.units.uow() as u:
        kept = await u.grants.add(
            patient_id=p.id, user_id=who, roles=["DOCTOR"], reason=REASON, granted_at=NOW, expires_at=NOW + H
        )
    review = {"by": who, "at": NOW}
    await refusal(lambda u: u.grants.review(kept.id, state=ReviewState.PENDING, note=None, **review))
    await refusal(lambda u: u.grants.review(kept.id, state=ReviewState.REVIEWED, note="x" * 2001, **review))
    await refusal(lambda u: u.grants.review(uuid.uuid4(), state=ReviewState.REVIEWED, note=None, **review), LookupError)
    entry = {"text_cipher": b"x", "author_id": who, "author_roles": ["DOCTOR"], "at": NOW}
    await refusal(lambda u: u.records.add(entry_id=uuid.uuid4(), patient_id=nobody, kind="note", code=None, **entry))
    await refusal(lambda u: u.records.add(entry_id=uuid.uuid4(), patient_id=p.id, kind="gossip", code=None, **entry))
    await refusal(lambda u: u.records.add(entry_id=uuid.uuid4(), patient_id=p.id, kind="note", code="<b>", **entry))
    bad = LabResult("glu", "5", None, None, None, "N")
    result = LabResult("GLU", "5", None, None, None, "N")
    await refusal(lambda u: u.lab.add(ResultedOrder(uuid.uuid4(), nobody, who, "routine", NOW, (result,)), NOW))
    await refusal(lambda u: u.lab.add(ResultedOrder(uuid.uuid4(), p.id, who, "routine", NOW, (bad,)), NOW))
    async with side.units.read() as u:
        assert await u.grants.find(patient_id=None, limit=10) == [kept]
        assert await u.records.of(p.id, 10) == []
        assert await u.lab.of(p.id, 10) == []
        assert await u.care.team(p.id, NOW) == []
        assert await u.invitations.get(outstanding.id) == (outstanding, False)


async def test_a_unit_that_fails_leaves_nothing_and_publishes_nothing(side: Side) -> None:
    (kept,) = await _add(side, new("Kept", "Here"))
    doctor = uuid.uuid4()
    with pytest.raises(RuntimeError):
        async with side.units.uow() as u:
            gone = await u.patients.add(new("Gone", "Away"), NOW)
            await u.patients.update(kept.id, {"family_name": "Changed"})
            await u.clinicians.remember(doctor, ["DOCTOR"], NOW)
            await u.clinicians.remember_practitioner(uuid.uuid4(), doctor)
            await u.care.assign(NewCareRelationship(kept.id, doctor, CareSource.ASSIGNMENT, NOW), None, NOW)
            await u.care.merge_admission(
                admission_id=uuid.uuid4(), patient_id=kept.id, practitioner_id=None, admitted_at=NOW, until=None
            )
            await u.grants.add(
                patient_id=kept.id, user_id=doctor, roles=["DOCTOR"], reason=REASON, granted_at=NOW, expires_at=NOW + H
            )
            await u.records.add(
                entry_id=uuid.uuid4(),
                patient_id=kept.id,
                kind="note",
                code=None,
                text_cipher=b"x",
                author_id=doctor,
                author_roles=["DOCTOR"],
                at=NOW,
            )
            result = LabResult("GLU", "5", None, None, None, "N")
            await u.lab.add(ResultedOrder(uuid.uuid4(), kept.id, doctor, "routine", NOW, (result,)), NOW)
            await u.invitations.add(_invitation(kept.id))
            u.add(PatientUpdated(patient_id=kept.id, fields=["family_name"]), aggregate_id=kept.id)
            raise RuntimeError("the use case fails after writing")
    async with side.units.read() as u:
        assert await u.patients.get(gone.id) is None
        assert await u.patients.get(kept.id) == kept
        assert [p.id for p in await u.patients.search(None, date(1980, 2, 3), 10)] == [kept.id]
        assert not await u.clinicians.known(doctor)
        assert await u.care.team(kept.id, NOW) == []
        assert await u.care.basis(kept.id, doctor, NOW) == (False, False)
        assert await u.grants.find(patient_id=None, limit=10) == []
        assert await u.records.of(kept.id, 10) == []
        assert await u.lab.of(kept.id, 10) == []
    assert await side.published() == []
    async with side.units.uow() as u:
        u.add(PatientUpdated(patient_id=kept.id, fields=["phone"]), aggregate_id=kept.id)
        assert u.clock() == NOW
    assert await side.published() == [PatientUpdated.type]
