"""Bookings at three times what the hospital can serve: every request is answered, no write is lost.

A hospital of its own (the test changes its load), with the gateway's per-address limits raised
so that the overload reaches scheduling instead of being cut at the first limiter (every request
comes from one address here, as it would from a busy reverse proxy). First a few seconds of
back-to-back bookings measure what it can carry (successful bookings per second); then three
times that rate arrives open-loop, each booking on a task of its own, for several seconds.

Every request must be answered within the client's timeout with 201, 409, 429 or 503 (the last
two with ``Retry-After``), never 500 or 504. What clients were told is checked against
scheduling's table and the stream with the shared history checker: every 201 is in the table
and its ``appointment.booked`` event in the stream exactly once, nothing refused exists (a 4xx,
or the gateway's "busy" 503, given when it found no connection to scheduling in time and sent
nothing), and any other 503 (or a timeout) may go either way. Afterwards an ordinary booking succeeds again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from his.benchmarks.seed import Plan, seed, wait_known
from his.cli.state import operator_identity
from his.infra.nats import free_port
from his.kernel import bus
from his.reliability.history import History
from tests.e2e.harness import ADMIN, Hospital
from tests.support.waiting import wait_for

CLIENT_TIMEOUT = 15.0
PROBE_SECONDS = 3.0
PROBE_USERS = 24
OVERLOAD = 3.0
OVERLOAD_SECONDS = 8.0
MIN_OVERLOAD_SECONDS = 4.0
ANSWERS = {201, 409, 429, 503}
BOOKED = "his.scheduling.appointment.booked.v1"

Key = tuple[str, datetime]  # (practitioner, start): one slot of the plan, one booking


@pytest.fixture(scope="module")
def hospital(open_tmp: Callable[[str], Path]) -> Iterator[Hospital]:
    h = Hospital(
        open_tmp("overload") / "data",
        free_port(),
        HIS_GATEWAY_RATE_PER_IP="1000000",
        HIS_GATEWAY_RATE_PER_SUBJECT="1000000",
        HIS_GATEWAY_BURST="1000000",
        HIS_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS="1000",
    )
    h.start()
    yield h
    h.stop()


@dataclass
class Answer:
    key: Key
    status: int | None  # None: no answer within the client's timeout
    seconds: float
    body: bytes = b""
    retry_after: str | None = None


async def post(port: int, path: str, body: bytes, headers: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request on a connection of its own (so no request waits behind another on the client)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nhost: his\r\nconnection: close\r\ncontent-length: {len(body)}\r\n".encode()
            + headers
            + b"\r\n"
        )
        writer.write(head + body)
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        payload = await reader.readexactly(int(fields.get(b"content-length", b"0")))
        return int(lines[0][9:12]), fields, payload
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@dataclass
class Desk:
    port: int
    plan: Plan
    next: int = 0
    answers: list[Answer] = field(default_factory=list)

    def key(self, i: int) -> Key:
        doc = json.loads(self.plan.body(i))
        return doc["practitioner_id"], datetime.fromisoformat(doc["start"])

    async def book(self, intended: float | None = None) -> Answer:
        i, self.next = self.next, self.next + 1
        began = intended if intended is not None else time.perf_counter()
        try:
            async with asyncio.timeout(CLIENT_TIMEOUT):
                status, headers, body = await post(
                    self.port, "/api/appointments", self.plan.body(i), self.plan.headers(i)
                )
            ans = Answer(
                self.key(i),
                status,
                time.perf_counter() - began,
                body,
                headers.get(b"retry-after", b"").decode() or None,
            )
        except TimeoutError:
            ans = Answer(self.key(i), None, time.perf_counter() - began)
        self.answers.append(ans)
        return ans


def unsent(a: Answer) -> bool:
    """A 503 the gateway answered without sending the request (no connection to scheduling in time)."""
    return a.status == 503 and json.loads(a.body).get("detail") == "scheduling is busy; try again shortly"


def p95(answers: list[Answer]) -> float:
    ordered = sorted(a.seconds for a in answers)
    return ordered[max(1, math.ceil(0.95 * len(ordered))) - 1] * 1000.0 if ordered else math.nan


async def capacity(desk: Desk) -> tuple[float, list[Answer]]:
    """Successful bookings per second of ``PROBE_USERS`` clerks booking back to back."""
    deadline = time.perf_counter() + PROBE_SECONDS
    done: list[Answer] = []

    async def clerk() -> None:
        while time.perf_counter() < deadline:
            done.append(await desk.book())

    began = time.perf_counter()
    await asyncio.gather(*(clerk() for _ in range(PROBE_USERS)))
    took = time.perf_counter() - began
    return sum(a.status == 201 for a in done) / took, done


async def overload(desk: Desk, rate: float, seconds: float) -> tuple[float, list[Answer]]:
    """``rate`` bookings per second for ``seconds``, open loop; returns the rate at which they were
    really started, and the answers."""
    total = round(rate * seconds)
    tasks: list[asyncio.Task[Answer]] = []
    start = time.perf_counter() + 0.01
    while len(tasks) < total:
        now = time.perf_counter()
        due = start + len(tasks) / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        tasks.append(asyncio.create_task(desk.book(due)))
    started = total / (time.perf_counter() - start)
    return started, list(await asyncio.gather(*tasks))


async def in_database(hospital: Hospital) -> dict[Key, uuid.UUID]:
    conn = await asyncpg.connect(str(hospital.state()["admin_dsn"]))
    try:
        rows = await conn.fetch("SELECT id, practitioner_id, lower(during) AS start FROM scheduling.appointment")
        return {(str(r["practitioner_id"]), r["start"]): r["id"] for r in rows}
    finally:
        await conn.close()


async def no_backlog(hospital: Hospital) -> bool:
    conn = await asyncpg.connect(str(hospital.state()["admin_dsn"]))
    try:
        return not await conn.fetchval("SELECT count(*) FROM scheduling.outbox WHERE published_at IS NULL")
    finally:
        await conn.close()


async def booked_events(hospital: Hospital) -> list[Key]:
    """Every ``appointment.booked`` event in the stream, in stream order, repeats included."""
    nc = await bus.connect(
        str(hospital.state()["nats_url"]), name="test-overload", identity=operator_identity(hospital.data)
    )
    out: list[Key] = []
    try:
        sub = await nc.jetstream().subscribe(BOOKED, ordered_consumer=True)
        while True:
            try:
                msg = await sub.next_msg(timeout=5)
            except TimeoutError:
                break
            data = json.loads(msg.data)["data"]
            out.append((data["practitioner_id"], datetime.fromisoformat(data["start"])))
            if msg.metadata.num_pending == 0:
                break
        await sub.unsubscribe()
    finally:
        await nc.close()
    return out


async def test_three_times_capacity_answers_every_booking_and_loses_none(hospital: Hospital) -> None:
    plan, _ = await seed(hospital.gateway, ADMIN[0], ADMIN[1], desks=2, practitioners=10, patients=20, days=16)
    await wait_known(str(hospital.state()["admin_dsn"]), plan.patients)
    desk = Desk(hospital.port, plan)

    await asyncio.gather(*(desk.book() for _ in range(PROBE_USERS)))  # the gateway opens its connections
    per_s, probe = await capacity(desk)
    assert per_s > 0 and Counter(a.status for a in probe) == {201: len(probe)}, Counter(a.status for a in probe)
    rate = OVERLOAD * per_s
    # As long as the seeded slots last (a faster machine books more of them each second), and
    # never less than MIN_OVERLOAD_SECONDS of three times the capacity.
    seconds = min(OVERLOAD_SECONDS, (plan.capacity - desk.next - 100) / rate)
    assert seconds >= MIN_OVERLOAD_SECONDS, f"seed more slots: {plan.capacity} for {rate:.0f}/s"
    started, answers = await overload(desk, rate, seconds)

    statuses = Counter(a.status for a in answers)
    report = (
        f"capacity {per_s:.1f}/s (p95 {p95(probe):.0f} ms); offered {rate:.1f}/s for {seconds:.1f} s, "
        f"started {started:.1f}/s; "
        f"statuses {dict(statuses)}; p95 {p95(answers):.0f} ms"
    )
    print(report)
    # The overload landed: three times the capacity was really offered, and it told on the hospital.
    assert started >= 0.9 * rate, report
    shed = statuses[429] + statuses[503]
    assert shed or p95(answers) > 3 * p95(probe), report

    # Recovery: an ordinary booking succeeds again within a few seconds.
    recovered = time.perf_counter()
    while (ans := await desk.book()).status != 201:
        assert ans.status in ANSWERS and time.perf_counter() - recovered < 10, ans
    print(f"recovered in {time.perf_counter() - recovered:.2f}s")

    # Every request was answered, and only as promised.
    assert None not in statuses and set(statuses) <= ANSWERS, report
    for a in desk.answers:
        if a.status in (429, 503):
            assert a.retry_after and int(a.retry_after) > 0, a

    history = History()
    told: dict[Key, uuid.UUID] = {}
    for a in desk.answers:
        if a.status == 201:
            history.tell(a.key)
            told[a.key] = uuid.UUID(json.loads(a.body)["id"])
        elif (a.status is not None and 400 <= a.status < 500) or unsent(a):
            history.refuse(a.key)
        else:
            history.uncertain(a.key)
    await wait_for(lambda: no_backlog(hospital), what="scheduling's outbox to drain")
    rows = await in_database(hospital)
    history.observe("database", rows)
    history.observe("stream", await booked_events(hospital))
    verdict = history.check()
    print(verdict)
    assert verdict.ok, f"{verdict}\n{report}"
    assert {k: rows[k] for k in told} == told  # the id each 201 named is the one stored
