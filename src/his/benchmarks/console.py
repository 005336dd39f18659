"""``his bench console``: the console's day list against the same data as JSON from the API.

On a private hospital (``his up``; ``measure`` also runs against one that is up), it seeds
through the public API a DOCTOR whose practitioner has ``mine`` appointments on one day (their
"my day") and a practitioner with ``full`` appointments on one day (24-hour shifts; more
appointments than a day holds are made by cancelling and booking again: the day list shows every
state). Then, at a constant arrival rate (open model, each request timed from its intended
start), it measures

- ``GET /day-list?day=…`` as the doctor and ``GET /day-list?practitioner_id=…&day=…`` as a
  receptionist, signed in through ``POST /sign-in`` (the ``his_session`` cookie);
- the same data as JSON: ``GET /api/appointments?practitioner_id=&date=&limit=200`` and then
  ``GET /api/patients?id=…`` with the ids it listed (what the page asks the API), one after the
  other, with the same users' access tokens;

page and JSON taking turns in rounds, every answer checked (200, every appointment and patient
there) before it counts; and what the sign-in page and a day list weigh as a browser receives
them (``his.benchmarks.weight``). The ratio of each pair is page p95 / JSON p95.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypedDict, final
from urllib.parse import urlencode, urlsplit

import httpx
import uvloop
from rich.console import Console
from rich.table import Table

from his.benchmarks.harness import BenchmarkError, Latencies, Machine, Servers, machine, open_loop
from his.benchmarks.hospital import ADMIN_EMAIL, PrivateHospital
from his.benchmarks.report import num, wide
from his.benchmarks.seed import call, limited, patient, text
from his.benchmarks.weight import Weight, weigh
from his.benchmarks.wire import Pool
from his.infra.procs import ServerStartError
from his.kernel.json import JsonObject, object_of

TIMEOUT = 30.0
#: The API's page size (``his.kernel.params.MAX_PAGE``): a day list has no next page.
API_PAGE = 200
RATIO_AIM = 1.5
FIRST_PAGE_AIM = 150 * 1024
DAY = timedelta(hours=24)
SERVICES = {"mine": "consultation", "full": "vaccination"}


@dataclass(frozen=True)
class ConsoleConfig:
    #: Appointments on the doctor's own day, and on the other practitioner's.
    mine: int = 60
    full: int = 300
    #: Requests per second of each target (open model), seconds per round, rounds.
    rate_mine: float = 3.0
    rate_full: float = 2.0
    seconds: float = 10.0
    rounds: int = 2
    warmup: int = 5

    @classmethod
    def quick(cls) -> ConsoleConfig:
        return cls(seconds=4.0, rounds=2, warmup=3)

    @classmethod
    def tiny(cls) -> ConsoleConfig:
        """For the smoke test: every path, a handful of appointments, a second or so of load."""
        return cls(mine=4, full=6, rate_mine=5.0, rate_full=5.0, seconds=0.6, rounds=1, warmup=1)


class Cell(TypedDict):
    latency: dict[str, float]
    failed: int
    generator_lag_max_ms: float


class Pair(TypedDict):
    """One day list: the page and the JSON at one rate, and page p95 / JSON p95."""

    what: str
    appointments_seeded: int
    appointments_shown: int
    rate_per_s: float
    page: Cell
    json: Cell
    ratio_p95: float


@final
class ConsoleResults(TypedDict):
    config: dict[str, object]
    seed: dict[str, float]
    pairs: dict[str, Pair]
    weights: dict[str, Weight]
    statuses: dict[str, dict[int, int]]
    notes: list[str]
    errors: list[str]


@final
class ConsoleReport(TypedDict):
    benchmark: str
    machine: Machine
    seconds: float
    results: ConsoleResults


@dataclass
class Staff:
    email: str
    password: str
    user_id: str


@dataclass
class Seeded:
    day: date
    doctor: Staff
    desk: Staff
    mine: str
    full: str
    facts: dict[str, float]


async def account(client: httpx.AsyncClient, admin: str, role: str, tag: str) -> Staff:
    email, password = f"{role.lower()}.{tag}@bench.his.local", secrets.token_urlsafe(18)
    body = {"email": email, "password": password, "full_name": f"{role.title()} {tag}", "roles": [role]}
    made = await call(client, admin, "/api/admin/users", body)
    return Staff(email, password, text(made, "user_id"))


async def token(client: httpx.AsyncClient, who: Staff) -> str:
    return text(
        await call(client, "", "/api/auth/login", {"email": who.email, "password": who.password}), "access_token"
    )


async def get(client: httpx.AsyncClient, path: str, bearer: str, params: dict[str, str]) -> JsonObject:
    r = await client.get(path, params=params, headers={"authorization": f"Bearer {bearer}"})
    if r.status_code != 200:
        raise BenchmarkError(f"seeding: GET {path} answered {r.status_code}: {r.text[:200]}")
    return object_of(r.json())


def items_of(doc: JsonObject) -> list[JsonObject]:
    found = doc.get("items")
    return [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []


async def fill_day(  # noqa: PLR0917 - the day's parts, each named by the caller
    client: httpx.AsyncClient, desk: str, practitioner: str, day: date, patients: list[str], service: str, minutes: int
) -> int:
    """Book ``len(patients)`` appointments for ``practitioner`` on ``day``: slots back to back from
    midnight; when the day is full, the oldest are cancelled and their slots booked again.
    Returns how many were cancelled."""
    slots = int(DAY.total_seconds() // 60) // minutes
    midnight = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    booked: list[str] = []  # ids of the appointments holding time, in slot order
    cancelled, done = 0, 0
    while done < len(patients):
        batch = patients[done : done + slots]

        async def book(n: int, batch: list[str] = batch) -> str:
            start = midnight + timedelta(minutes=minutes * n)
            body = {
                "patient_id": batch[n],
                "practitioner_id": practitioner,
                "service": service,
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=minutes)).isoformat(),
            }
            return text(await call(client, desk, "/api/appointments", body), "id")

        booked = await limited(list(range(len(batch))), book, 8)
        done += len(batch)
        if done < len(patients):
            free = booked[: min(slots, len(patients) - done)]
            await limited(free, lambda a: call(client, desk, f"/api/appointments/{a}/cancel", {}), 8)
            cancelled += len(free)
    return cancelled


async def wait_for_day(client: httpx.AsyncClient, bearer: str, practitioner: str, day: date, count: int) -> float:
    """Until ``bearer`` sees ``count`` appointments on the day list (a doctor sees their patients
    once the appointments' events have put them in the doctor's care); returns the seconds."""
    started = time.perf_counter()
    params = {"practitioner_id": practitioner, "date": day.isoformat(), "limit": str(API_PAGE)}
    while True:
        seen = len(items_of(await get(client, "/api/appointments", bearer, params)))
        if seen >= count:
            return time.perf_counter() - started
        if time.perf_counter() - started > 60:
            raise BenchmarkError(f"the day list shows {seen} of {count} appointments after 60 s")
        await asyncio.sleep(0.2)


async def seed(gateway: str, admin_email: str, admin_password: str, cfg: ConsoleConfig) -> Seeded:
    """A DOCTOR with a practitioner and ``cfg.mine`` appointments on one day, a practitioner with
    ``cfg.full``, a receptionist, and a patient for every appointment; all through the API."""
    tag, started = secrets.token_hex(3), time.perf_counter()
    day = datetime.now(UTC).date() + timedelta(days=2)
    async with httpx.AsyncClient(base_url=gateway, timeout=60) as client:
        admin = text(
            await call(client, "", "/api/auth/login", {"email": admin_email, "password": admin_password}),
            "access_token",
        )
        minutes = {
            str(s.get("code")): int(str(s.get("minutes")))
            for s in items_of(await get(client, "/api/appointments/services", admin, {}))
        }
        doctor, desk = await asyncio.gather(
            account(client, admin, "DOCTOR", tag), account(client, admin, "RECEPTIONIST", tag)
        )
        desk_token = await token(client, desk)
        ids: dict[str, str] = {}
        for key, body in (
            ("mine", {"full_name": f"Dr. My Day {tag}", "specialty": "general_practice", "user_id": doctor.user_id}),
            ("full", {"full_name": f"Dr. Full Day {tag}", "specialty": "general_practice"}),
        ):
            ids[key] = text(await call(client, admin, "/api/practitioners", body), "id")
            start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
            shift = {"start": start.isoformat(), "end": (start + DAY).isoformat()}
            await call(client, admin, f"/api/practitioners/{ids[key]}/shifts", shift)
        people = await limited(
            list(range(cfg.mine + cfg.full)), lambda n: patient(client, desk_token, n, f"Day{tag}x"), 8
        )
        seeded_at = time.perf_counter()
        cancelled = 0
        for key, pats in (("mine", people[: cfg.mine]), ("full", people[cfg.mine :])):
            service = SERVICES[key]
            cancelled += await fill_day(client, desk_token, ids[key], day, pats, service, minutes[service])
        booked_at = time.perf_counter()
        waited = await wait_for_day(client, await token(client, doctor), ids["mine"], day, cfg.mine)
    facts = {
        "patients": float(len(people)),
        "appointments": float(cfg.mine + cfg.full),
        "cancelled_to_fill_the_day": float(cancelled),
        "patients_s": seeded_at - started,
        "appointments_s": booked_at - seeded_at,
        "doctor_sees_their_day_s": waited,
        "seconds": time.perf_counter() - started,
    }
    return Seeded(day, doctor, desk, ids["mine"], ids["full"], facts)


async def sign_in(gateway: str, who: Staff) -> str:
    """The ``his_session`` cookie of a browser signed in through the console's form."""
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        form = {"email": who.email, "password": who.password, "next": "/"}
        r = await client.post("/sign-in", data=form, headers={"origin": gateway})
        cookie = r.cookies.get("his_session")
        if r.status_code != 303 or not cookie:
            raise BenchmarkError(f"signing in to the console answered {r.status_code}: {r.text[:200]}")
        return cookie


ROW = re.compile(rb'<th scope="row">')
SHOWN = re.compile(rb'<th scope="row"><a class="usa-link" href="/patients/')


@dataclass
class Target:
    name: str
    pool: Pool
    op: Callable[[Pool], Awaitable[int]]
    statuses: Counter[int] = field(default_factory=Counter)

    async def once(self) -> None:
        async with asyncio.timeout(TIMEOUT):
            await self.op(self.pool)


def page_op(path: str, cookie: str, rows: int, statuses: Counter[int]) -> Callable[[Pool], Awaitable[int]]:
    headers = f"cookie: his_session={cookie}\r\naccept: text/html\r\n".encode()

    async def op(pool: Pool) -> int:
        status, body = await pool.request("GET", path, b"", headers)
        statuses[status] += 1
        shown = len(SHOWN.findall(body))
        if status != 200 or len(ROW.findall(body)) != rows or shown != rows:
            raise BenchmarkError(f"GET {path}: {status}, {shown} rows with a patient (expected {rows})")
        return rows

    return op


def json_op(
    practitioner: str, day: date, bearer: str, rows: int, statuses: Counter[int]
) -> Callable[[Pool], Awaitable[int]]:
    headers = f"authorization: Bearer {bearer}\r\naccept: application/json\r\n".encode()
    listed = "/api/appointments?" + urlencode(
        {"practitioner_id": practitioner, "date": day.isoformat(), "limit": str(API_PAGE)}
    )

    async def op(pool: Pool) -> int:
        status, body = await pool.request("GET", listed, b"", headers)
        statuses[status] += 1
        found = items_of(object_of(json.loads(body))) if status == 200 else []
        if status != 200 or len(found) != rows:
            raise BenchmarkError(f"GET {listed}: {status}, {len(found)} appointments (expected {rows})")
        ids = list(dict.fromkeys(str(a.get("patient_id")) for a in found))
        path = "/api/patients?" + urlencode([("id", i) for i in ids] + [("limit", str(API_PAGE))])
        status, body = await pool.request("GET", path, b"", headers)
        statuses[status] += 1
        people = items_of(object_of(json.loads(body))) if status == 200 else []
        if status != 200 or len(people) != len(ids):
            raise BenchmarkError(f"GET /api/patients?id=…: {status}, {len(people)} of {len(ids)} patients")
        return rows

    return op


async def timed(
    target: Target, rate: float, seconds: float, samples: Latencies, errors: list[str]
) -> tuple[int, float]:
    async def op(_: int, intended: float) -> None:
        await target.once()
        samples.add(time.perf_counter() - intended)

    result = await open_loop(rate, seconds, op)
    if result.failed:
        errors.append(f"{target.name}: {result.failed} failed, e.g. {result.errors[:2]}")
    return result.failed, result.lag_max_ms


async def pair(  # noqa: PLR0917 - one day list's parts
    what: str,
    page: Target,
    api: Target,
    rate: float,
    cfg: ConsoleConfig,
    seeded: int,
    shown: int,
    errors: list[str],
    say: Callable[[str], None],
) -> Pair:
    for t in (page, api):
        for _ in range(cfg.warmup):
            try:
                await t.once()
            except Exception as exc:  # noqa: BLE001 - reported as an error of the run
                errors.append(f"warm-up {t.name}: {exc}")
    samples = {"page": Latencies(), "json": Latencies()}
    failed = {"page": 0, "json": 0}
    lag = {"page": 0.0, "json": 0.0}
    for r in range(cfg.rounds):
        order = (("page", page), ("json", api)) if r % 2 == 0 else (("json", api), ("page", page))
        for key, t in order:
            say(f"{what}: {t.name} at {rate:g}/s for {cfg.seconds:g}s (round {r + 1} of {cfg.rounds})")
            f, worst = await timed(t, rate, cfg.seconds, samples[key], errors)
            failed[key] += f
            lag[key] = max(lag[key], worst)
    cells = {k: Cell(latency=samples[k].summary(), failed=failed[k], generator_lag_max_ms=lag[k]) for k in samples}
    p95 = samples["page"].percentile(95), samples["json"].percentile(95)
    return {
        "what": what,
        "appointments_seeded": seeded,
        "appointments_shown": shown,
        "rate_per_s": rate,
        "page": cells["page"],
        "json": cells["json"],
        "ratio_p95": p95[0] / p95[1] if p95[1] else math.nan,
    }


async def measure(
    gateway: str, admin_email: str, admin_password: str, cfg: ConsoleConfig, say: Callable[[str], None]
) -> ConsoleResults:
    """Seed and measure against the hospital whose gateway is at ``gateway``."""
    say(f"seeding: a doctor's day of {cfg.mine} appointments and a day of {cfg.full}, a patient each")
    s = await seed(gateway, admin_email, admin_password, cfg)
    notes: list[str] = []
    shown_full = min(cfg.full, API_PAGE)
    if cfg.full > API_PAGE:
        notes.append(
            f"the day of {cfg.full} appointments shows the first {API_PAGE} only: GET /api/appointments answers "
            f"at most {API_PAGE} (limit ≤ {API_PAGE}) and has no next page, so the console's day list asks for "
            f"{API_PAGE} and the other {cfg.full - API_PAGE} are not on the page (nor in the JSON measured beside it)"
        )
    notes.append(
        "the page also lists the practitioners (GET /api/practitioners, for its choice of practitioner and, for a "
        "clinician, to find their own); the JSON beside it does not"
    )
    cookies = {"doctor": await sign_in(gateway, s.doctor), "desk": await sign_in(gateway, s.desk)}
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        tokens = {"doctor": await token(client, s.doctor), "desk": await token(client, s.desk)}
    host = urlsplit(gateway)
    statuses: dict[str, Counter[int]] = {k: Counter() for k in ("page mine", "json mine", "page full", "json full")}
    errors: list[str] = []
    day = s.day.isoformat()
    pools: list[Pool] = []

    def target(name: str, op: Callable[[Pool], Awaitable[int]]) -> Target:
        pools.append(Pool(host.hostname or "127.0.0.1", host.port or 80))
        return Target(name, pools[-1], op)

    try:
        pairs = {
            "mine": await pair(
                f"my day ({cfg.mine} patients), as the doctor",
                target("page", page_op(f"/day-list?day={day}", cookies["doctor"], cfg.mine, statuses["page mine"])),
                target("json", json_op(s.mine, s.day, tokens["doctor"], cfg.mine, statuses["json mine"])),
                cfg.rate_mine,
                cfg,
                cfg.mine,
                cfg.mine,
                errors,
                say,
            ),
            "full": await pair(
                f"a day list of {cfg.full} appointments, as a receptionist",
                target(
                    "page",
                    page_op(
                        f"/day-list?practitioner_id={s.full}&day={day}",
                        cookies["desk"],
                        shown_full,
                        statuses["page full"],
                    ),
                ),
                target("json", json_op(s.full, s.day, tokens["desk"], shown_full, statuses["json full"])),
                cfg.rate_full,
                cfg,
                cfg.full,
                shown_full,
                errors,
                say,
            ),
        }
    finally:
        for p in pools:
            await p.close()
    say("page weight: the sign-in page and a day list, as a browser with an empty cache receives them")
    async with httpx.AsyncClient(timeout=30) as client:
        weights = {
            "first page (sign-in)": await weigh(client, f"{gateway}/sign-in"),
            f"day list ({shown_full} appointments)": await weigh(
                client,
                f"{gateway}/day-list?practitioner_id={s.full}&day={day}",
                {"cookie": f"his_session={cookies['desk']}"},
            ),
        }
    return {
        "config": asdict(cfg),
        "seed": s.facts,
        "pairs": pairs,
        "weights": weights,
        "statuses": {k: dict(v) for k, v in statuses.items()},
        "notes": notes,
        "errors": errors,
    }


def run(
    cfg: ConsoleConfig, *, say: Callable[[str], None], workdir: Path | None = None, keep: bool = False
) -> ConsoleReport:
    """Start a private hospital, measure, stop it; returns the report."""
    started = time.perf_counter()
    hospital = PrivateHospital(Servers.make_workdir(workdir))
    say(f"starting a private hospital (his up) in {hospital.workdir}")
    try:
        hospital.start()
        say(f"his is up in {hospital.started_in:.1f}s; gateway on {hospital.gateway}")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results = runner.run(measure(hospital.gateway, ADMIN_EMAIL, hospital.password, cfg, say))
    finally:
        hospital.stop()
        if not keep:
            Servers(hospital.workdir).remove()
    return {"benchmark": "console", "machine": machine(), "seconds": time.perf_counter() - started, "results": results}


def kb(n: float) -> str:
    return f"{n / 1024:,.1f} KB"


def render(console: Console, report: ConsoleReport) -> None:
    res = report["results"]
    with wide(console):
        table = Table(title="his bench console — a day list page against the same data as JSON from the API")
        for col in ("figure", "page", "JSON", "ratio", "aim"):
            table.add_column(col, justify="left" if col == "figure" else "right")
        for p in res["pairs"].values():
            shown = "" if p["appointments_shown"] == p["appointments_seeded"] else f", {p['appointments_shown']} shown"
            for q in ("p50", "p95", "p99"):
                page, api = p["page"]["latency"].get(f"{q}_ms", math.nan), p["json"]["latency"].get(f"{q}_ms", math.nan)
                ratio = page / api if api else math.nan
                aim = f"≤ {RATIO_AIM:g} ({'met' if ratio <= RATIO_AIM else 'MISSED'})" if q == "p95" else ""
                table.add_row(
                    f"{p['what']}{shown}: {q} at {p['rate_per_s']:g}/s ({p['page']['latency'].get('count', 0):g} each)",
                    num(page, " ms", 1),
                    num(api, " ms", 1),
                    f"{ratio:.2f}",
                    aim,
                )
        console.print(table)
        sizes = Table(title="page weight, as a browser with an empty cache receives it (bodies as sent + headers)")
        for col in ("page", "transferred", "bodies", "uncompressed", "files", "aim"):
            sizes.add_column(col, justify="left" if col == "page" else "right")
        for name, w in res["weights"].items():
            aim = ""
            if name.startswith("first page"):
                aim = f"≤ {kb(FIRST_PAGE_AIM)} ({'met' if w['transferred_bytes'] <= FIRST_PAGE_AIM else 'MISSED'})"
            sizes.add_row(
                name,
                kb(w["transferred_bytes"]),
                kb(w["body_bytes"]),
                kb(w["uncompressed_bytes"]),
                str(len(w["assets"])),
                aim,
            )
        console.print(sizes)
        first = next(iter(res["weights"].values()))
        files = Table(title="the first page's files")
        for col in ("file", "encoding", "sent", "uncompressed"):
            files.add_column(col, justify="left" if col == "file" else "right")
        for a in first["assets"]:
            files.add_row(
                a["path"], a["encoding"], kb(a["body_bytes"] + a["header_bytes"]), kb(a["uncompressed_bytes"])
            )
        console.print(files)
        for note in res["notes"]:
            console.print(f"[yellow]note:[/] {note}")


def main(cfg: ConsoleConfig, *, as_json: bool, out: Console, err: Console, workdir: Path | None, keep: bool) -> int:
    """Entry point of ``his bench console``: prints the tables (or JSON); 1 if a figure is invalid."""
    try:
        report = run(cfg, say=lambda line: err.print(f"[dim]· {line}[/]"), workdir=workdir, keep=keep)
    except (BenchmarkError, ServerStartError) as exc:
        err.print(f"[bold red]benchmark failed:[/] {exc}")
        return 1
    if as_json:
        out.print_json(json.dumps(report))
    else:
        render(out, report)
    for e in report["results"]["errors"]:
        err.print(f"[bold red]invalid:[/] {e}")
    return 1 if report["results"]["errors"] else 0
