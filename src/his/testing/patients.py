"""The patients' ports in memory (``his.patients.ports``); the units are ``FakeChart`` (the
name ``FakePatients`` is the patient directory's fake, ``his.clients.patients``).

What the tables enforce, the fakes enforce too: one record per user account (as the unique key:
``AccountLinkedError``, on registration and on redemption), MRNs from one sequence, at most one
outstanding invitation per patient and a code's digest used once (as the unique indexes), the
foreign keys to the patient and the CHECKs (a grant's reason of 20 to 500 characters expiring
after it is granted, a record entry's kind and code, a lab result's code, value and flag, an
invitation expiring after it is issued and never both redeemed and revoked, coverage given
whole, a care relationship never ending before it begins). Those that no use case handles raise
``ValueError``, as none meets the database's errors for them.

Search is the one place the fake is simpler than the database: PostgreSQL ranks names by
trigram word similarity (pg_trgm), tolerating typos; the fake finds an MRN exactly and a name
by the literal text folded as the database folds it (``fold``: case and diacritics), and ranks
the MRN first, then by family name, given name and id, as the database ranks equally similar
names. The contract (``tests/integration/test_patients_contract.py``) covers what both agree
on; the fuzzy ranking is tested on PostgreSQL (``tests/integration/test_patient_search.py``).
Likely duplicates use pg_trgm's ``similarity`` (trigrams of the words of both names), which
the fake computes as the extension does.
"""

from __future__ import annotations

import importlib
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime

from his.kernel.clock import Clock, utc_now
from his.patients.domain import (
    RECORD_KINDS,
    AccountLinkedError,
    CareRelationship,
    CareSource,
    ContactDetails,
    Coverage,
    EmergencyGrant,
    EmergencyRead,
    Invitation,
    LabResult,
    NewCareRelationship,
    NewPatient,
    Patient,
    RecordEntry,
    ResultedOrder,
    ReviewState,
    Sex,
    Stored,
    format_mrn,
)
from his.testing.units import FakeUnits, FakeWork

_SEARCH = importlib.import_module("his.patients.store.migrations.0005_search_and_duplicates")
_FOLD = str.maketrans(_SEARCH.FROM, _SEARCH.TO)
_CODE = re.compile(r"^[A-Za-z0-9.\-]{1,32}$")
_LAB_CODE = re.compile(r"^[A-Z0-9]{1,16}$")
_FLAGS = frozenset({"N", "L", "H", "LL", "HH", "A"})


def fold(text: str) -> str:
    """As the database's ``fold``: lower case, diacritics (Turkish letters too) dropped."""
    return text.translate(_FOLD).lower()


def full_name(given: str, family: str) -> str:
    return fold(f"{given} {family}")


def trigrams(text: str) -> set[str]:
    """pg_trgm's trigrams of a text: of each word (a run of letters and digits), lower-cased,
    with two blanks before and one after."""
    out: set[str] = set()
    for word in re.findall(r"[^\W_]+", text.lower()):
        padded = f"  {word} "
        out.update(padded[i : i + 3] for i in range(len(padded) - 2))
    return out


def similarity(a: str, b: str) -> float:
    """pg_trgm's ``similarity``: the trigrams both share, of those either has."""
    ta, tb = trigrams(a), trigrams(b)
    return len(ta & tb) / len(ta | tb) if ta and tb else 0.0


def _least(*moments: datetime | None) -> datetime | None:
    """SQL's ``least``: NULLs ignored."""
    given = [m for m in moments if m is not None]
    return min(given) if given else None


@dataclass(frozen=True)
class PractitionerCare:
    """A row of ``practitioner_care``: care that follows from an appointment or admission."""

    source: CareSource
    source_id: uuid.UUID
    patient_id: uuid.UUID
    practitioner_id: uuid.UUID | None
    version: int
    valid_from: datetime
    valid_until: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class ChartResult:
    """A row of ``lab_result``."""

    order_id: uuid.UUID
    patient_id: uuid.UUID
    ordered_by: uuid.UUID
    priority: str
    position: int
    result: LabResult
    resulted_at: datetime
    received_at: datetime


@dataclass
class PatientsState:
    patients: dict[uuid.UUID, Patient] = field(default_factory=dict)
    #: The last number ``mrn_seq`` gave.
    mrn_seq: int = 0
    #: Clinician accounts and their roles.
    clinicians: dict[uuid.UUID, list[str]] = field(default_factory=dict)
    #: The user account of each practitioner announced with one.
    practitioners: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    #: Assigned care relationships by id.
    assigned: dict[uuid.UUID, CareRelationship] = field(default_factory=dict)
    #: Care from appointments and admissions, by (source, source id).
    followed: dict[tuple[CareSource, uuid.UUID], PractitionerCare] = field(default_factory=dict)
    grants: dict[uuid.UUID, EmergencyGrant] = field(default_factory=dict)
    #: Reads noted under grants, in the order noted.
    reads: list[tuple[uuid.UUID, EmergencyRead]] = field(default_factory=list)
    entries: dict[uuid.UUID, RecordEntry] = field(default_factory=dict)
    #: Lab results by (order, test code).
    results: dict[tuple[uuid.UUID, str], ChartResult] = field(default_factory=dict)
    invitations: dict[uuid.UUID, Invitation] = field(default_factory=dict)

    def known(self, patient_id: uuid.UUID) -> None:
        if patient_id not in self.patients:
            raise ValueError(f"no patient {patient_id}")  # the foreign key

    def care_links(self) -> list[CareRelationship]:
        """The ``care_link`` view: assignments, and care from events of practitioners whose
        account is known (ended at the earlier of its end and its cancellation, never before it
        began)."""
        links = list(self.assigned.values())
        for c in self.followed.values():
            account = self.practitioners.get(c.practitioner_id) if c.practitioner_id else None
            if account is None:
                continue
            until = c.valid_until
            if c.ended_at is not None:
                least = _least(c.valid_until, c.ended_at)
                until = max(c.valid_from, least) if least is not None else c.valid_from
            links.append(CareRelationship(c.source_id, c.patient_id, account, c.source, c.valid_from, until))
        return links

    def granted(self, patient_id: uuid.UUID, user_id: uuid.UUID, at: datetime) -> bool:
        return any(
            g.patient_id == patient_id and g.user_id == user_id and g.granted_at <= at < g.expires_at
            for g in self.grants.values()
        )


def _active(rel: CareRelationship, at: datetime) -> bool:
    return rel.valid_from <= at and (rel.valid_until is None or rel.valid_until > at)


class FakePatientIndex:
    def __init__(self, state: PatientsState) -> None:
        self.state = state

    async def add(self, p: NewPatient, at: datetime) -> Patient:
        self.state.mrn_seq += 1  # unlike the sequence, a unit that fails gives its number back
        if p.user_id is not None and any(x.user_id == p.user_id for x in self.state.patients.values()):
            raise AccountLinkedError(str(p.user_id))
        coverage = Coverage(*p.coverage) if p.coverage else None
        added = Patient(
            uuid.uuid4(),
            format_mrn(self.state.mrn_seq),
            p.given_name,
            p.family_name,
            p.birth_date,
            Sex(p.sex),
            p.email,
            p.phone,
            p.user_id,
            coverage,
            at,
        )
        self.state.patients[added.id] = added
        return added

    async def get(self, patient_id: uuid.UUID, *, lock: bool = False) -> Patient | None:
        return self.state.patients.get(patient_id)

    async def many(self, patient_ids: list[uuid.UUID]) -> list[Patient]:
        # In no particular order, as the table answers: here the reverse of the ids asked for.
        wanted = list(dict.fromkeys(patient_ids))[::-1]
        return [self.state.patients[i] for i in wanted if i in self.state.patients]

    async def of_user(self, user_id: uuid.UUID) -> Patient | None:
        return next((p for p in self.state.patients.values() if p.user_id == user_id), None)

    async def contact(self, patient_id: uuid.UUID) -> ContactDetails | None:
        p = self.state.patients.get(patient_id)
        return ContactDetails(p.id, p.given_name, p.email, p.phone) if p else None

    async def search(self, q: str | None, birth_date: date | None, limit: int) -> list[Patient]:
        """An MRN exactly, or the folded text within the folded name (no typos: see above)."""
        term = (q or "").strip()

        def matches(p: Patient) -> bool:
            if birth_date is not None and p.birth_date != birth_date:
                return False
            return term == "" or p.mrn == term.upper() or fold(term) in full_name(p.given_name, p.family_name)

        found = [p for p in self.state.patients.values() if matches(p)]
        return sorted(found, key=lambda p: (p.mrn != term.upper(), p.family_name, p.given_name, p.id))[:limit]

    async def likely_duplicates(self, p: NewPatient, limit: int = 5) -> list[Patient]:
        digits = "".join(ch for ch in p.phone or "" if ch.isdigit())
        name = fold(f"{p.given_name} {p.family_name}")

        def likely(x: Patient) -> bool:
            return (
                (x.birth_date == p.birth_date and similarity(name, full_name(x.given_name, x.family_name)) >= 0.5)
                or (p.email is not None and x.email is not None and x.email.lower() == p.email.lower())
                or (len(digits) >= 7 and x.phone is not None and re.sub(r"[^0-9]", "", x.phone) == digits)
            )

        return sorted((x for x in self.state.patients.values() if likely(x)), key=lambda x: x.created_at)[:limit]

    async def update(self, patient_id: uuid.UUID, changes: dict[str, Stored]) -> None:
        p = self.state.patients.get(patient_id)
        if p is None:
            return
        fields: dict[str, object] = {}
        for k in ("given_name", "family_name", "birth_date", "email", "phone"):
            if k in changes:
                fields[k] = changes[k]
        if "sex" in changes:
            fields["sex"] = Sex(str(changes["sex"]))
        payer = changes.get("coverage_payer", p.coverage.payer if p.coverage else None)
        member = changes.get("coverage_member_id", p.coverage.member_id if p.coverage else None)
        if (payer is None) != (member is None):
            raise ValueError("coverage is a payer and a member id, or neither")  # coverage_complete
        fields["coverage"] = Coverage(str(payer), str(member)) if payer is not None else None
        self.state.patients[patient_id] = replace(p, **fields)  # type: ignore[arg-type]


class FakeClinicians:
    def __init__(self, state: PatientsState) -> None:
        self.state = state

    async def remember(self, user_id: uuid.UUID, roles: list[str], at: datetime) -> None:
        self.state.clinicians[user_id] = list(roles)

    async def known(self, user_id: uuid.UUID) -> bool:
        return user_id in self.state.clinicians

    async def remember_practitioner(self, practitioner_id: uuid.UUID, account_id: uuid.UUID) -> None:
        self.state.practitioners[practitioner_id] = account_id


class FakeCareTeams:
    def __init__(self, state: PatientsState) -> None:
        self.state = state

    async def assigned(self, patient_id: uuid.UUID, user_id: uuid.UUID, at: datetime) -> uuid.UUID | None:
        return next(
            (
                r.id
                for r in self.state.assigned.values()
                if r.patient_id == patient_id and r.user_id == user_id and _active(r, at)
            ),
            None,
        )

    async def assign(self, rel: NewCareRelationship, created_by: uuid.UUID | None, at: datetime) -> CareRelationship:
        self.state.known(rel.patient_id)
        if rel.valid_until is not None and rel.valid_until < rel.valid_from:
            raise ValueError("a care relationship ends after it begins")  # the check
        made = CareRelationship(
            uuid.uuid4(), rel.patient_id, rel.user_id, CareSource(rel.source), rel.valid_from, rel.valid_until
        )
        self.state.assigned[made.id] = made
        return made

    async def end(self, patient_id: uuid.UUID, relationship_id: uuid.UUID, at: datetime, ended_by: uuid.UUID) -> bool:
        rel = self.state.assigned.get(relationship_id)
        if rel is None or rel.patient_id != patient_id:
            return False
        if rel.valid_until is None or rel.valid_until > at:
            self.state.assigned[rel.id] = replace(rel, valid_until=max(rel.valid_from, at))
        return True

    async def follows_event(self, patient_id: uuid.UUID, link_id: uuid.UUID) -> bool:
        return any(c.source_id == link_id and c.patient_id == patient_id for c in self.state.followed.values())

    async def team(self, patient_id: uuid.UUID, at: datetime) -> list[CareRelationship]:
        found = [r for r in self.state.care_links() if r.patient_id == patient_id and _active(r, at)]
        return sorted(found, key=lambda r: (r.valid_from, r.id))

    async def basis(self, patient_id: uuid.UUID, user_id: uuid.UUID, at: datetime) -> tuple[bool, bool]:
        in_care = any(
            r.patient_id == patient_id and r.user_id == user_id and _active(r, at) for r in self.state.care_links()
        )
        return in_care, self.state.granted(patient_id, user_id, at)

    async def reachable(self, user_id: uuid.UUID, patient_ids: list[uuid.UUID], at: datetime) -> dict[uuid.UUID, bool]:
        out: dict[uuid.UUID, bool] = {}
        for pid in dict.fromkeys(patient_ids):
            in_care, emergency = await self.basis(pid, user_id, at)
            if in_care or emergency:
                out[pid] = in_care
        return out

    async def merge_appointment(
        self,
        *,
        appointment_id: uuid.UUID,
        patient_id: uuid.UUID,
        practitioner_id: uuid.UUID,
        version: int,
        seen_at: datetime,
        until: datetime,
        cancelled_at: datetime | None,
    ) -> None:
        key = (CareSource.APPOINTMENT, appointment_id)
        old = self.state.followed.get(key)
        if old is None:
            self.state.followed[key] = PractitionerCare(
                CareSource.APPOINTMENT,
                appointment_id,
                patient_id,
                practitioner_id,
                version,
                seen_at,
                until,
                cancelled_at,
            )
            return
        self.state.followed[key] = replace(
            old,
            valid_from=min(old.valid_from, seen_at),
            valid_until=until if version > old.version else old.valid_until,
            version=max(old.version, version),
            ended_at=_least(old.ended_at, cancelled_at),
        )

    async def merge_admission(
        self,
        *,
        admission_id: uuid.UUID,
        patient_id: uuid.UUID,
        practitioner_id: uuid.UUID | None,
        admitted_at: datetime,
        until: datetime | None,
    ) -> None:
        key = (CareSource.ADMISSION, admission_id)
        old = self.state.followed.get(key)
        if old is None:
            self.state.followed[key] = PractitionerCare(
                CareSource.ADMISSION, admission_id, patient_id, practitioner_id, 0, admitted_at, until, None
            )
            return
        self.state.followed[key] = replace(
            old,
            practitioner_id=practitioner_id if practitioner_id is not None else old.practitioner_id,
            valid_until=until if until is not None else old.valid_until,
        )


class FakeEmergencyGrants:
    def __init__(self, state: PatientsState) -> None:
        self.state = state

    async def add(
        self,
        *,
        patient_id: uuid.UUID,
        user_id: uuid.UUID,
        roles: list[str],
        reason: str,
        granted_at: datetime,
        expires_at: datetime,
        over_limit: bool = False,
    ) -> EmergencyGrant:
        self.state.known(patient_id)
        if not 20 <= len(reason) <= 500 or expires_at <= granted_at:
            raise ValueError("a reason of 20 to 500 characters, expiring after it is granted")  # the checks
        grant = EmergencyGrant(
            uuid.uuid4(), patient_id, user_id, tuple(roles), reason, granted_at, expires_at, over_limit=over_limit
        )
        self.state.grants[grant.id] = grant
        return grant

    @staticmethod
    def _newest_first(grants: list[EmergencyGrant]) -> list[EmergencyGrant]:
        grants.sort(key=lambda g: g.id)
        grants.sort(key=lambda g: g.granted_at, reverse=True)  # stable: ties stay by id
        return grants

    async def find(
        self, *, patient_id: uuid.UUID | None, limit: int, state: ReviewState | None = None
    ) -> list[EmergencyGrant]:
        found = [
            g
            for g in self.state.grants.values()
            if (patient_id is None or g.patient_id == patient_id) and (state is None or g.review_state is state)
        ]
        return self._newest_first(found)[:limit]

    async def get(self, grant_id: uuid.UUID, *, lock: bool = False) -> EmergencyGrant | None:
        return self.state.grants.get(grant_id)

    async def of_user(self, user_id: uuid.UUID, since: datetime) -> list[EmergencyGrant]:
        return self._newest_first(
            [g for g in self.state.grants.values() if g.user_id == user_id and g.granted_at >= since]
        )

    async def review(
        self, grant_id: uuid.UUID, *, state: ReviewState, by: uuid.UUID, at: datetime, note: str | None
    ) -> EmergencyGrant:
        if grant_id not in self.state.grants:
            raise LookupError(f"no emergency grant {grant_id}")
        if state is ReviewState.PENDING or (note is not None and len(note) > 2000):
            raise ValueError("a review decides, with a note of at most 2000 characters")  # the checks
        done = replace(
            self.state.grants[grant_id], review_state=state, reviewed_by=by, reviewed_at=at, review_note=note
        )
        self.state.grants[grant_id] = done
        return done

    async def note_read(
        self, *, patient_id: uuid.UUID, user_id: uuid.UUID, resource: str, action: str, at: datetime
    ) -> bool:
        active = [
            g
            for g in self.state.grants.values()
            if g.patient_id == patient_id and g.user_id == user_id and g.granted_at <= at < g.expires_at
        ]
        if not active:
            return False
        grant = self._newest_first(active)[0]
        self.state.reads.append((grant.id, EmergencyRead(resource, action, at)))
        return True

    async def reads(self, grant_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[EmergencyRead]]:
        found: dict[uuid.UUID, list[EmergencyRead]] = {}
        for grant_id, read in sorted(self.state.reads, key=lambda r: r[1].at):  # stable: ties in order noted
            if grant_id in grant_ids:
                found.setdefault(grant_id, []).append(read)
        return found


class FakeRecords:
    def __init__(self, state: PatientsState) -> None:
        self.state = state

    async def add(
        self,
        *,
        entry_id: uuid.UUID,
        patient_id: uuid.UUID,
        kind: str,
        code: str | None,
        text_cipher: bytes,
        author_id: uuid.UUID,
        author_roles: list[str],
        at: datetime,
    ) -> RecordEntry:
        self.state.known(patient_id)
        if entry_id in self.state.entries:
            raise ValueError(f"entry {entry_id} exists")  # the primary key
        if kind not in RECORD_KINDS or (code is not None and not _CODE.match(code)):
            raise ValueError("a known kind, and a code of 1 to 32 letters, digits, dots and dashes")  # the checks
        entry = RecordEntry(entry_id, patient_id, kind, code, bytes(text_cipher), author_id, tuple(author_roles), at)
        self.state.entries[entry_id] = entry
        return entry

    async def of(self, patient_id: uuid.UUID, limit: int) -> list[RecordEntry]:
        found = sorted((e for e in self.state.entries.values() if e.patient_id == patient_id), key=lambda e: e.id)
        found.sort(key=lambda e: e.created_at, reverse=True)
        return found[:limit]


class FakeLabResults:
    def __init__(self, state: PatientsState) -> None:
        self.state = state

    async def add(self, order: ResultedOrder, at: datetime) -> int:
        if order.results:  # no rows, no foreign key to check
            self.state.known(order.patient_id)
        for r in order.results:  # one statement: a row refused refuses them all
            if not _LAB_CODE.match(r.code) or not 1 <= len(r.value) <= 64 or r.flag not in _FLAGS:
                raise ValueError(f"result {r.code!r} refused by the table's checks")
        added = 0
        for position, r in enumerate(order.results):
            key = (order.order_id, r.code)
            if key in self.state.results:
                continue  # ON CONFLICT DO NOTHING
            self.state.results[key] = ChartResult(
                order.order_id, order.patient_id, order.ordered_by, order.priority, position, r, order.resulted_at, at
            )
            added += 1
        return added

    async def of(self, patient_id: uuid.UUID, limit: int) -> list[ResultedOrder]:
        by_order: dict[uuid.UUID, list[ChartResult]] = {}
        for row in self.state.results.values():
            if row.patient_id == patient_id:
                by_order.setdefault(row.order_id, []).append(row)
        latest = sorted(by_order, key=lambda o: o)
        latest.sort(key=lambda o: max(r.resulted_at for r in by_order[o]), reverse=True)
        out = []
        for order_id in latest[:limit]:
            rows = sorted(by_order[order_id], key=lambda r: r.position)
            first = rows[0]
            out.append(
                ResultedOrder(
                    order_id,
                    patient_id,
                    first.ordered_by,
                    first.priority,
                    first.resulted_at,
                    tuple(r.result for r in rows),
                )
            )
        return out


class FakeInvitations:
    def __init__(self, state: PatientsState) -> None:
        self.state = state

    async def supersede(self, patient_id: uuid.UUID, at: datetime) -> None:
        for i in list(self.state.invitations.values()):
            if i.patient_id == patient_id and i.redeemed_at is None and i.revoked_at is None:
                self.state.invitations[i.id] = replace(i, revoked_at=at)

    async def add(self, invitation: Invitation) -> None:
        self.state.known(invitation.patient_id)
        others = self.state.invitations.values()
        if invitation.id in self.state.invitations or any(i.code_digest == invitation.code_digest for i in others):
            raise ValueError("an invitation's id and its code's digest are its own")  # the unique keys
        outstanding = (i for i in others if i.redeemed_at is None and i.revoked_at is None)
        if any(i.patient_id == invitation.patient_id for i in outstanding):
            raise ValueError("the patient has an outstanding invitation")  # invitation_outstanding
        if len(invitation.code_digest) != 32 or invitation.expires_at <= invitation.issued_at:
            raise ValueError("a digest of 32 bytes, expiring after it is issued")  # the checks
        self.state.invitations[invitation.id] = replace(invitation, redeemed_at=None, redeemed_by=None, revoked_at=None)

    async def by_digest(self, digest: bytes, *, lock: bool = False) -> Invitation | None:
        return next((i for i in self.state.invitations.values() if i.code_digest == digest), None)

    async def get(self, invitation_id: uuid.UUID) -> tuple[Invitation, bool] | None:
        i = self.state.invitations.get(invitation_id)
        return (i, self.state.patients[i.patient_id].user_id is not None) if i else None

    async def redeem(self, invitation_id: uuid.UUID, patient_id: uuid.UUID, user_id: uuid.UUID, at: datetime) -> None:
        p = self.state.patients.get(patient_id)
        if p is not None and p.user_id is None:
            if any(x.user_id == user_id for x in self.state.patients.values()):
                raise AccountLinkedError(str(user_id))
            self.state.patients[patient_id] = replace(p, user_id=user_id)
        i = self.state.invitations.get(invitation_id)
        if i is not None:
            if i.revoked_at is not None:
                raise ValueError("an invitation is never both redeemed and revoked")  # the check
            self.state.invitations[invitation_id] = replace(i, redeemed_at=at, redeemed_by=user_id)


class FakePatientsWork(FakeWork):
    def __init__(self, state: PatientsState, clock: Clock) -> None:
        super().__init__(clock)
        self.patients = FakePatientIndex(state)
        self.clinicians = FakeClinicians(state)
        self.care = FakeCareTeams(state)
        self.grants = FakeEmergencyGrants(state)
        self.records = FakeRecords(state)
        self.lab = FakeLabResults(state)
        self.invitations = FakeInvitations(state)


class FakeChart(FakeUnits[PatientsState, FakePatientsWork]):
    """The patients' units of work in memory."""

    def __init__(self, clock: Clock = utc_now, state: PatientsState | None = None) -> None:
        super().__init__(state or PatientsState(), FakePatientsWork, clock)
