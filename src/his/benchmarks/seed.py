"""Fill a private hospital through its public API so that every booking of a run can succeed.

The administrator creates receptionist accounts (one per simulated desk) and practitioners,
gives each practitioner 24-hour shifts on consecutive days, and reception registers patients.
``Plan.body(i)`` is the i-th booking of the run: practitioner ``i mod P`` at that practitioner's
``i div P``-th free consultation slot, for patient ``i mod N``. With at least as many patients as
practitioners, the bookings that share a time go to different practitioners *and* different
patients, and the same practitioner's slots never overlap, so every booking should answer 201;
anything else is an error the benchmark reports.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypedDict, TypeVar

import asyncpg
import httpx

from his.benchmarks.harness import BenchmarkError
from his.kernel.json import JsonMapping, JsonObject, object_of

T = TypeVar("T")
R = TypeVar("R")
SERVICE = "consultation"
SLOT = timedelta(minutes=20)  # a consultation (his.scheduling.domain.SERVICE_TYPES)
SHIFT = timedelta(hours=24)  # the longest shift practitioners accept
SLOTS_PER_DAY = SHIFT // SLOT


class SlotsExhaustedError(BenchmarkError):
    """The run booked more than the seeded calendars hold; seed more practitioners or days."""


class SeedFacts(TypedDict):
    """What ``seed`` created, and how long it took."""

    desks: int
    practitioners: int
    shifts: int
    patients: int
    slots: int
    seconds: float


@dataclass(frozen=True)
class Plan:
    tokens: list[str]
    practitioners: list[str]
    patients: list[str]
    first_day: datetime
    days: int
    _headers: list[bytes] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if len(self.patients) < len(self.practitioners):
            raise ValueError("need at least as many patients as practitioners")
        self._headers.extend(
            f"authorization: Bearer {t}\r\ncontent-type: application/json\r\n".encode() for t in self.tokens
        )

    @property
    def capacity(self) -> int:
        return len(self.practitioners) * self.days * SLOTS_PER_DAY

    def body(self, i: int) -> bytes:
        if i >= self.capacity:
            raise SlotsExhaustedError(f"all {self.capacity} seeded slots are booked")
        p = len(self.practitioners)
        start = self.first_day + (i // p) * SLOT
        return json.dumps(
            {
                "patient_id": self.patients[i % len(self.patients)],
                "practitioner_id": self.practitioners[i % p],
                "start": start.isoformat(),
                "end": (start + SLOT).isoformat(),
                "service": SERVICE,
            }
        ).encode()

    def headers(self, i: int) -> bytes:
        """The i-th booking's headers: its desk's token (desks take turns)."""
        return self._headers[i % len(self._headers)]


async def limited(items: list[T], work: Callable[[T], Awaitable[R]], limit: int) -> list[R]:
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with gate:
            return await work(item)

    return await asyncio.gather(*(one(i) for i in items))


async def call(client: httpx.AsyncClient, token: str, path: str, body: JsonMapping) -> JsonObject:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    r = await client.post(path, json=body, headers=headers)
    if r.status_code not in (200, 201):
        raise BenchmarkError(f"seeding: POST {path} answered {r.status_code}: {r.text[:200]}")
    return object_of(r.json())


def text(answer: JsonObject, key: str) -> str:
    """``answer[key]``, which the API answers as a string (an id, a token)."""
    value = answer[key]
    if not isinstance(value, str):
        raise BenchmarkError(f"seeding: expected a string {key}, got {value!r}")
    return value


async def desk(client: httpx.AsyncClient, admin: str, n: int, tag: str) -> str:
    """A receptionist account (random password, kept in memory only), signed in: its access token."""
    email, password = f"desk{n}.{tag}@bench.his.local", secrets.token_urlsafe(18)
    await call(
        client,
        admin,
        "/api/admin/users",
        {"email": email, "password": password, "full_name": f"Desk {n}", "roles": ["RECEPTIONIST"]},
    )
    return text(await call(client, "", "/api/auth/login", {"email": email, "password": password}), "access_token")


async def practitioner(client: httpx.AsyncClient, admin: str, n: int, first_day: datetime, days: int) -> str:
    body = {"full_name": f"Dr. Bench {n}", "specialty": "general_practice"}
    pid = text(await call(client, admin, "/api/practitioners", body), "id")
    for d in range(days):
        start = first_day + d * SHIFT
        await call(
            client,
            admin,
            f"/api/practitioners/{pid}/shifts",
            {"start": start.isoformat(), "end": (start + SHIFT).isoformat()},
        )
    return pid


async def patient(client: httpx.AsyncClient, token: str, n: int, family: str = "Patient") -> str:
    """Register patient ``n``; another ``family`` keeps a second seeding clear of the duplicate check."""
    born = datetime(1950, 1, 1, tzinfo=UTC) + timedelta(days=(n * 37) % 25_000)
    body = {
        "given_name": "Bench",
        "family_name": f"{family}{n}",
        "birth_date": born.date().isoformat(),
        "sex": ("female", "male")[n % 2],
    }
    return text(await call(client, token, "/api/patients", body), "id")


async def seed(
    gateway: str, admin_email: str, admin_password: str, *, desks: int, practitioners: int, patients: int, days: int
) -> tuple[Plan, SeedFacts]:
    """Create desks, practitioners with shifts from tomorrow (UTC) on, and patients; returns the plan."""
    tag = secrets.token_hex(3)
    first_day = datetime.combine(datetime.now(UTC).date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        login = {"email": admin_email, "password": admin_password}
        admin = text(await call(client, "", "/api/auth/login", login), "access_token")
        # Password hashing (argon2id) bounds how fast accounts are made; identity runs two at a time.
        tokens = await limited(list(range(desks)), lambda n: desk(client, admin, n, tag), 4)
        pids = await limited(list(range(practitioners)), lambda n: practitioner(client, admin, n, first_day, days), 8)
        pats = await limited(list(range(patients)), lambda n: patient(client, tokens[n % desks], n), 8)
    plan = Plan(tokens, pids, pats, first_day, days)
    return plan, {
        "desks": desks,
        "practitioners": practitioners,
        "shifts": practitioners * days,
        "patients": patients,
        "slots": plan.capacity,
        "seconds": time.perf_counter() - started,
    }


async def wait_known(admin_dsn: str, patients: list[str], timeout: float = 60.0) -> float:
    """Wait until scheduling has learned every patient from ``patient.registered`` (its steady state:
    a booking then needs no gRPC call to patients); returns the seconds waited."""
    started = time.perf_counter()
    conn = await asyncpg.connect(admin_dsn)
    try:
        while True:
            known = int(
                await conn.fetchval(
                    "SELECT count(*) FROM scheduling.known_patient WHERE patient_id = ANY($1::uuid[])", patients
                )
            )
            if known == len(patients):
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise BenchmarkError(f"scheduling learned only {known} of {len(patients)} patients in {timeout:.0f}s")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
