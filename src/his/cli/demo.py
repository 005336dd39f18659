"""``his demo``: fill a running hospital through its public API and play a day of it.

Everything goes through the gateway, as a hospital's staff would: the administrator creates
staff accounts and practitioner profiles, doctors get a week of shifts, reception registers
patients and books the first day's clinics, some patients join a waitlist, and the day is played
out (check-ins, completions, a few cancellations and no-shows).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from zoneinfo import ZoneInfo

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from his.cli.wire import CREATED, SIGNED_IN, SLOTS, USER_CREATED, WAITLIST, NewPatient, Slot

if TYPE_CHECKING:
    from his.cli.demo_ward import WardInvoice

T = TypeVar("T")
R = TypeVar("R")

GIVEN = (
    "Ayşe",
    "Mehmet",
    "Zeynep",
    "Mustafa",
    "Elif",
    "Ahmet",
    "Fatma",
    "Emre",
    "Selin",
    "Can",
    "Deniz",
    "Burak",
    "Merve",
    "Kerem",
    "Ece",
    "Hasan",
    "Leyla",
    "Omar",
    "Sofia",
    "Lukas",
    "Maria",
    "Yusuf",
    "Derya",
    "Ali",
    "Nur",
    "Hakan",
    "Esra",
    "Oğuz",
    "İrem",
    "Cem",
)
FAMILY = (
    "Yılmaz",
    "Kaya",
    "Demir",
    "Şahin",
    "Çelik",
    "Yıldız",
    "Yıldırım",
    "Öztürk",
    "Aydın",
    "Özdemir",
    "Arslan",
    "Doğan",
    "Kılıç",
    "Aslan",
    "Çetin",
    "Kara",
    "Koç",
    "Kurt",
    "Özkan",
    "Şimşek",
    "Polat",
    "Müller",
    "García",
    "Rossi",
    "Novak",
)
CLINICS = (
    ("cardiology", "Dr. Selin Aksoy"),
    ("general_practice", "Dr. Murat Eren"),
    ("pediatrics", "Dr. Canan Tekin"),
    ("orthopedics", "Dr. Levent Güler"),
    ("dermatology", "Dr. Pınar Ateş"),
    ("neurology", "Dr. Kemal Uysal"),
    ("internal_medicine", "Dr. Gül Sezer"),
    ("ophthalmology", "Dr. Tarık Bulut"),
)
PAYERS = (("SGK", 0.6), ("ALLIANZ", 0.15), ("SELF", 0.15), ("NOVA", 0.1))


class DemoError(RuntimeError):
    """The demo cannot go on (the hospital refused something it should accept)."""


@dataclass
class Api:
    """The gateway, as one signed-in user; waits out rate limits (429 + Retry-After)."""

    client: httpx.AsyncClient
    token: str = ""
    seen: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    async def call(
        self,
        method: str,
        path: str,
        *,
        ok: Iterable[int] = (200, 201),
        extra_headers: dict[str, str] | None = None,
        json: Mapping[str, object] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """``json``: the body, a JSON object; ``params``: the query."""
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        headers.update(extra_headers or {})
        for _ in range(50):
            t0 = time.perf_counter()
            r = await self.client.request(method, path, headers=headers, json=json, params=params)
            if r.status_code != 429:
                self.latencies.append(time.perf_counter() - t0)
                break
            await asyncio.sleep(float(r.headers.get("retry-after", "1")))
        self.seen[r.status_code] += 1
        if r.status_code not in ok:
            raise DemoError(f"{method} {path} answered {r.status_code}: {r.text[:300]}")
        return r

    def as_user(self, token: str) -> Api:
        return Api(self.client, token, self.seen, self.latencies)


async def login(api: Api, email: str, password: str) -> Api:
    r = await api.call("POST", "/api/auth/login", json={"email": email, "password": password}, ok=(200, 401))
    if r.status_code == 401:
        raise DemoError(f"cannot sign in as {email}: set HIS_ADMIN_EMAIL / HIS_ADMIN_PASSWORD (or --admin-password)")
    return api.as_user(SIGNED_IN.validate_json(r.content).access_token)


async def gather_limited(
    items: list[T], work: Callable[[T], Awaitable[R]], limit: int, advance: Callable[[], None]
) -> list[R]:
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with gate:
            try:
                return await work(item)
            finally:
                advance()

    return await asyncio.gather(*(one(i) for i in items))


@dataclass
class Hospital:
    admin: Api
    reception: Api
    doctors: list[tuple[str, Api]] = field(default_factory=list)  # (practitioner id, the doctor signed in)
    patients: list[str] = field(default_factory=list)
    payer_of: dict[str, str] = field(default_factory=dict)  # patient id -> payer plan code
    #: Patients with an appointment in the clinics (the ward day admits others).
    in_clinic: set[str] = field(default_factory=set)
    tally: Counter[str] = field(default_factory=Counter)
    #: The hospital's local maildir (`his up` without SMTP), where portal invitations can be read.
    maildir: Path | None = None


async def staff_user(admin: Api, email: str, name: str, roles: list[str]) -> tuple[str, Api]:
    """Create a staff account (a fresh random password, kept only in memory) and sign in as it."""
    password = secrets.token_urlsafe(18)
    r = await admin.call(
        "POST", "/api/admin/users", json={"email": email, "password": password, "full_name": name, "roles": roles}
    )
    return USER_CREATED.validate_json(r.content).user_id, await login(admin.as_user(""), email, password)


def morning(day: date, zone: ZoneInfo, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=zone)


@dataclass(frozen=True)
class Summary:
    """What a demo did, for its closing tables."""

    first_day: str
    practitioners: int
    patients: int
    tally: dict[str, int]
    #: API requests made, and how many had each status.
    requests: int
    statuses: dict[int, int]
    p95_ms: float | None
    seconds: float
    #: The ward day's invoices (none without one).
    invoices: list[WardInvoice]


async def run(
    gateway: str,
    admin_email: str,
    admin_password: str,
    *,
    patients: int,
    clinics: int,
    zone: ZoneInfo,
    console: Console,
    admissions: int = 0,
    maildir: Path | None = None,
) -> Summary:
    rng = random.Random()  # noqa: S311 - made-up demo data, nothing secret
    tag = secrets.token_hex(3)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        admin = await login(Api(client), admin_email, admin_password)
        _, reception = await staff_user(admin, f"reception.{tag}@demo.his.local", "Reception Desk", ["RECEPTIONIST"])
        h = Hospital(admin, reception, maildir=maildir)
        first_day = datetime.now(zone).date() + timedelta(days=1)
        columns = (TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as bar:
            await _clinics(h, clinics, tag, first_day, zone=zone, bar=bar)
            await _patients(h, patients, rng, bar)
            booked = await _book_day(h, first_day, rng, bar)
            waiting = await _waitlist(h, rng, bar)
            await _play_day(h, booked, rng, bar)
            invoices: list[WardInvoice] = []
            if admissions:
                from his.cli.demo_ward import run_ward_day

                invoices = await run_ward_day(h, rng, tag, bar, admissions=admissions)
        await _offers(h, waiting)
    seconds = time.perf_counter() - started
    lat = sorted(admin.latencies)
    return Summary(
        first_day=first_day.isoformat(),
        practitioners=len(h.doctors),
        patients=len(h.patients),
        tally=dict(h.tally),
        requests=sum(admin.seen.values()),
        statuses=dict(sorted(admin.seen.items())),
        p95_ms=round(lat[int(len(lat) * 0.95) - 1] * 1000, 1) if lat else None,
        seconds=round(seconds, 1),
        invoices=invoices,
    )


async def _clinics(h: Hospital, count: int, tag: str, first_day: date, *, zone: ZoneInfo, bar: Progress) -> None:
    chosen = CLINICS[: max(1, min(count, len(CLINICS)))]
    task = bar.add_task("practitioners and a week of shifts", total=len(chosen) * 8)
    for specialty, name in chosen:
        email = f"{name.split()[-1].lower()}.{tag}@demo.his.local".replace("ı", "i").replace("ş", "s")
        sub, doctor = await staff_user(h.admin, email, name, ["DOCTOR"])
        r = await h.admin.call(
            "POST", "/api/practitioners", json={"full_name": name, "specialty": specialty, "user_id": sub}
        )
        pid = CREATED.validate_json(r.content).id
        h.doctors.append((pid, doctor))
        bar.advance(task)
        for offset in range(7):  # a week of day clinics; doctors give themselves their shifts
            day = first_day + timedelta(days=offset)
            start, end = morning(day, zone, 8), morning(day, zone, 16)
            await doctor.call(
                "POST", f"/api/practitioners/{pid}/shifts", json={"start": start.isoformat(), "end": end.isoformat()}
            )
            h.tally["shifts"] += 1
            bar.advance(task)


async def _patients(h: Hospital, count: int, rng: random.Random, bar: Progress) -> None:
    task = bar.add_task("patients registered", total=count)

    async def register(i: int) -> None:
        given, family = rng.choice(GIVEN), rng.choice(FAMILY)
        payer = rng.choices([p for p, _ in PAYERS], [w for _, w in PAYERS])[0]
        born = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 80 * 365))
        body: NewPatient = {
            "given_name": given,
            "family_name": family,
            "birth_date": born.isoformat(),
            "sex": rng.choice(["female", "male"]),
            "email": f"patient{i}.{rng.randrange(10**6)}@example.org",
            "phone": f"+90 5{rng.randrange(10, 60)} {rng.randrange(100, 999)} {rng.randrange(1000, 9999)}",
        }
        if payer != "SELF":
            body["coverage"] = {"payer": payer, "member_id": f"{payer[:2]}{rng.randrange(10**8):08d}"}
        r = await h.reception.call("POST", "/api/patients", json=body, ok=(201, 409))
        if r.status_code == 409:  # a likely duplicate: reception checks the list, and it is someone else
            h.tally["look-alike patients confirmed"] += 1
            confirmed: NewPatient = {**body, "confirm_duplicate": True}
            r = await h.reception.call("POST", "/api/patients", json=confirmed)
        patient = CREATED.validate_json(r.content).id
        h.patients.append(patient)
        h.payer_of[patient] = payer

    await gather_limited(list(range(count)), register, 8, lambda: bar.advance(task))


async def _book_day(h: Hospital, day: date, rng: random.Random, bar: Progress) -> list[tuple[str, Api]]:
    wanted: list[tuple[str, Slot]] = []
    for pid, _ in h.doctors:
        r = await h.reception.call("GET", f"/api/practitioners/{pid}/slots", params={"date": day.isoformat()})
        for slot in SLOTS.validate_json(r.content).items:
            if rng.random() < 0.8:
                wanted.append((pid, slot))
    task = bar.add_task("appointments booked", total=len(wanted))
    booked: list[tuple[str, Api]] = []
    doctor_of = dict(h.doctors)

    async def book(item: tuple[str, Slot]) -> None:
        pid, slot = item
        body = {
            "patient_id": rng.choice(h.patients),
            "practitioner_id": pid,
            "service": "consultation",
            "start": slot.start,
            "end": slot.end,
        }
        r = await h.reception.call("POST", "/api/appointments", json=body, ok=(201, 409))
        if r.status_code == 201:
            h.in_clinic.add(body["patient_id"])
            booked.append((CREATED.validate_json(r.content).id, doctor_of[pid]))
            h.tally["booked"] += 1
        else:
            h.tally["refused: the patient was busy then"] += 1

    await gather_limited(wanted, book, 8, lambda: bar.advance(task))
    return booked


async def _waitlist(h: Hospital, rng: random.Random, bar: Progress) -> list[str]:
    waiting = rng.sample(h.patients, min(10, len(h.patients)))
    task = bar.add_task("patients on the waitlist", total=len(waiting))
    for patient in waiting:
        pid, _ = rng.choice(h.doctors)
        body = {"patient_id": patient, "practitioner_id": pid, "service": "consultation"}
        r = await h.reception.call("POST", "/api/waitlist", json=body, ok=(201, 409))
        h.tally["waitlisted"] += r.status_code == 201
        bar.advance(task)
    return waiting


async def _offers(h: Hospital, waiting: list[str]) -> None:
    """Count the waitlisted patients who were offered a freed slot (offers follow cancellations
    through the event backbone, so give them a moment)."""
    for _ in range(20):
        offered = 0
        for patient in waiting:
            r = await h.reception.call("GET", "/api/waitlist", params={"patient_id": patient})
            offered += any(e.status == "offered" for e in WAITLIST.validate_json(r.content).items)
        if offered >= min(len(waiting), h.tally["cancelled"]):
            break
        await asyncio.sleep(0.25)
    h.tally["offered a freed slot"] = offered


async def _play_day(h: Hospital, booked: list[tuple[str, Api]], rng: random.Random, bar: Progress) -> None:
    task = bar.add_task("the day played out", total=len(booked))

    async def play(item: tuple[str, Api]) -> None:
        aid, doctor = item
        roll = rng.random()
        if roll < 0.06:
            await h.reception.call("POST", f"/api/appointments/{aid}/cancel")
            h.tally["cancelled"] += 1
        elif roll < 0.10:
            await h.reception.call("POST", f"/api/appointments/{aid}/no-show")
            h.tally["no-show"] += 1
        else:
            await h.reception.call("POST", f"/api/appointments/{aid}/check-in")
            await doctor.call("POST", f"/api/appointments/{aid}/complete")
            h.tally["completed"] += 1

    await gather_limited(booked, play, 8, lambda: bar.advance(task))


def render(console: Console, summary: Summary) -> None:
    table = Table(title=f"his demo — clinics of {summary.first_day}", show_header=False)
    table.add_row("practitioners (with a week of shifts)", str(summary.practitioners))
    table.add_row("patients registered", str(summary.patients))
    for k, v in summary.tally.items():
        table.add_row(k, str(v))
    table.add_row("API requests (status: count)", ", ".join(f"{k}: {v}" for k, v in summary.statuses.items()))
    table.add_row("request p95", f"{summary.p95_ms} ms")
    table.add_row("took", f"{summary.seconds} s")
    console.print(table)
    if summary.invoices:
        from his.cli.demo_ward import render_invoices

        render_invoices(console, summary.invoices)
