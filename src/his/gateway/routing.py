"""The public route table: which public path goes to which service, and who may call it. Pure.

The table is not written by hand. Each service marks the routes it offers the outside world
where it declares them (``openapi_extra=his.kernel.web.public("/api/lab/orders/{id}")``), which
puts an ``x-his-public`` entry in the service's own OpenAPI document; ``table`` reads those
entries from every service's document, and ``make api-reference`` writes the result to
``routes.json`` beside this module, which the gateway loads. A test checks that the file is the
one the services' routes give today (``tests/integration/test_api_reference.py``): the gateway
may not import the services, and a route cannot be public without its service saying so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources

from his.kernel.json import JsonObject, object_of, text
from his.kernel.web import PUBLIC

_PARAM = re.compile(r"\{([a-z_]+)\}")
METHODS = ("get", "post", "put", "patch", "delete")


class RouteTableError(ValueError):
    """Two services claim one public route, or a public path does not fit its route."""


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # public path template: /api/patients/{id}/care-team/{relationship_id}
    service: str
    upstream_template: str  # the service's own path template: /patients/{patient_id}/care-team/{rel_id}
    #: Callers without a token get through (the route admits its callers itself).
    public: bool = False

    #: The public path as a regular expression, one group per parameter.
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)
    #: The upstream path as a format string: ``{0}``, ``{1}``… are the pattern's groups.
    upstream: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        numbers = iter(range(len(self.params)))
        object.__setattr__(self, "pattern", re.compile("^" + _PARAM.sub(r"([^/]+)", self.path) + "$"))
        object.__setattr__(
            self, "upstream", _PARAM.sub(lambda _: "{" + str(next(numbers)) + "}", self.upstream_template)
        )

    @property
    def params(self) -> tuple[str, ...]:
        """Names of the path parameters, in order."""
        return tuple(_PARAM.findall(self.path))


def _order(route: Route) -> tuple[tuple[int, str], ...]:
    """Paths in alphabetical order, a fixed segment before a parameter at the same place: so
    ``/api/patients/me`` comes before ``/api/patients/{id}``, which would also match it."""
    return tuple((1, "") if _PARAM.fullmatch(seg) else (0, seg) for seg in route.path.split("/"))


def table(documents: Mapping[str, JsonObject]) -> list[Route]:
    """The public routes that the services' documents (``{service: its /openapi.json}``) mark with
    ``x-his-public``, by path (fixed segments first) and method. Raises ``RouteTableError`` for a public route claimed
    twice or whose parameters do not match its service's path."""
    routes: dict[tuple[str, str], Route] = {}
    for service, doc in sorted(documents.items()):
        paths = doc.get("paths")
        for template, operations in (paths if isinstance(paths, dict) else {}).items():
            for method in METHODS:
                operation = operations.get(method) if isinstance(operations, dict) else None
                marked = operation.get(PUBLIC) if isinstance(operation, dict) else None
                if not marked:
                    continue
                marked = object_of(marked)
                path = text(marked.get("path"))
                route = Route(method.upper(), path, service, template, bool(marked.get("without_token")))
                if len(route.params) != len(_PARAM.findall(template)):
                    raise RouteTableError(f"{route.method} {route.path}: its parameters do not match {template}")
                key = (route.method, _PARAM.sub("{}", route.path))
                if key in routes:
                    raise RouteTableError(f"{route.method} {route.path} is claimed by {routes[key].service} too")
                routes[key] = route
    return sorted(routes.values(), key=lambda r: (_order(r), METHODS.index(r.method.lower())))


def dumps(routes: Iterable[Route]) -> str:
    """The table as ``routes.json`` holds it: one route per line, diff-friendly."""
    rows = [
        json.dumps(
            {"method": r.method, "path": r.path, "service": r.service, "upstream": r.upstream_template}
            | ({"without_token": True} if r.public else {})
        )
        for r in routes
    ]
    return "[\n" + ",\n".join(f"  {row}" for row in rows) + "\n]\n"


def loads(text: str) -> tuple[Route, ...]:
    return tuple(
        Route(r["method"], r["path"], r["service"], r["upstream"], bool(r.get("without_token")))
        for r in json.loads(text)
    )


#: The gateway's table, as ``make api-reference`` last wrote it from the services' routes.
ROUTES: tuple[Route, ...] = loads(resources.files("his.gateway").joinpath("routes.json").read_text())


@dataclass(frozen=True)
class Match:
    route: Route
    upstream_path: str


def resolve(method: str, path: str) -> Match | bool | None:
    """The matching route; False if the path exists with another method; None if unknown.

    A path segment standing for an id is never ``.`` or ``..``: the upstream path is built from
    it, and a dot segment would name another upstream path than the route's.
    """
    other_method = False
    for route in ROUTES:
        m = route.pattern.match(path)
        if m is None or any(g in (".", "..") for g in m.groups()):
            continue
        if route.method != method:
            other_method = True
            continue
        return Match(route, route.upstream.format(*m.groups()))
    return False if other_method else None
