"""``his soak``: a hospital day on a loop, on a private ``his up``, with faults injected at random.

Workers play patients' journeys through the gateway, as the staff of ``his demo`` would:
registration, a clinic visit (booking, check-in, completion) or a ward stay (admission, care
team, a lab order collected and resulted, sometimes a transfer, discharge, the bed released),
then the patient's share paid at the billing desk. Meanwhile, at seeded random moments, one fault
at a time lands on the hospital (``FAULTS``): a service killed with SIGKILL (the supervisor starts
it again), NATS or PostgreSQL stopped and started again, a service frozen for a while.

What each client was told goes into a ``History`` (a 2xx is told, a timeout or a 5xx is
uncertain, a 4xx is refused); at the end, once the hospital has drained, the database, the
streams and billing's invoices are observed and the history checked: nothing lost, nothing
unexpected, nothing duplicated. Every few seconds the run samples each process's memory and each
service's /metrics (outbox age, consumer lag, p95), and it writes a Markdown report with plots
(``soak_report``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypedDict
from zoneinfo import ZoneInfo

import asyncpg
import httpx
from rich.console import Console

from his.benchmarks.hospital import ADMIN_EMAIL, PrivateHospital, rss_mb
from his.cli import scrape, state
from his.cli.ops import scrape_all
from his.cli.settings import OperatorSettings
from his.cli.wire import (
    BEDS,
    CATALOGUE,
    CREATED,
    DISCHARGED,
    INVOICES,
    SIGNED_IN,
    SLOTS,
    USER_CREATED,
    Invoice,
    LabResult,
    LabTest,
    NewPatient,
)
from his.infra.procs import ManagedProcess
from his.kernel import bus
from his.kernel.json import Json, object_of
from his.reliability.history import History, Key, Verdict

#: The faults ``--faults`` may name.
FAULTS = ("kill", "nats", "postgres", "slow")
#: The processes a service fault picks from: those every journey goes through.
ON_THE_PATH = ("gateway", "patients", "scheduling", "admissions")
#: The journeys' operations each of those services answers (the gateway answers all of them).
SERVES = {
    "patients": ("register", "read patient", "care team"),
    "scheduling": ("book", "check in", "complete"),
    "admissions": ("admit", "transfer", "discharge", "release bed"),
}
#: How long a service fault waits for a request to its target to be in flight (then strikes anyway).
AIM_SECONDS = 10.0
#: A request slower than this during a "slow" fault counts as stalled by it.
STALLED = 2.0
#: A journey's later steps wait for an event's effect (billing's invoice, the care team an
#: admission brings) beside the workers; at most this many per worker wait at once, past it the
#: worker waits too.
LATER_PER_WORKER = 2
PRIORITY = ("routine", "urgent")
ZONE = ZoneInfo("Europe/Istanbul")


class SoakError(RuntimeError):
    """The soak could not run (the hospital did not start, the set-up was refused)."""


@dataclass(frozen=True)
class SoakConfig:
    minutes: float
    seed: int = 0
    faults: tuple[str, ...] = FAULTS
    #: Concurrent journeys (each waits a little between its requests: a moderate rate).
    workers: int = 4
    #: Mean seconds between faults (None: about two rounds of every kind over the run).
    fault_every: float | None = None
    #: How long a frozen service stays frozen ("slow").
    slow_seconds: float = 6.0
    #: How long NATS or PostgreSQL stays down before it is started again.
    down_seconds: float = 3.0
    sample_every: float = 5.0
    request_timeout: float = 8.0
    #: Seconds between one worker's requests.
    pace: float = 0.05

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0

    @property
    def window(self) -> float:
        """The width of a p95 window: 5 minutes, or 1 when the run is shorter than 10."""
        return 300.0 if self.minutes >= 10 else 60.0

    def gap(self) -> float:
        if self.fault_every is not None:
            return self.fault_every
        kinds = max(1, len(self.faults))
        return min(120.0, max(8.0, self.seconds * 0.75 / (2 * kinds)))


# --- what the run records ---------------------------------------------------------------------


@dataclass
class Op:
    at: float  # seconds since the start of the load
    name: str
    seconds: float
    outcome: str  # told | refused | uncertain
    write: bool = False  # a POST: its events go through an outbox


class FaultFigures(TypedDict):
    """A fault in the report (``soak.json``)."""

    kind: str
    target: str
    at: float
    recovered_after: float | None
    pid_before: int | None
    pid_after: int | None
    failed_requests: int
    told_while_down: int
    landed: bool
    detail: str


@dataclass
class Fault:
    kind: str
    target: str
    at: float
    recovered_at: float = math.nan
    pid_before: int | None = None
    pid_after: int | None = None
    detail: str = ""
    #: Requests unanswered (timeouts, cut connections, 5xx) or stalled while the fault lasted.
    failed_requests: int = 0
    #: Requests answered while the server was down (NATS: their events waited in the outboxes).
    told_while_down: int = 0
    down: tuple[float, float] = (math.nan, math.nan)

    @property
    def landed(self) -> bool:
        """The process was replaced (or frozen) and the traffic felt it: requests failed or stalled
        while it was down, or, for NATS, writes were committed whose events had to wait."""
        if math.isnan(self.recovered_at):
            return False
        replaced = self.kind == "slow" or (self.pid_after is not None and self.pid_after != self.pid_before)
        felt = self.told_while_down > 0 if self.kind == "nats" else self.failed_requests > 0
        return replaced and felt

    def as_dict(self) -> FaultFigures:
        return {
            "kind": self.kind,
            "target": self.target,
            "at": round(self.at, 2),
            "recovered_after": None if math.isnan(self.recovered_at) else round(self.recovered_at - self.at, 2),
            "pid_before": self.pid_before,
            "pid_after": self.pid_after,
            "failed_requests": self.failed_requests,
            "told_while_down": self.told_while_down,
            "landed": self.landed,
            "detail": self.detail,
        }


@dataclass
class Sample:
    at: float
    rss_mb: dict[str, float]
    outbox_age: dict[str, float]
    outbox_backlog: dict[str, float]
    consumer_pending: dict[str, float]
    p95_ms: dict[str, float]


@dataclass
class Run:
    config: SoakConfig
    started: float = field(default_factory=time.monotonic)
    ops: list[Op] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    histories: dict[str, History] = field(
        default_factory=lambda: {"visits": History(), "stays": History(), "payments": History(), "events": History()}
    )
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    invariants: dict[str, int] = field(default_factory=dict)
    tally: Counter[str] = field(default_factory=Counter)
    #: Requests in flight now, by operation: a service fault strikes while its target has one.
    inflight: Counter[str] = field(default_factory=Counter)
    #: Journeys' later steps running now (see ``later``).
    waiting: set[asyncio.Task[None]] = field(default_factory=set)
    room: asyncio.Semaphore | None = None
    drain_seconds: float = 0.0
    load_seconds: float = 0.0
    startup_seconds: float = 0.0
    setup_seconds: float = 0.0
    stop_seconds: float = 0.0
    total_seconds: float = 0.0

    def now(self) -> float:
        return time.monotonic() - self.started

    @property
    def lost(self) -> int:
        return sum(len(v.lost) for v in self.verdicts.values())

    @property
    def duplicated(self) -> int:
        return sum(len(v.duplicated) for v in self.verdicts.values())

    @property
    def unexpected(self) -> int:
        return sum(len(v.unexpected) for v in self.verdicts.values())

    @property
    def ok(self) -> bool:
        return (
            all(v.ok for v in self.verdicts.values())
            and not any(self.invariants.values())
            and bool(self.verdicts)
            and all(f.landed for f in self.faults)
        )


# --- the client ---------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int | None
    #: The answer's JSON (None when it had none).
    body: Json
    outcome: str

    @property
    def told(self) -> bool:
        return self.outcome == "told"

    def tallied(self, op: str) -> str:
        """The tally's line for this answer: a refusal names its status and problem title."""
        if self.outcome != "refused":
            return f"{op} {self.outcome}"
        title = self.body.get("title") if isinstance(self.body, dict) else None
        return f"{op} refused {self.status}" + (f" ({title})" if title else "")


@dataclass
class Client:
    """One signed-in user at the gateway; every request's outcome and latency goes to the run."""

    http: httpx.AsyncClient
    run: Run
    token: str = ""
    #: The user's credentials, to sign in again before the access token expires (15 minutes).
    session: Session | None = None

    async def call(
        self,
        op: str,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        reads: int = 1,
        json: Mapping[str, object] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Answer:
        """``reads``: how often a read may be tried again when the answer is unclear (a GET is safe);
        ``json``: the body, a JSON object; ``params``: the query."""
        if self.session is not None:
            self.token = await self.session.fresh(self)
        hdrs = {"authorization": f"Bearer {self.token}"} if self.token else {}
        hdrs.update(headers or {})
        answer = Answer(None, None, "uncertain")
        for attempt in range(max(1, reads)):
            t0 = time.monotonic()
            self.run.inflight[op] += 1
            try:
                r = await self.http.request(method, path, headers=hdrs, json=json, params=params)
            except httpx.HTTPError:
                answer = Answer(None, None, "uncertain")
            else:
                if r.status_code == 429:
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                    continue
                outcome = "told" if r.status_code < 400 else "uncertain" if r.status_code >= 500 else "refused"
                body: Json
                try:
                    body = r.json()
                except ValueError:
                    body = None
                answer = Answer(r.status_code, body, outcome)
            finally:
                self.run.inflight[op] -= 1
            self.run.ops.append(Op(t0 - self.run.started, op, time.monotonic() - t0, answer.outcome, method == "POST"))
            if answer.outcome != "uncertain":
                break
            if attempt + 1 < reads:
                await asyncio.sleep(0.5 * (attempt + 1))
        return answer

    async def must(
        self,
        op: str,
        method: str,
        path: str,
        *,
        json: Mapping[str, object] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Json:
        """A set-up step: tried again while unclear; refused means the soak cannot go on."""
        a = await self.call(op, method, path, reads=10, json=json, params=params)
        if not a.told:
            raise SoakError(f"{method} {path} answered {a.status}: {str(a.body)[:300]}")
        return a.body

    def as_user(self, token: str) -> Client:
        return Client(self.http, self.run, token)


#: A signed-in user signs in again once their access token is this old (it lives 15 minutes).
SIGN_IN_AGAIN = 600.0


@dataclass
class Session:
    """A user's sign-in, renewed by signing in again with the password before the token expires,
    as staff at a desk stay signed in through a long shift. (Refresh tokens rotate and a reused
    one revokes its family, so a renewal whose answer a fault lost would sign the user out.)"""

    email: str
    password: str
    token: str
    signed_in: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def fresh(self, client: Client) -> str:
        """The access token, renewed first when it is ``SIGN_IN_AGAIN`` old (if the sign-in fails,
        the old token is used while it lasts, and the next request tries again)."""
        if time.monotonic() - self.signed_in < SIGN_IN_AGAIN:
            return self.token
        async with self.lock:
            if time.monotonic() - self.signed_in >= SIGN_IN_AGAIN:
                anon = Client(client.http, client.run)
                a = await anon.call(
                    "sign in again", "POST", "/api/auth/login", json={"email": self.email, "password": self.password}
                )
                if a.told:
                    self.token, self.signed_in = SIGNED_IN.validate_python(a.body).access_token, time.monotonic()
                client.run.tally[a.tallied("sign in again")] += 1
        return self.token


async def login(anon: Client, email: str, password: str) -> Client:
    body = await anon.must("login", "POST", "/api/auth/login", json={"email": email, "password": password})
    token = SIGNED_IN.validate_python(body).access_token
    return Client(anon.http, anon.run, token, Session(email, password, token))


async def staff(admin: Client, tag: str, role: str) -> tuple[str, Client]:
    password = uuid.uuid4().hex + "Aa1!"
    email = f"{role.lower()}.{tag}@soak.his.local"
    body = await admin.must(
        "create user",
        "POST",
        "/api/admin/users",
        json={"email": email, "password": password, "full_name": role.title(), "roles": [role]},
    )
    return USER_CREATED.validate_python(body).user_id, await login(admin.as_user(""), email, password)


# --- the hospital's staff and its day ---------------------------------------------------------------


@dataclass
class Roster:
    """The doctors' shifts, a day at a time: the set-up opens one day, and ``keep_up`` opens the
    next while the free slots run low, so a run creates only the slots its journeys book."""

    reception: Client
    doctors: dict[str, Client]  # practitioner id -> the doctor signed in
    rng: random.Random
    first: date
    days: int = 0
    slots: asyncio.Queue[tuple[str, str, str]] = field(default_factory=asyncio.Queue)  # (practitioner, start, end)

    async def add_day(self) -> int:
        """Every doctor's shift on the next day, and its free slots queued in a shuffled order."""
        day = self.first + timedelta(days=self.days)
        self.days += 1
        found = await asyncio.gather(*(self._shift(pid, doctor, day) for pid, doctor in self.doctors.items()))
        slots = [s for per_doctor in found for s in per_doctor]
        self.rng.shuffle(slots)
        for s in slots:
            self.slots.put_nowait(s)
        return len(slots)

    async def _shift(self, pid: str, doctor: Client, day: date) -> list[tuple[str, str, str]]:
        start = datetime(day.year, day.month, day.day, 8, tzinfo=ZONE)
        end = datetime(day.year, day.month, day.day, 18, tzinfo=ZONE)
        await doctor.must(
            "create shift",
            "POST",
            f"/api/practitioners/{pid}/shifts",
            json={"start": start.isoformat(), "end": end.isoformat()},
        )
        body = await self.reception.must(
            "free slots",
            "GET",
            f"/api/practitioners/{pid}/slots",
            params={"date": day.isoformat(), "service": "vaccination"},
        )
        return [(pid, s.start, s.end) for s in SLOTS.validate_python(body).items]

    async def keep_up(self, run: Run, stop: asyncio.Event, low: int = 100) -> None:
        """Open the next day whenever fewer than ``low`` slots are left. A day that a fault refused
        (its shift answered unclearly, then 409 when sent again) is skipped: the next one opens."""
        while not stop.is_set():
            if self.slots.qsize() < low:
                try:
                    run.tally["slots opened during the load"] += await self.add_day()
                except SoakError:
                    run.tally["days of shifts not opened (a fault)"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)


@dataclass
class Staff:
    admin: Client
    reception: Client
    clerk: Client
    nurse: Client
    nurse_id: str
    lab: Client
    roster: Roster
    wards: list[str]
    catalogue: tuple[LabTest, ...]

    @property
    def doctors(self) -> dict[str, Client]:
        return self.roster.doctors

    @property
    def slots(self) -> asyncio.Queue[tuple[str, str, str]]:
        return self.roster.slots


async def doctor(admin: Client, tag: str, n: int) -> tuple[str, Client]:
    sub, signed_in = await staff(admin, f"{tag}{n}", "DOCTOR")
    body = {"full_name": f"Dr. Soak {n}", "specialty": "general_practice", "user_id": sub}
    created = await admin.must("create practitioner", "POST", "/api/practitioners", json=body)
    return CREATED.validate_python(created).id, signed_in


async def ward(admin: Client, tag: str, name: str, kind: str, beds: int) -> str:
    body = {
        "name": f"{name} {tag}",
        "type": kind,
        "daily_rate": "2500.00",
        "currency": "TRY",
        "beds": beds,
        "rooms": beds // 2,
    }
    return CREATED.validate_python(await admin.must("create ward", "POST", "/api/wards", json=body)).id


async def set_up(anon: Client, password: str, rng: random.Random, doctors: int = 4) -> Staff:
    """The staff, the doctors with one day of shifts, two wards: every request that does not
    depend on another is sent at once."""
    admin = await login(anon, ADMIN_EMAIL, password)
    tag = uuid.uuid4().hex[:6]
    people = await asyncio.gather(
        *(staff(admin, tag, role) for role in ("RECEPTIONIST", "BILLING", "NURSE", "LAB_TECH")),
        *(doctor(admin, tag, n) for n in range(doctors)),
    )
    (_, reception), (_, clerk), (nurse_id, nurse), (_, lab) = people[:4]
    general, icu, catalogue = await asyncio.gather(
        ward(admin, tag, "Soak General", "general", 40),
        ward(admin, tag, "Soak ICU", "icu", 8),
        reception.must("lab catalogue", "GET", "/api/lab/catalog"),
    )
    first = datetime.now(ZONE).date() + timedelta(days=1)
    roster = Roster(reception, dict(people[4:]), rng, first)
    await roster.add_day()
    tests = CATALOGUE.validate_python(catalogue).items
    return Staff(admin, reception, clerk, nurse, nurse_id, lab, roster, [general, icu], tests)


def history_key(kind: str, ident: str) -> tuple[str, str]:
    return (kind, ident)


async def register(s: Staff, rng: random.Random, run: Run) -> tuple[str, bool] | None:
    """A new patient; the second value says whether they pay themselves (no insurer)."""
    self_pay = rng.random() < 0.6
    body: NewPatient = {
        "given_name": rng.choice(("Ayşe", "Mehmet", "Zeynep", "Emre", "Selin", "Can")),
        "family_name": rng.choice(("Yılmaz", "Kaya", "Demir", "Şahin", "Çelik")),
        "birth_date": (date(1940, 1, 1) + timedelta(days=rng.randrange(80 * 365))).isoformat(),
        "sex": rng.choice(("female", "male")),
        "confirm_duplicate": True,
    }
    if not self_pay:
        body["coverage"] = {"payer": "SGK", "member_id": f"SG{rng.randrange(10**8):08d}"}
    a = await s.reception.call("register", "POST", "/api/patients", json=body)
    if not a.told:
        run.tally[a.tallied("register")] += 1
        return None
    run.tally["patients registered"] += 1
    return CREATED.validate_python(a.body).id, self_pay


async def visit(s: Staff, rng: random.Random, run: Run) -> None:
    """A clinic visit: booked, checked in, then (beside the worker) the consultation."""
    who = await register(s, rng, run)
    if who is None:
        return
    patient, self_pay = who
    aid, pid = None, ""
    for _ in range(3):
        try:
            pid, start, end = s.slots.get_nowait()
        except asyncio.QueueEmpty:
            run.tally["no free slot left"] += 1
            return
        body = {"patient_id": patient, "practitioner_id": pid, "service": "vaccination", "start": start, "end": end}
        a = await s.reception.call("book", "POST", "/api/appointments", json=body)
        if a.told:
            aid = CREATED.validate_python(a.body).id
            break
        run.tally[a.tallied("book")] += 1
        if a.outcome == "uncertain":
            return
    if aid is None:
        return
    run.tally["appointments booked"] += 1
    a = await s.reception.call("check in", "POST", f"/api/appointments/{aid}/check-in")
    if not a.told:
        run.tally[a.tallied("check-in")] += 1
        return
    await later(run, consultation(s, rng, run, patient=patient, self_pay=self_pay, pid=pid, appointment=aid))


async def consultation(
    s: Staff, rng: random.Random, run: Run, *, patient: str, self_pay: bool, pid: str, appointment: str
) -> None:
    """The doctor opens the patient's record (the booking puts them in care once it has reached
    patients), completes the visit, and the patient pays at the desk."""
    doctor = s.doctors[pid]
    if not await until(lambda: in_care(doctor, patient), 30.0, every=0.5):
        run.tally["care not reached in 30 s (visit)"] += 1
    a = await doctor.call("complete", "POST", f"/api/appointments/{appointment}/complete")
    record(run.histories["visits"], history_key("visit", appointment), a)
    if not a.told:
        run.tally[a.tallied("complete")] += 1
        return
    run.tally["visits completed"] += 1
    if self_pay:
        await pay(s, rng, run, patient, "visit")


async def stay(s: Staff, rng: random.Random, run: Run) -> None:
    """A ward stay: admitted, the nurse on the care team, a lab order resulted, maybe a transfer,
    discharged, the bed released; the patient pays their share at the desk."""
    who = await register(s, rng, run)
    if who is None:
        return
    patient, self_pay = who
    pid = rng.choice(list(s.doctors))
    a = await s.reception.call(
        "admit", "POST", "/api/admissions", json={"patient_id": patient, "practitioner_id": pid, "ward_id": s.wards[0]}
    )
    if not a.told:
        run.tally[a.tallied("admit")] += 1
        return
    admission = CREATED.validate_python(a.body).id
    run.tally["patients admitted"] += 1
    await later(run, in_the_ward(s, rng, run, patient=patient, self_pay=self_pay, pid=pid, admission=admission))


async def in_the_ward(
    s: Staff, rng: random.Random, run: Run, *, patient: str, self_pay: bool, pid: str, admission: str
) -> None:
    """The stay once the admission has reached patients (the doctor and nurse are in care)."""
    doctor = s.doctors[pid]
    if await until(lambda: care_team(s, patient), 30.0, every=0.5) and await until(
        lambda: in_care(doctor, patient), 30.0, every=0.5
    ):
        await lab_work(s, rng, run, doctor, patient)
    else:
        run.tally["care not reached in 30 s"] += 1
    if rng.random() < 0.3:
        ward = rng.choice(s.wards)
        a = await s.reception.call("transfer", "POST", f"/api/admissions/{admission}/transfer", json={"ward_id": ward})
        run.tally[a.tallied("transfer")] += 1
    a = await doctor.call("discharge", "POST", f"/api/admissions/{admission}/discharge")
    record(run.histories["stays"], history_key("stay", admission), a)
    if not a.told:
        run.tally[a.tallied("discharge")] += 1
        return
    run.tally["patients discharged"] += 1
    bed = DISCHARGED.validate_python(a.body or {}).bed_id
    if bed is not None:
        r = await s.nurse.call("release bed", "POST", f"/api/beds/{bed}/release", reads=3)
        run.tally[r.tallied("bed release")] += 1
    if self_pay:
        await pay(s, rng, run, patient, "admission")


async def housekeeping(s: Staff, run: Run, stop: asyncio.Event, every: float = 5.0) -> None:
    """Every few seconds, each bed left in cleaning is cleaned and released: those a transfer
    vacated, and those whose discharge's answer was lost (the journey did not learn the bed)."""
    while not stop.is_set():
        a = await s.nurse.call("beds to clean", "GET", "/api/beds", params={"state": "cleaning"})
        for bed in BEDS.validate_python(a.body or {}).items if a.told else ():
            r = await s.nurse.call("release bed", "POST", f"/api/beds/{bed.id}/release")
            run.tally[r.tallied("housekeeping: bed release")] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def later(run: Run, step: Awaitable[None]) -> None:
    """Run a journey's later step, one that waits for an event's effect, beside the worker, which
    goes on to its next patient as a front desk does: a consumer lagging or NATS down must not
    stop the registrations and bookings that need neither (a NATS outage is felt by those writes
    being answered). At most ``LATER_PER_WORKER`` per worker wait at once."""
    if run.room is None:
        run.room = asyncio.Semaphore(run.config.workers * LATER_PER_WORKER)
    room = run.room
    await room.acquire()

    async def guarded() -> None:
        try:
            await step
        except Exception as exc:  # noqa: BLE001 - tallied; the soak's verdict is the histories'
            run.tally[f"later step failed: {type(exc).__name__}"] += 1
        finally:
            room.release()

    task = asyncio.create_task(guarded())
    run.waiting.add(task)
    task.add_done_callback(run.waiting.discard)


async def care_team(s: Staff, patient: str) -> bool:
    a = await s.reception.call("care team", "POST", f"/api/patients/{patient}/care-team", json={"user_id": s.nurse_id})
    return a.told or a.status == 409


async def in_care(doctor: Client, patient: str) -> bool:
    return (await doctor.call("read patient", "GET", f"/api/patients/{patient}")).told


async def lab_work(s: Staff, rng: random.Random, run: Run, doctor: Client, patient: str) -> None:
    from his.cli.demo_ward import _value

    tests = rng.sample(s.catalogue, min(len(s.catalogue), rng.randint(1, 2)))
    body = {"patient_id": patient, "tests": [t.code for t in tests], "priority": rng.choice(PRIORITY)}
    a = await doctor.call("lab order", "POST", "/api/lab/orders", json=body)
    if not a.told:
        run.tally[a.tallied("lab order")] += 1
        return
    order = CREATED.validate_python(a.body).id
    for action in ("collect", "start"):
        a = await s.lab.call(f"lab {action}", "POST", f"/api/lab/orders/{order}/{action}")
        if not a.told:
            run.tally[a.tallied(f"lab {action}")] += 1
            return
    results: list[LabResult] = []
    for t in tests:
        value = _value(t, rng)
        result: LabResult = {"code": t.code, "value": value, "unit": t.unit}
        if value == "negative":
            result["flag"] = "N"
        results.append(result)
    a = await s.lab.call("lab results", "POST", f"/api/lab/orders/{order}/results", json={"results": results})
    run.tally[a.tallied("lab results")] += 1


async def pay(s: Staff, rng: random.Random, run: Run, patient: str, kind: str) -> None:
    """Wait for billing's invoice (made from events), then pay the patient's share at the desk with
    one idempotency key, sent again while the answer is unclear, as a careful client does."""
    invoice: Invoice | None = None

    async def issued() -> bool:
        nonlocal invoice
        a = await s.clerk.call("list invoices", "GET", "/api/invoices", params={"patient_id": patient})
        items = INVOICES.validate_python(a.body or {}).items if a.told else ()
        found = [i for i in items if i.kind == kind and i.status in ("open", "partially_paid")]
        invoice = found[0] if found else None
        return invoice is not None

    if not await until(issued, 30.0, every=0.5) or invoice is None:
        run.tally["invoice not seen in 30 s (checked at the end)"] += 1
        return
    if invoice.patient_share is None:
        raise SoakError(f"invoice {invoice.id} is {invoice.status} but has no patient share")
    share = Decimal(invoice.patient_share) - Decimal(invoice.paid or "0")
    if share <= 0:
        return
    key = str(uuid.uuid4())
    body = {"amount": str(share), "currency": invoice.currency, "method": rng.choice(("card", "cash"))}
    history = run.histories["payments"]
    for attempt in range(6):
        a = await s.clerk.call(
            "desk payment",
            "POST",
            f"/api/invoices/{invoice.id}/payments",
            json=body,
            headers={"Idempotency-Key": key},
        )
        record(history, key, a)
        if a.outcome != "uncertain":
            break
        run.tally["desk payment sent again (same key)"] += 1
        await asyncio.sleep(1.0 + attempt)
    run.tally[a.tallied("desk payment")] += 1


def record(history: History, key: Key, a: Answer) -> None:
    if a.told:
        history.tell(key)
    elif a.outcome == "uncertain":
        history.uncertain(key)
    else:
        history.refuse(key)


async def until(check: Callable[[], Awaitable[bool]], timeout: float, every: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)


async def worker(s: Staff, rng: random.Random, run: Run, stop: asyncio.Event) -> None:
    """Journeys one after another. While every later step's place is taken (the clinicians wait
    for events: a lagging consumer, NATS down), the desk registers walk-in patients instead of
    waiting, so writes go on whatever the bus does."""
    while not stop.is_set():
        if run.room is not None and run.room.locked():
            await register(s, rng, run)
            run.tally["walk-ins registered while the clinicians waited"] += 1
        else:
            journey = visit if rng.random() < 0.6 else stay
            await journey(s, rng, run)
        await asyncio.sleep(run.config.pace)


# --- faults -----------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    stat = _read(f"/proc/{pid}/stat")
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Infra:
    """PostgreSQL and NATS as they run now. PostgreSQL's pid is read from its ``postmaster.pid``
    (the supervisor starts it again after a crash); NATS is the supervisor's at first, then the one
    the soak started again after stopping it (the supervisor does not restart NATS)."""

    pids: dict[str, int]
    restarted: dict[str, ManagedProcess] = field(default_factory=dict)
    logs: Path = Path()
    #: PostgreSQL's ``postmaster.pid``: the supervisor starts a killed PostgreSQL again.
    pg_pidfile: Path | None = None

    def pid(self, name: str) -> int:
        if name == "postgres" and self.pg_pidfile is not None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(self.pg_pidfile.read_text().split()[0])
        proc = self.restarted.get(name)
        return proc.pid if proc is not None else self.pids[name]

    def restart(
        self, name: str, sig: int, down: Callable[[], None], timeout: float = 40.0
    ) -> tuple[int, int, float, float]:
        """Stop the server cleanly (``sig``), leave it down while ``down()`` blocks, then start it again
        with the same command line, as the same user (PostgreSQL runs as its own user when the
        hospital runs as root). Returns the old and new pids and when it was down (monotonic)."""
        old = self.pid(name)
        args = _read(f"/proc/{old}/cmdline").split("\0")[:-1]  # empty arguments kept (``-h ""``)
        uid = gid = None
        for line in _read(f"/proc/{old}/status").splitlines():
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
            elif line.startswith("Gid:"):
                gid = int(line.split()[1])
        if not args:
            raise SoakError(f"cannot read the command line of {name} (pid {old})")
        prior = self.restarted.pop(name, None)
        if prior is not None:
            prior.stop(sig, timeout=timeout)
        else:
            os.kill(old, sig)
            deadline = time.monotonic() + timeout
            while _alive(old) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(old):
                raise SoakError(f"{name} (pid {old}) did not stop within {timeout:.0f} s")
        stopped = time.monotonic()
        down()  # the fault: the server is down
        user = (uid, gid) if uid is not None and gid is not None and uid != os.getuid() else None
        started = time.monotonic()  # the end of the outage: from here the server may answer
        proc = ManagedProcess.spawn(name, args, log_file=self.logs / f"{name}-restarted.log", user=user, cwd=Path("/"))
        self.restarted[name] = proc
        time.sleep(0.5)
        if proc.poll() is not None:
            raise SoakError(f"{name} did not start again (code {proc.returncode}): {proc.tail()}")
        return old, proc.pid, stopped, started

    def stop(self) -> None:
        for name in ("nats", "postgres"):  # the services are stopped by then
            proc = self.restarted.pop(name, None)
            if proc is not None:
                proc.stop(signal.SIGINT if name == "postgres" else signal.SIGTERM, timeout=30)


#: No fault starts in the last tenth of the run: the hospital settles before the load stops.
QUIET_TAIL = 0.1


def fault_plan(cfg: SoakConfig, rng: random.Random) -> list[tuple[float, str]]:
    """When each fault lands (seconds into the load), in rounds in which every kind lands once in
    a shuffled order: the first a few seconds in, none in the last tenth of the run."""
    plan: list[tuple[float, str]] = []
    t = min(5.0, cfg.seconds * 0.05)
    end = cfg.seconds * (1 - QUIET_TAIL)
    while cfg.faults:
        kinds = list(cfg.faults)
        rng.shuffle(kinds)
        for kind in kinds:
            if t > end:
                return plan
            plan.append((t, kind))
            t += cfg.gap() * rng.uniform(0.5, 1.5)
    return plan


def due(plan: list[tuple[float, str]], now: float, cfg: SoakConfig) -> str | None:
    """The fault to inject at ``now``, taken from the plan, if one is due. Faults run one at a
    time, so one may come due late; once the run is in its quiet tail none starts (they stay in
    the plan, counted as not injected)."""
    if not plan or now < plan[0][0] or now > cfg.seconds * (1 - QUIET_TAIL):
        return None
    return plan.pop(0)[1]


def busy(inflight: Counter[str], target: str) -> bool:
    """Whether a request that ``target`` answers is in flight (any request, for the gateway)."""
    ops = SERVES.get(target)
    return any(n > 0 and (ops is None or op in ops) for op, n in inflight.items())


def run_state(hospital: PrivateHospital) -> state.RunState:
    """The private hospital's run-state file (``his.cli.state``), checked; ``ValueError`` without one."""
    st = state.read(hospital.data)
    if st is None:
        raise ValueError(f"no run state in {hospital.data}")
    return st


class Injector:
    def __init__(
        self, hospital: PrivateHospital, infra: Infra, run: Run, rng: random.Random, say: Callable[[str], None]
    ) -> None:
        self.hospital, self.infra, self.run, self.rng, self.say = hospital, infra, run, rng, say

    def services(self) -> dict[str, int]:
        return {n: s.pid for n, s in run_state(self.hospital).services.items() if s.pid}

    def on_the_path(self) -> list[tuple[str, int]]:
        """The processes every journey goes through (a fault elsewhere would not be felt at once)."""
        return sorted((n, p) for n, p in self.services().items() if n in ON_THE_PATH)

    async def inject(self, kind: str) -> Fault:
        run = self.run
        if kind == "kill":
            target, pid = self.rng.choice(self.on_the_path())
            await self._aim(target)
            f = Fault(kind, target, run.now(), pid_before=pid)
            os.kill(pid, signal.SIGKILL)
            f.detail = "SIGKILL; the supervisor starts it again"
            f.pid_after = await self._new_pid(target, pid, 60.0)
            await self._ready(target, 60.0)
        elif kind == "slow":
            target, pid = self.rng.choice(self.on_the_path())
            await self._aim(target)
            f = Fault(kind, target, run.now(), pid_before=pid, pid_after=pid)
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(run.config.slow_seconds)  # the fault itself: the process does nothing
                felt(run, f)
                if not f.failed_requests and await self._aim(target):
                    await asyncio.sleep(STALLED + 0.5)  # frozen until a request to it has stalled
            finally:
                os.kill(pid, signal.SIGCONT)
            f.detail = f"SIGSTOP for {run.config.slow_seconds:g} s, then SIGCONT: every handler in flight stalls"
        elif kind == "postgres":
            # As a crash meets it: SIGKILL of the postmaster, and his up's supervisor starts it
            # again (crash recovery replays the write-ahead log); nothing here restarts it.
            old = self.infra.pid("postgres")
            f = Fault(kind, "postgres", run.now(), pid_before=old)
            os.kill(old, signal.SIGKILL)
            f.down = (run.now(), math.nan)
            f.pid_after = await self._new_postmaster(old, 90.0)
            f.down = (f.down[0], run.now())
            felt(run, f)
            f.detail = "SIGKILL of the postmaster; his up's supervisor starts it again on the same data"
            await self._all_ready(90.0)
        else:
            f = Fault(kind, "nats", run.now())
            loop = asyncio.get_running_loop()

            def hold() -> None:
                asyncio.run_coroutine_threadsafe(self._hold_down(f), loop).result()

            f.pid_before, f.pid_after, down, up = await asyncio.to_thread(
                self.infra.restart, "nats", signal.SIGTERM, hold
            )
            f.down = (down - run.started, up - run.started)
            f.detail = "clean stop (SIGTERM), started again with the same configuration"
            await self._all_ready(90.0)
        f.recovered_at = run.now()
        return f

    async def _hold_down(self, f: Fault) -> None:
        """Keep a server down ``down_seconds``, and then until the traffic has felt it (at most
        ``AIM_SECONDS`` more): for NATS a write answered while it is down (its events wait in an
        outbox), for PostgreSQL a request unanswered."""
        run = self.run
        f.down = (run.now(), math.nan)
        await asyncio.sleep(run.config.down_seconds)

        async def met() -> bool:
            f.down = (f.down[0], run.now())
            felt(run, f)
            return (f.told_while_down if f.kind == "nats" else f.failed_requests) > 0

        await until(met, AIM_SECONDS, every=0.1)

    async def _aim(self, target: str) -> bool:
        """Wait (at most ``AIM_SECONDS``) until a request to ``target`` is in flight, so that the
        fault meets one: a service between two journeys' requests would be killed unnoticed."""

        async def aimed() -> bool:
            return busy(self.run.inflight, target)

        return await until(aimed, AIM_SECONDS, every=0.02)

    async def _new_pid(self, name: str, old: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError):
                pid = self.services().get(name)
                if pid and pid != old and _alive(pid):
                    return pid
            await asyncio.sleep(0.1)
        return None

    async def _new_postmaster(self, old: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.infra.pid("postgres")
            if pid != old and _alive(pid):
                return pid
            await asyncio.sleep(0.1)
        return None

    async def _ready(self, name: str, timeout: float) -> bool:
        ident = self.hospital.operator()
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0, verify=ident.client_context()) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError, OSError, KeyError, ValueError):
                    if (await client.get(f"{self.hospital.service_url(name)}/readyz")).status_code == 200:
                        return True
                await asyncio.sleep(0.2)
        return False

    async def _all_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for name in self.services():
            if not await self._ready(name, max(1.0, deadline - time.monotonic())):
                raise SoakError(f"{name} was not ready again {timeout:.0f} s after the fault")


# --- sampling -----------------------------------------------------------------------------------


class Sampler:
    def __init__(self, hospital: PrivateHospital, infra: Infra, run: Run) -> None:
        self.hospital, self.infra, self.run = hospital, infra, run
        self.settings = OperatorSettings(data_dir=hospital.data)
        self.before: dict[str, scrape.Scrape] = {}

    async def sample(self) -> Sample:
        scrapes = await scrape_all(self.settings)
        procs = {n: s.pid for n, s in run_state(self.hospital).services.items() if s.pid}
        procs |= {name: self.infra.pid(name) for name in ("postgres", "nats")}
        p95: dict[str, float] = {}
        for name, now in scrapes.items():
            w = scrape.window(self.before.get(name), now)
            if w.seconds and w.p95 is not None:
                p95[name] = w.p95 * 1000.0
        self.before = scrapes

        def gauge(metric: str) -> dict[str, float]:
            return {n: s.gauges.get(metric, 0.0) for n, s in scrapes.items() if n != "gateway"}

        s = Sample(
            self.run.now(),
            rss_mb(procs),
            gauge("his_outbox_oldest_age_seconds"),
            gauge("his_outbox_backlog"),
            gauge("his_consumer_pending"),
            p95,
        )
        self.run.samples.append(s)
        return s

    async def loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError, ValueError, KeyError, httpx.HTTPError):
                await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.run.config.sample_every)


# --- the end: drain, observe, check ---------------------------------------------------------


OBSERVE = {
    "visits": (
        "SELECT id::text FROM scheduling.appointment WHERE status = 'completed' ORDER BY id",
        "SELECT e.source_id::text FROM billing.invoice i JOIN billing.encounter e ON e.id = i.encounter_id "
        "WHERE e.kind = 'appointment' AND i.kind = 'visit' AND i.status NOT IN ('draft', 'void') ORDER BY i.created_at",
    ),
    "stays": (
        "SELECT id::text FROM admissions.admission WHERE status = 'discharged' ORDER BY id",
        "SELECT e.source_id::text FROM billing.invoice i JOIN billing.encounter e ON e.id = i.encounter_id "
        "WHERE e.kind = 'admission' AND i.kind = 'admission' AND i.status NOT IN ('draft', 'void') "
        "ORDER BY i.created_at",
    ),
}
PAYMENTS = (
    "SELECT p.id::text AS payment, k.key FROM billing.payment p LEFT JOIN billing.idempotency_key k "
    "ON k.response_status = 201 AND (k.response_body::jsonb ->> 'id') = p.id::text "
    "WHERE p.kind = 'payment' AND p.method IN ('cash', 'card') ORDER BY p.created_at"
)
INVARIANTS = {
    "double-booked practitioner slots": (
        "SELECT count(*) FROM scheduling.appointment a JOIN scheduling.appointment b ON a.practitioner_id = "
        "b.practitioner_id AND a.id < b.id AND a.during && b.during WHERE a.status NOT IN ('cancelled', 'no_show') "
        "AND b.status NOT IN ('cancelled', 'no_show')"
    ),
    "beds held by two admissions": (
        "SELECT count(*) FROM (SELECT bed_id FROM admissions.admission WHERE status = 'active' "
        "GROUP BY bed_id HAVING count(*) > 1) AS twice"
    ),
}
STREAMS = {
    "visits": ("HIS_SCHEDULING", "his.scheduling.appointment.completed.v1"),
    "stays": ("HIS_ADMISSIONS", "his.admissions.admission.discharged.v1"),
    "payments": ("HIS_BILLING", "his.billing.payment.received.v1"),
}


async def drained(hospital: PrivateHospital, run: Run, timeout: float) -> float:
    """Wait until every outbox is empty and every consumer caught up, twice in a row, and every
    told visit and stay has its invoice; returns the seconds waited."""
    settings = OperatorSettings(data_dir=hospital.data)
    t0 = time.monotonic()
    quiet = 0
    while time.monotonic() - t0 < timeout:
        scrapes = await scrape_all(settings)
        backlog = sum(
            s.gauges.get("his_outbox_backlog", 0) + s.gauges.get("his_consumer_pending", 0) for s in scrapes.values()
        )
        quiet = quiet + 1 if backlog == 0 and len(scrapes) >= 2 else 0
        if quiet >= 2 and await invoiced(hospital, run):
            break
        await asyncio.sleep(1.0)
    return time.monotonic() - t0


async def invoiced(hospital: PrivateHospital, run: Run) -> bool:
    conn = await asyncpg.connect(hospital.admin_dsn)
    try:
        for name in ("visits", "stays"):
            have = {r[0] for r in await conn.fetch(OBSERVE[name][1])}
            if any(str(k[1]) not in have for k in run.histories[name].told if isinstance(k, tuple)):
                return False
        return True
    finally:
        await conn.close()


async def observe(hospital: PrivateHospital, run: Run) -> None:
    conn = await asyncpg.connect(hospital.admin_dsn)
    try:
        for name, (owner, billed) in OBSERVE.items():
            kind = name[:-1]
            run.histories[name].observe("database", [(kind, r[0]) for r in await conn.fetch(owner)])
            run.histories[name].observe(
                "stream", [(kind, a) for a in await stream_keys(hospital, *STREAMS[name], "aggregate_id")]
            )
            run.histories[name].observe("billing invoices", [(kind, r[0]) for r in await conn.fetch(billed)])
        rows = await conn.fetch(PAYMENTS)
        key_of = {r["payment"]: r["key"] for r in rows}
        run.histories["payments"].observe(
            "database", [r["key"] or ("payment without its key", r["payment"]) for r in rows]
        )
        paid = await stream_keys(hospital, *STREAMS["payments"], "payment_id")
        run.histories["payments"].observe("stream", [key_of.get(p) or ("payment not in the database", p) for p in paid])
        for what, sql in INVARIANTS.items():
            run.invariants[what] = int(await conn.fetchval(sql))
    finally:
        await conn.close()
    events = run.histories["events"]
    ids = await stream_keys(hospital, "", "", "id")
    for i in ids:
        events.uncertain(i)  # any event may be in the streams; none may be there twice
    events.observe("streams", ids)
    run.verdicts = {name: h.check() for name, h in run.histories.items()}


async def stream_keys(hospital: PrivateHospital, stream: str, subject: str, field_name: str) -> list[str]:
    """``field_name`` of every event of ``subject`` in ``stream`` (the envelope's, or its data's),
    in stream order; with no stream, the event id of every event of every his stream."""
    ident = hospital.operator()
    nc = await bus.connect(run_state(hospital).nats_url, name="his-soak", identity=ident, connect_timeout=5)
    out: list[str] = []
    try:
        js = nc.jetstream(timeout=10.0)
        names = [stream] if stream else [str(i.config.name) for i in await js.streams_info()]
        for name in names:
            if not name.startswith("HIS_"):
                continue
            last = (await js.stream_info(name)).state.last_seq
            seq = 0
            while seq < last:
                try:
                    msg = await js.get_msg(name, seq + 1, subject=subject or None, next=True)
                except Exception:  # noqa: BLE001 - nats-py raises NotFoundError past the last match
                    break
                seq = int(msg.seq or 0)
                doc = object_of(json.loads(msg.data or b"{}"))
                data = doc.get("data", {})
                value = doc.get(field_name, data.get(field_name) if isinstance(data, dict) else None)
                if value is not None:
                    out.append(str(value))
    finally:
        await nc.close()
    return out


# --- the run ------------------------------------------------------------------------------------


async def play(hospital: PrivateHospital, infra: Infra, run: Run, say: Callable[[str], None]) -> None:
    cfg = run.config
    rng = random.Random(cfg.seed)  # noqa: S311 - made-up traffic and fault times, reproducible by seed
    timeout = httpx.Timeout(cfg.request_timeout)
    limits = httpx.Limits(max_connections=cfg.workers * 4)
    async with httpx.AsyncClient(base_url=hospital.gateway, timeout=timeout, limits=limits) as http:
        t0 = time.monotonic()
        staff_ = await set_up(Client(http, run), hospital.password, random.Random(cfg.seed + 3))  # noqa: S311
        run.setup_seconds = time.monotonic() - t0
        slowest = sorted(run.ops, key=lambda o: -o.seconds)[:3]
        slow = ", ".join(f"{o.name} {o.seconds:.1f} s" for o in slowest)
        say(f"set-up: {len(run.ops)} requests, the slowest: {slow}")
        run.ops.clear()
        say(
            f"set up in {run.setup_seconds:.1f} s: {len(staff_.doctors)} doctors, {staff_.slots.qsize()} free "
            f"slots, 2 wards; load for {cfg.minutes:g} min, faults: {', '.join(cfg.faults) or 'none'}"
        )
        run.started = time.monotonic()
        stop = asyncio.Event()
        sampler = Sampler(hospital, infra, run)
        tasks = [
            asyncio.create_task(worker(staff_, random.Random(rng.random()), run, stop))  # noqa: S311
            for _ in range(cfg.workers)
        ]
        tasks.append(asyncio.create_task(sampler.loop(stop)))
        tasks.append(asyncio.create_task(staff_.roster.keep_up(run, stop)))
        tasks.append(asyncio.create_task(housekeeping(staff_, run, stop)))
        injector = Injector(hospital, infra, run, random.Random(cfg.seed + 1), say)  # noqa: S311
        plan = fault_plan(cfg, random.Random(cfg.seed + 2))  # noqa: S311
        next_minute = 60.0
        try:
            while run.now() < cfg.seconds:
                kind = due(plan, run.now(), cfg)
                if kind is not None:
                    f = await injector.inject(kind)
                    run.faults.append(f)
                    felt(run, f)
                    say(
                        f"[{clock(f.at)}] fault {len(run.faults)}: {f.kind} {f.target} (pid {f.pid_before} → "
                        f"{f.pid_after}), back in {f.recovered_at - f.at:.1f} s, {f.failed_requests} requests "
                        f"unanswered or stalled, {f.told_while_down} answered while it was down"
                    )
                if run.now() >= next_minute:
                    say(progress(run, next_minute))
                    next_minute += 60.0
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*run.waiting, return_exceptions=True)
        if plan:
            run.tally["faults not injected (the run was in its quiet tail)"] += len(plan)
        run.load_seconds = run.now()
        for f in run.faults:
            felt(run, f)
    say(f"[{clock(run.load_seconds)}] load stopped; draining")
    run.drain_seconds = await drained(hospital, run, 120.0)
    await observe(hospital, run)
    with contextlib.suppress(OSError, ValueError, KeyError, httpx.HTTPError):
        await Sampler(hospital, infra, run).sample()


def felt(run: Run, f: Fault) -> None:
    """Count the requests the fault left unanswered (or stalled), and those answered while the
    server was down (requests started in flight before it are counted too: they met it)."""
    end = math.inf if math.isnan(f.recovered_at) else f.recovered_at  # NaN: it lasts still
    during = [o for o in run.ops if o.at <= end and o.at + o.seconds >= f.at]
    f.failed_requests = sum(
        1 for o in during if o.outcome == "uncertain" or (f.kind == "slow" and o.seconds >= STALLED)
    )
    lo, hi = f.down
    hi = math.inf if math.isnan(hi) else hi
    f.told_while_down = sum(
        1 for o in run.ops if o.write and o.outcome == "told" and lo <= o.at and o.at + o.seconds <= hi
    )


def clock(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def progress(run: Run, upto: float) -> str:
    recent = [o for o in run.ops if upto - 60.0 <= o.at < upto]
    outcomes = Counter(o.outcome for o in recent)
    lat = sorted(o.seconds for o in recent)
    p95 = lat[max(0, math.ceil(0.95 * len(lat)) - 1)] * 1000 if lat else 0.0
    rss = run.samples[-1].rss_mb if run.samples else {}
    return (
        f"[{clock(upto)}] {len(recent)} requests in the last minute ({outcomes['told']} told, "
        f"{outcomes['refused']} refused, {outcomes['uncertain']} unanswered), p95 {p95:.0f} ms, "
        f"{run.tally['visits completed']} visits and {run.tally['patients discharged']} stays so far, "
        f"{len(run.faults)} faults, RSS total {sum(rss.values()):.0f} MiB"
    )


def main(
    cfg: SoakConfig, *, out_dir: Path, out: Console, err: Console, workdir: Path | None = None, keep: bool = False
) -> int:
    from his.benchmarks.harness import BenchmarkError, Servers
    from his.reliability import soak_report

    def say(line: str) -> None:
        err.print(line, highlight=False, markup=False)

    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    base = Servers.make_workdir(workdir)
    hospital = PrivateHospital(base)
    run = Run(cfg)
    infra = Infra({}, logs=base)
    t0 = time.monotonic()
    say(f"starting a private hospital in {base}")
    try:
        hospital.start()
        procs = hospital.processes()
        infra.pids = {"postgres": procs["postgres"], "nats": procs["nats"]}
        infra.pg_pidfile = hospital.data / "pg" / "postmaster.pid"
        run.startup_seconds = time.monotonic() - t0
        say(f"his up in {hospital.started_in:.1f} s")
        asyncio.run(play(hospital, infra, run, say))
    except (SoakError, BenchmarkError) as exc:
        err.print(f"error: {exc}", markup=False)
        return 2
    finally:
        stopping = time.monotonic()
        hospital.stop()
        infra.stop()
        run.stop_seconds = time.monotonic() - stopping
        run.total_seconds = time.monotonic() - t0
        if not keep:
            import shutil

            shutil.rmtree(base, ignore_errors=True)
    path = soak_report.write(run, out_dir)
    out.print(soak_report.summary(soak_report.figures(run)), markup=False, highlight=False)
    out.print(f"report: {path}", markup=False, highlight=False)
    return 0 if run.ok else 1
