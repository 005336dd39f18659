"""The baselines of the HTTP benchmarks: a bare ASGI endpoint, plain or doing one INSERT or one SELECT.

Run as its own process the way a service runs (uvicorn, uvloop, httptools, one process, an
asyncpg pool of the services' size, ``gc.freeze()`` after start-up), with no framework, no
token check, no validation beyond parsing, no outbox and no remote call: ``POST /bookings``
parses the same JSON body a booking sends, inserts one row (a new uuid and five columns) into
``bench_booking.booking`` on the hospital's PostgreSQL and answers 201 ``{id, status}``.
``GET /patients/{id}`` reads one row of patients' own table (the same columns its service
reads, by primary key) and answers it as JSON; ``GET /plain`` answers a constant JSON body
without touching the database. It refuses to start unless the session commits with
``synchronous_commit=on``, as the services do.

    HIS_BENCH_DSN=postgresql://… HIS_BENCH_PORT=8123 python -m his.benchmarks.bare
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg
import uvicorn
import uvloop

from his.kernel.json import Json, JsonObject, object_of

if TYPE_CHECKING:
    # The ASGI messages as uvicorn, which runs this app, declares them.
    from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope

SCHEMA = "bench_booking"
TABLE_DDL = (
    f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE",
    f"CREATE SCHEMA {SCHEMA}",
    f"""CREATE TABLE {SCHEMA}.booking (
        id uuid PRIMARY KEY, patient_id uuid NOT NULL, practitioner_id uuid NOT NULL,
        service text NOT NULL, starts_at timestamptz NOT NULL, ends_at timestamptz NOT NULL,
        booked_at timestamptz NOT NULL DEFAULT now())""",
)
INSERT = (
    f"INSERT INTO {SCHEMA}.booking (id, patient_id, practitioner_id, service, starts_at, ends_at)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
)
#: The columns patients' ``GET /patients/{id}`` reads (his.patients.store.COLUMNS).
PATIENT_SELECT = (
    "SELECT id, mrn, given_name, family_name, birth_date, sex, email, phone, user_id, coverage_payer,"
    " coverage_member_id, created_at FROM patients.patient WHERE id = $1"
)
PLAIN = b'{"status":"ok","service":"bare"}'
POOL_SIZE = (2, 16)  # the services' pool (his.kernel.service)

#: A booking to insert: patient, practitioner, service, start, end.
BookingRow = tuple[uuid.UUID, uuid.UUID, str, datetime, datetime]


class BareApp:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/healthz":
            await respond(send, 200, b'{"status":"ok"}')
            return
        if scope["method"] == "GET" and path == "/plain":
            await respond(send, 200, PLAIN)
            return
        if scope["method"] == "GET" and path.startswith("/patients/"):
            await self.patient(path.removeprefix("/patients/"), send)
            return
        if path != "/bookings" or scope["method"] != "POST":
            await respond(send, 404, b'{"detail":"not found"}')
            return
        body = b""
        more = True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                break  # the client went away
            body += msg["body"]
            more = msg["more_body"]
        try:
            row = booking_row(json.loads(body))
        except (ValueError, KeyError, TypeError):
            await respond(send, 422, b'{"detail":"bad booking"}')
            return
        new_id = uuid.uuid4()
        await self.pool.execute(INSERT, new_id, *row)
        await respond(send, 201, b'{"id":"%s","status":"booked"}' % str(new_id).encode())

    async def patient(self, key: str, send: ASGISendCallable) -> None:
        try:
            patient_id = uuid.UUID(key)
        except ValueError:
            await respond(send, 422, b'{"detail":"bad id"}')
            return
        row = await self.pool.fetchrow(PATIENT_SELECT, patient_id)
        if row is None:
            await respond(send, 404, b'{"detail":"not found"}')
            return
        await respond(send, 200, json.dumps(dict(row), default=str).encode())


def booking_row(doc: Json) -> BookingRow:
    """The booking a request's body holds; ``ValueError``, ``KeyError`` or ``TypeError`` if it holds none."""
    data = object_of(doc)
    return (
        uuid.UUID(_text(data, "patient_id")),
        uuid.UUID(_text(data, "practitioner_id")),
        str(data["service"]),
        datetime.fromisoformat(_text(data, "start")),
        datetime.fromisoformat(_text(data, "end")),
    )


def _text(data: JsonObject, key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


async def respond(send: ASGISendCallable, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the loop's handlers above stop it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(dsn: str, port: int) -> int:
    pool = await asyncpg.create_pool(
        dsn, min_size=POOL_SIZE[0], max_size=POOL_SIZE[1], server_settings={"synchronous_commit": "on"}
    )
    try:
        durability = str(await pool.fetchval("SHOW synchronous_commit"))
        if durability != "on":
            print(f"refusing to run: synchronous_commit={durability}", flush=True)
            return 1
        config = uvicorn.Config(
            BareApp(pool),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="none",
            http="httptools",
        )
        server = _Server(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        gc.collect()
        gc.freeze()
        print(f"baseline listening on 127.0.0.1:{port} (synchronous_commit={durability})", flush=True)
        await server.serve()
        return 0
    finally:
        await pool.close()


def main() -> None:
    dsn, port = os.environ["HIS_BENCH_DSN"], int(os.environ["HIS_BENCH_PORT"])
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        sys.exit(runner.run(serve(dsn, port)))


if __name__ == "__main__":
    main()
