"""RFC 9457 problem details for every HTTP error, without internals."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from his.kernel.db import OUTAGE_ERRORS
from his.kernel.json import JsonLike
from his.kernel.resilience import DependencyUnavailableError

log = logging.getLogger("his.http")

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    431: "Request header fields too large",
    500: "Internal error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def problem(status: int, detail: str = "", *, headers: dict[str, str] | None = None, **extra: JsonLike) -> JSONResponse:
    """A problem+json answer, with ``extra`` members."""
    return answer(status, detail, extra, headers=headers)


def answer(
    status: int, detail: str, extra: Mapping[str, JsonLike], *, headers: dict[str, str] | None = None
) -> JSONResponse:
    """``problem``, its extra members as a mapping."""
    body: dict[str, JsonLike] = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


class Problem(BaseModel):
    """An error, as RFC 9457 problem details. Some carry more members (``state``, ``conflicts``,
    ``emergency_access``, ``errors``)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None


class ProblemError(Exception):
    """An error answered as a problem with extra members (e.g. what a booking collided with)."""

    def __init__(self, status: int, detail: str, **extra: JsonLike) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail
        self.extra: dict[str, JsonLike] = extra


def install(app: FastAPI) -> None:
    """Answer every error as problem+json, and document them so; unexpected ones are logged and
    told apart by nothing."""
    document_problems(app)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else ""
        return problem(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(ProblemError)
    async def domain_problem(request: Request, exc: ProblemError) -> JSONResponse:
        return answer(exc.status, exc.detail, exc.extra)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())][1:] or ["body"], "msg": str(e.get("msg", ""))}
            for e in exc.errors()[:20]
        ]
        return problem(422, "the request does not match the schema", errors=errors)

    @app.exception_handler(asyncpg.DataError)
    async def bad_value(request: Request, exc: Exception) -> JSONResponse:
        # The database refused a value the schema let through (a NUL byte, an out-of-range date).
        log.info("value refused by the database on %s %s: %s", request.method, request.url.path, exc)
        return problem(422, "a value in the request cannot be stored (invalid characters or out of range)")

    @app.exception_handler(asyncpg.TransactionRollbackError)
    async def concurrent(request: Request, exc: Exception) -> JSONResponse:
        # PostgreSQL aborted the transaction for a concurrent one (a deadlock, a serialization
        # failure) and it was not run again: nothing was changed, and trying again will do.
        log.info("transaction aborted for a concurrent one on %s %s: %r", request.method, request.url.path, exc)
        return problem(
            409,
            "the request collided with a concurrent one and changed nothing; try again",
            headers={"Retry-After": "1"},
        )

    async def outage(request: Request, exc: Exception) -> JSONResponse:
        # An outage is an outage: 503, never an empty success or a misleading 404.
        log.warning("dependency unavailable on %s %s: %r", request.method, request.url.path, exc)
        return problem(503, "a dependency is unavailable; try again shortly", headers={"Retry-After": "5"})

    unavailable: tuple[type[Exception], ...] = (DependencyUnavailableError, *OUTAGE_ERRORS)
    for error in unavailable:
        app.add_exception_handler(error, outage)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500)


__all__ = ["HTTPException", "ProblemError", "install", "problem"]


def document_problems(app: FastAPI) -> None:
    """Make the app's OpenAPI document say what its errors are: ``application/problem+json``
    with the ``Problem`` schema (FastAPI files a response model under ``application/json``), and
    422 in the shape ``his.kernel.problems`` answers it, not FastAPI's own. A route that
    declares a model of its own for an error (a ``Problem`` with more members) keeps it."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = plain()
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = Problem.model_json_schema()
        for path in doc.get("paths", {}).values():
            for op in path.values():
                responses = op.get("responses", {})
                for status, response in responses.items():
                    if status[0] not in "45":
                        continue
                    content = response.get("content", {})
                    schema = (content.get("application/problem+json") or content.get("application/json") or {}).get(
                        "schema"
                    )
                    if status == "422" or schema is None:
                        schema = {"$ref": PROBLEM_REF}
                    response["content"] = {"application/problem+json": {"schema": schema}}
                if "422" in responses:
                    responses["422"]["description"] = "the request does not match the schema"
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


PROBLEM_REF = "#/components/schemas/Problem"
