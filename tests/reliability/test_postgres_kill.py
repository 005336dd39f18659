"""PostgreSQL killed (``kill -9`` of its postmaster) during a burst of bookings, admissions and
desk payments through the gateway of a real ``his up``, which starts it again.

Promises: every write a client was told succeeded (201) survives the crash, and every event of
it is published exactly once; a write whose client got no clear answer (a 503, a timeout, a cut
connection) may be there or not, and is then published once if it is there.

What can break them: a commit answered before it is on disk. ``SET LOCAL synchronous_commit = off``
in the unit of work does exactly that, and a crash then loses the last commits the server had
not flushed. The durability guard refuses to start on it (tests/integration/test_durability_guard.py);
this hospital runs with ``HIS_ALLOW_UNSAFE_DURABILITY=1`` so that the crash alone must catch it.

The fault is proved to land: each kill happens while requests are in flight (started before it,
answered after), the postmaster's pid changes, some requests fail while the server is down, and
``his up`` logs the death and the restart.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from his.infra.nats import free_port
from his.kernel.bus import connect
from his.kernel.events import stream_name
from his.reliability.history import History
from tests.e2e.harness import Hospital, create_user, register_patient
from tests.support.waiting import wait_for, wait_until

KILLS = 3
PRACTITIONERS = 3
ADMITTED = 30  # patients admitted during the burst, one admission each
WORKERS = {"booking": 3, "admission": 2, "payment": 3}
PAUSE, MAX_PAUSE = 0.1, 1.0  # a client's back-off after unclear answers (seconds)
FLOWING = 10  # writes acknowledged since the last restart before the next kill
BOOKED = "his.scheduling.appointment.booked.v1"
ADMITTED_EVENT = "his.admissions.admission.admitted.v1"
PAID = "his.billing.payment.received.v1"


@pytest.fixture(scope="module")
def hospital(open_tmp: Callable[[str], Path]) -> Iterator[Hospital]:
    h = Hospital(
        open_tmp("pgkill") / "data",
        free_port(),
        HIS_GATEWAY_RATE_PER_IP="100000",
        HIS_GATEWAY_RATE_PER_SUBJECT="100000",
        HIS_GATEWAY_BURST="100000",
        HIS_ALLOW_UNSAFE_DURABILITY="1",
    )
    h.start()
    yield h
    if h.proc is not None and h.proc.poll() is None:
        h.stop()


def day_at(hours: float) -> datetime:
    base = (datetime.now(UTC) + timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    return base + timedelta(hours=hours)


def postmaster_pid(h: Hospital) -> int:
    return int((h.data / "pg" / "postmaster.pid").read_text().split()[0])


@dataclass
class Request:
    kind: str
    key: Hashable
    started: float
    answered: float = 0.0
    outcome: str = ""  # "told", "uncertain" or "refused"


@dataclass
class Burst:
    """The requests of the burst (what each client was told, and when) and the kills."""

    history: History = field(default_factory=History)
    requests: list[Request] = field(default_factory=list)
    kills: list[tuple[float, int, int]] = field(default_factory=list)  # (when, old pid, new pid)
    stop: bool = False

    def told_since(self, t: float) -> int:
        return sum(1 for r in self.requests if r.outcome == "told" and r.answered > t)

    async def send(self, kind: str, key: Hashable, call: Awaitable[httpx.Response]) -> str:
        """Send one request and record what its client was told; returns the outcome."""
        req = Request(kind, key, time.monotonic())
        self.requests.append(req)
        try:
            r: httpx.Response | None = await call
        except httpx.HTTPError:
            r = None
        req.answered = time.monotonic()
        if r is not None and r.status_code == 201:
            req.outcome = "told"
            self.history.tell(key)
        elif r is None or r.status_code >= 500:
            req.outcome = "uncertain"
            self.history.uncertain(key)
        else:
            req.outcome = "refused"
            self.history.refuse(key)
        return req.outcome


class Client:
    """One client of the burst: after an unclear answer it waits before its next request, longer
    each time (as a desk's software backs off from a 503), and not at all after a clear one."""

    def __init__(self, burst: Burst) -> None:
        self.burst, self.pause = burst, 0.0

    async def send(self, kind: str, key: Hashable, call: Awaitable[httpx.Response]) -> None:
        if await self.burst.send(kind, key, call) == "uncertain":
            self.pause = min(MAX_PAUSE, max(PAUSE, 2 * self.pause))
            await asyncio.sleep(self.pause)  # the client's back-off: a pace, not a synchronisation
        else:
            self.pause = 0.0


@dataclass
class Setup:
    admin: dict[str, str]
    clerk: dict[str, str]
    clerk_id: str
    practitioners: list[str]
    booking_patients: list[str]
    admit_patients: list[str]
    ward: str
    invoice: str


def prepare(h: Hospital) -> Setup:
    gw, admin = h.gateway, h.login()
    clerk_id, clerk = create_user(h, admin, "BILLING", "pgkill")

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = httpx.post(f"{gw}{path}", json=body, headers=admin, timeout=20)
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    doctors = []
    for n in range(PRACTITIONERS):
        doctor = post("/api/practitioners", {"full_name": f"Dr. Kill {n}", "specialty": "general_practice"})["id"]
        post(f"/api/practitioners/{doctor}/shifts", {"start": day_at(0).isoformat(), "end": day_at(24).isoformat()})
        doctors.append(str(doctor))
    with ThreadPoolExecutor(8) as pool:
        registered = pool.map(lambda n: register_patient(h, admin, f"Kill{n}"), range(PRACTITIONERS + ADMITTED + 1))
        patients = [str(p["id"]) for p in registered]
    ward = post(
        "/api/wards",
        {
            "name": f"Kill {uuid.uuid4().hex[:6]}",
            "type": "general",
            "daily_rate": "100000.00",
            "currency": "TRY",
            "beds": ADMITTED + 1,
        },
    )["id"]
    payer = patients[-1]
    stay = post("/api/admissions", {"patient_id": payer, "ward_id": ward, "practitioner_id": doctors[0]})
    post(f"/api/admissions/{stay['id']}/discharge", {})
    invoices: list[str] = []

    def issued() -> bool:
        r = httpx.get(f"{gw}/api/invoices", params={"patient_id": payer}, headers=admin, timeout=10)
        invoices[:] = [i["id"] for i in r.json()["items"] if i["status"] == "open"]
        return bool(invoices)

    wait_until(issued, what="the stay's invoice")
    return Setup(
        admin, clerk, clerk_id, doctors, patients[:PRACTITIONERS], patients[PRACTITIONERS:-1], str(ward), invoices[0]
    )


async def dsn(h: Hospital) -> str:
    return str(h.state()["admin_dsn"])


async def known_to_scheduling(h: Hospital, patients: list[str]) -> bool:
    conn = await asyncpg.connect(await dsn(h))
    try:
        n = await conn.fetchval(
            "SELECT count(*) FROM scheduling.known_patient WHERE patient_id = ANY($1::uuid[])", patients
        )
    finally:
        await conn.close()
    return bool(n == len(patients))


async def book(burst: Burst, client: httpx.AsyncClient, s: Setup, slots: Iterator[tuple[int, int]]) -> None:
    me = Client(burst)
    for doctor, slot in slots:
        if burst.stop:
            return
        start = day_at(slot / 3)  # 20-minute consultations back to back
        body = {
            "patient_id": s.booking_patients[doctor],
            "practitioner_id": s.practitioners[doctor],
            "service": "consultation",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=20)).isoformat(),
        }
        await me.send(
            "booking",
            ("booking", s.practitioners[doctor], start),
            client.post("/api/appointments", json=body, headers=s.admin),
        )


async def admit(burst: Burst, client: httpx.AsyncClient, s: Setup, patients: Iterator[str]) -> None:
    me = Client(burst)
    for patient in patients:
        if burst.stop:
            return
        body = {"patient_id": patient, "ward_id": s.ward, "practitioner_id": s.practitioners[0]}
        await me.send("admission", ("admission", patient), client.post("/api/admissions", json=body, headers=s.admin))


async def pay(burst: Burst, client: httpx.AsyncClient, s: Setup, keys: Iterator[int]) -> None:
    me = Client(burst)
    for n in keys:
        if burst.stop:
            return
        key = f"pgkill-{n}"
        await me.send(
            "payment",
            ("payment", key),
            client.post(
                f"/api/invoices/{s.invoice}/payments",
                headers=s.clerk | {"Idempotency-Key": key},
                json={"amount": "1.00", "currency": "TRY", "method": "cash"},
            ),
        )


async def kill_postgres(h: Hospital, burst: Burst) -> None:
    for k in range(KILLS):
        since = burst.kills[-1][0] if burst.kills else 0.0
        await wait_for(partial(flowing, burst, since), timeout=60, what=f"writes acknowledged before kill {k + 1}")
        old = postmaster_pid(h)
        at = time.monotonic()
        os.kill(old, signal.SIGKILL)
        await wait_for(partial(restarted, h, old), timeout=60, what=f"PostgreSQL restarted after kill {k + 1}")
        burst.kills.append((at, old, postmaster_pid(h)))
    await wait_for(partial(flowing, burst, burst.kills[-1][0]), timeout=60, what="writes after the last kill")
    burst.stop = True


async def flowing(burst: Burst, since: float) -> bool:
    return burst.told_since(since) >= FLOWING


async def restarted(h: Hospital, old: int) -> bool:
    try:
        return postmaster_pid(h) != old
    except (OSError, ValueError, IndexError):  # gone, or being written by the new server
        return False


async def observe_database(h: Hospital, s: Setup, burst: Burst) -> dict[str, Hashable]:
    """Each write of the burst found in the database, as the history's keys; returns the key of
    each id the events carry (appointment, admission and payment ids)."""
    conn = await asyncpg.connect(await dsn(h))
    try:
        booked = await conn.fetch(
            "SELECT id, practitioner_id, lower(during) AS start FROM scheduling.appointment "
            "WHERE practitioner_id = ANY($1::uuid[])",
            s.practitioners,
        )
        admitted = await conn.fetch(
            "SELECT id, patient_id FROM admissions.admission WHERE patient_id = ANY($1::uuid[])", s.admit_patients
        )
        paid = await conn.fetch(
            "SELECT k.key, p.id FROM billing.idempotency_key k JOIN billing.payment p "
            "ON p.id = (k.response_body::jsonb->>'id')::uuid WHERE k.actor = $1::uuid",
            s.clerk_id,
        )
    finally:
        await conn.close()
    by_id: dict[str, Hashable] = {}
    for r in booked:
        by_id[str(r["id"])] = ("booking", str(r["practitioner_id"]), r["start"])
    for r in admitted:
        by_id[str(r["id"])] = ("admission", str(r["patient_id"]))
    for r in paid:
        by_id[str(r["id"])] = ("payment", r["key"])
    burst.history.observe("database", by_id.values())
    return by_id


async def outbox_drained(h: Hospital) -> bool:
    conn = await asyncpg.connect(await dsn(h))
    try:
        waiting = 0
        for schema in ("scheduling", "admissions", "billing"):
            waiting += await conn.fetchval(f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL")
    finally:
        await conn.close()
    return bool(waiting == 0)


async def observe_stream(h: Hospital, s: Setup, by_id: dict[str, Hashable], burst: Burst) -> Counter[str]:
    """The events of the burst's writes held by the streams, as the history's keys (an event
    of a write the database does not hold is kept under its own id: unexpected)."""
    nc = await connect(str(h.state()["nats_url"]), name="test-pgkill", identity=h.operator())
    js = nc.jetstream()
    fields = {BOOKED: "appointment_id", ADMITTED_EVENT: "admission_id", PAID: "payment_id"}
    types: Counter[str] = Counter()
    ours = set(s.booking_patients + s.admit_patients)
    try:
        for service in ("scheduling", "admissions", "billing"):
            info = await js.stream_info(stream_name(service))
            if info.state.messages == 0:  # no write of this kind was told in the burst (first_seq is 0)
                continue
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(stream_name(service), seq)
                if msg.subject not in fields or msg.data is None:
                    continue
                data = orjson.loads(msg.data)["data"]
                if data.get("patient_id") not in ours and data.get("invoice_id") != s.invoice:
                    continue  # an event of the set-up (the stay that made the invoice)
                ident = str(data[fields[msg.subject]])
                types[msg.subject] += 1
                burst.history.observe("stream", [by_id.get(ident, ("event of an unknown write", ident))])
    finally:
        await nc.close()
    return types


def in_flight(burst: Burst, at: float) -> int:
    return sum(1 for r in burst.requests if r.started < at < r.answered)


def told_just_before(burst: Burst, at: float) -> int:
    return sum(1 for r in burst.requests if r.outcome == "told" and at - 0.1 <= r.answered <= at)


def failed_after(burst: Burst, at: float, until: float) -> int:
    return sum(1 for r in burst.requests if r.outcome == "uncertain" and at <= r.answered <= until)


async def test_every_acknowledged_write_survives_postgres_killed_mid_burst(hospital: Hospital) -> None:
    h = hospital
    t0 = time.monotonic()
    s = await asyncio.to_thread(prepare, h)
    await wait_for(lambda: known_to_scheduling(h, s.booking_patients), what="the patients known to scheduling")
    burst = Burst()
    slots = iter([(d, n) for n in range(72) for d in range(PRACTITIONERS)])
    admits, keys = iter(s.admit_patients), itertools.count()
    limits = httpx.Limits(max_connections=sum(WORKERS.values()))
    async with httpx.AsyncClient(base_url=h.gateway, timeout=15, limits=limits) as client:
        workers = [book(burst, client, s, slots) for _ in range(WORKERS["booking"])]
        workers += [admit(burst, client, s, admits) for _ in range(WORKERS["admission"])]
        workers += [pay(burst, client, s, keys) for _ in range(WORKERS["payment"])]
        t1 = time.monotonic()
        await asyncio.gather(kill_postgres(h, burst), *workers)
    t2 = time.monotonic()

    # The fault landed: mid-request, a new postmaster each time, requests failed while it was down.
    ends = [at for at, _, _ in burst.kills[1:]] + [burst.requests[-1].answered]
    for (at, old, new), until in zip(burst.kills, ends, strict=True):
        print(
            f"[kill] pid {old} -> {new}: {in_flight(burst, at)} requests in flight, "
            f"{told_just_before(burst, at)} acknowledged in the 100 ms before, "
            f"{failed_after(burst, at, until)} failed until the next kill"
        )
        assert old != new
        assert in_flight(burst, at) > 0, "a kill landed while no request was in flight"
        assert failed_after(burst, at, until) > 0, "no request failed while PostgreSQL was down"
    log = h.log.read_text(errors="replace")
    assert log.count("PostgreSQL is back") >= KILLS, log[-3000:]
    assert "was killed (SIGKILL); restarting it" in log

    by_id = await observe_database(h, s, burst)
    await wait_for(lambda: outbox_drained(h), timeout=60, what="the outboxes published")
    types = await observe_stream(h, s, by_id, burst)
    outcomes = Counter((r.kind, r.outcome) for r in burst.requests)
    print(f"[pgkill] {len(burst.requests)} requests {dict(outcomes)}; events {dict(types)}")
    verdict = burst.history.check()
    print(f"[pgkill] {verdict}")
    print(f"[pgkill] set-up {t1 - t0:.1f}s, burst {t2 - t1:.1f}s, checks {time.monotonic() - t2:.1f}s")
    for line in h.log.read_text(errors="replace").splitlines():
        if "PostgreSQL" in line:
            print(f"[his up] {line}")
    assert verdict.ok, str(verdict)
