"""What every service's HTTP routes depend on: the verified caller and the service's use cases.

A service declares its routes on a module-level ``APIRouter``. A route names what it needs in
its signature, and FastAPI's ``Depends`` hands it over per request:

```python
Lab = Annotated[Laboratory, Depends(provided(Laboratory))]

@router.get("/orders/{order_id}", responses=errors(404))
async def one(order_id: uuid.UUID, who: Caller, lab: Lab) -> Order:
    return await lab.order(who, order_id)
```

The composition root (``app.py``) builds the use cases and returns ``Routes(router, provides=…)``;
``mount`` puts the router on an application and the provided objects on its state, keyed by their
class. The service runner mounts with the identity service's keys; a test mounts the same routes
with its own verifier and in-memory ports. Nothing is read from module globals, so two apps in
one process (tests) do not see each other's objects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, TypeAlias, TypeVar, cast

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import PlainSerializer, WithJsonSchema

from his.kernel.auth import authenticate, jwks_verifier
from his.kernel.problems import TITLES, Problem
from his.kernel.security import Principal, TokenVerifier

T = TypeVar("T")


@dataclass(frozen=True)
class Routes:
    """A service's HTTP adapter: its router and the objects its routes depend on."""

    router: APIRouter
    provides: Sequence[object] = ()
    #: How the routes verify tokens, when not against the identity service's keys (identity
    #: itself verifies with its own key ring).
    verifier: TokenVerifier | None = None


def mount(app: FastAPI, routes: Routes, *, verifier: TokenVerifier | None = None) -> None:
    """Add ``routes`` to ``app``: the router, and what it depends on (by class) on the app's state.

    Tokens are verified with the routes' own verifier, else ``verifier``, else against the
    identity service's published keys (``HIS_IDENTITY_URL``).
    """
    provided: dict[type, object] = getattr(app.state, "provided", {})
    for obj in routes.provides:
        provided[type(obj)] = obj
    app.state.provided = provided
    if getattr(app.state, "verifier", None) is None:
        app.state.verifier = routes.verifier or verifier or jwks_verifier()
    app.include_router(routes.router)


def provided(kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A dependency giving the object of class ``kind`` that the app was mounted with (a
    coroutine: FastAPI would run a plain function in its thread pool, once per request)."""

    async def get(request: Request) -> T:
        objects: dict[type, object] = getattr(request.app.state, "provided", {})
        if kind not in objects:
            raise RuntimeError(f"the application provides no {kind.__name__}: mount its Routes with it")
        return cast(T, objects[kind])

    get.__name__ = f"provided_{kind.__name__}"
    return get


async def caller(request: Request) -> Principal:
    """The caller, verified from the bearer token (401 without a valid one, 503 when identity's
    keys cannot be fetched)."""
    verifier: TokenVerifier = request.app.state.verifier
    return await authenticate(request, verifier)


#: The verified caller of a route.
Caller = Annotated[Principal, Depends(caller)]

#: A moment in a response: RFC 3339 with its offset written out (``2026-12-07T08:00:00+00:00``),
#: as every answer of the API has written it from the start (pydantic alone would write ``Z``).
Moment = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


#: The OpenAPI extension that puts a route on the public API (``his.gateway.routing`` builds the
#: gateway's route table from it).
PUBLIC = "x-his-public"


def public(path: str, *, without_token: bool = False) -> dict[str, object]:
    """The ``openapi_extra`` of a route the gateway serves at ``path`` (its path parameters in
    the order of the route's own): ``@router.get("/orders/{order_id}",
    openapi_extra=public("/api/lab/orders/{id}"))``. A route without it is not reachable from
    outside. ``without_token``: the gateway lets callers without a token through (signing in,
    the payment provider's webhook); the route then admits its callers itself."""
    return {PUBLIC: {"path": path, "without_token": without_token}}


#: A route's documented responses, as FastAPI's ``responses`` takes them: by status, the
#: response's ``model`` and ``description``.
Responses: TypeAlias = dict[int | str, dict[str, object]]


def errors(*statuses: int | tuple[int, str]) -> Responses:
    """The ``responses`` of a route that may answer these error statuses (problem+json; every
    route may also answer 422 for a request that does not match its schema). A status may come
    with what it means here: ``(409, "likely duplicates")``."""
    out: Responses = {}
    for s in statuses:
        status, description = s if isinstance(s, tuple) else (s, TITLES.get(s, "Error"))
        out[status] = {"model": Problem, "description": description}
    return out
