"""Every error is problem+json, outages are 503, and nothing internal leaks (in-memory ASGI)."""

from __future__ import annotations

import asyncpg
import httpx
from fastapi import FastAPI
from pydantic import BaseModel

from his.kernel import problems
from his.kernel.resilience import CircuitOpenError, DependencyUnavailableError


class Body(BaseModel):
    n: int


def app() -> FastAPI:
    a = FastAPI()
    problems.install(a)

    @a.get("/missing")
    async def missing() -> None:
        raise problems.HTTPException(404, "patient not found")

    @a.post("/typed")
    async def typed(body: Body) -> dict[str, int]:
        return {"n": body.n}

    @a.get("/db-down")
    async def db_down() -> None:
        raise asyncpg.InterfaceError("connection is closed")

    @a.get("/db-restarting")
    async def db_restarting() -> None:
        raise asyncpg.CannotConnectNowError("the database system is starting up")

    @a.get("/db-shut-down")
    async def db_shut_down() -> None:
        raise asyncpg.AdminShutdownError("terminating connection due to administrator command")

    @a.get("/db-killed-mid-query")
    async def db_killed_mid_query() -> None:
        # What asyncpg raises for a connection PostgreSQL terminated while it was in use.
        raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")

    @a.get("/peer-down")
    async def peer_down() -> None:
        raise DependencyUnavailableError("patients", "UNAVAILABLE: connection refused")

    @a.get("/breaker-open")
    async def breaker_open() -> None:
        raise CircuitOpenError("patients", 3.0)

    @a.get("/deadlock")
    async def deadlock() -> None:
        raise asyncpg.DeadlockDetectedError("deadlock detected")

    @a.get("/bug")
    async def bug() -> None:
        raise RuntimeError("secret internal detail")

    return a


async def call(method: str, path: str, **kw: object) -> httpx.Response:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        return await c.request(method, path, **kw)  # type: ignore[arg-type]


async def test_http_errors_are_problem_json() -> None:
    r = await call("GET", "/missing")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {"type": "about:blank", "title": "Not found", "status": 404, "detail": "patient not found"}


async def test_schema_errors_are_422_with_the_field() -> None:
    r = await call("POST", "/typed", json={"n": "many"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["loc"] == ["n"]


async def test_an_outage_is_503_not_an_empty_success() -> None:
    for path in ("/db-down", "/db-restarting", "/db-shut-down", "/db-killed-mid-query"):
        r = await call("GET", path)
        assert r.status_code == 503 and r.headers["retry-after"] == "5", path


async def test_another_service_that_does_not_answer_is_503_not_404_or_empty() -> None:
    for path in ("/peer-down", "/breaker-open"):
        r = await call("GET", path)
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert "connection refused" not in r.text


async def test_a_transaction_aborted_for_a_concurrent_one_is_409_try_again_not_500() -> None:
    r = await call("GET", "/deadlock")
    assert r.status_code == 409 and r.headers["retry-after"] == "1"
    assert "try again" in r.json()["detail"] and "deadlock" not in r.text


async def test_bugs_are_500_without_internals() -> None:
    r = await call("GET", "/bug")
    assert r.status_code == 500
    assert "secret" not in r.text and "Traceback" not in r.text


async def test_values_the_database_refuses_are_422() -> None:
    a = FastAPI()
    problems.install(a)

    @a.get("/nul")
    async def nul() -> None:
        raise asyncpg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00')

    transport = httpx.ASGITransport(app=a, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.get("/nul")
    assert r.status_code == 422 and "0x00" not in r.text
