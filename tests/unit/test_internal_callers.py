"""Who may call an internal HTTP listener (``his.kernel.callers``), as a table, and the ASGI layer
that refuses the rest before any route runs. No IO: scopes are built by hand, as ``PeerProtocol``
builds them from the verified certificate.

``test_every_service_admits_exactly_the_declared_callers`` is the matrix of the internal hops:
every service's own declaration (``build().callers``) × every path it serves × every workload
identity of the hospital, against ``WHO_CALLS_WHAT``, the hops the design has.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping

import pytest

from his.cli.services import SERVICES
from his.gateway.routing import ROUTES
from his.kernel.callers import (
    ANY_SERVICE,
    GATEWAY,
    ITSELF,
    OPERATIONS,
    OPERATOR,
    PEER,
    PROMETHEUS,
    Admit,
    Callers,
)
from his.kernel.observability import Message, Receive, Scope, Send
from his.kernel.pki import spiffe_id

BILLING = spiffe_id("billing")
PATIENTS = spiffe_id("patients")
CONSOLE = spiffe_id("console")
#: The default: the gateway everywhere, the operations paths for the operator, Prometheus, itself.
SERVICE = Callers()
#: Identity's: every service may fetch the keys and the sessions signed out.
IDENTITY = Callers.of(paths={"/auth/jwks": [ANY_SERVICE], "/auth/revoked-sessions": [ANY_SERVICE]})

TABLE = [
    # (callers, the listener's own id, caller, path, admitted)
    (SERVICE, PATIENTS, GATEWAY, "/patients", True),
    (SERVICE, PATIENTS, GATEWAY, "/status", True),
    (SERVICE, PATIENTS, BILLING, "/patients", False),  # another service: refused
    (SERVICE, PATIENTS, BILLING, "/healthz", False),
    (SERVICE, PATIENTS, BILLING, "/metrics", False),
    (SERVICE, PATIENTS, CONSOLE, "/patients", False),  # the console calls the gateway, not the services
    (SERVICE, PATIENTS, None, "/healthz", False),  # no SPIFFE id, no entry
    (SERVICE, PATIENTS, OPERATOR, "/healthz", True),
    (SERVICE, PATIENTS, OPERATOR, "/readyz", True),
    (SERVICE, PATIENTS, OPERATOR, "/metrics", True),
    (SERVICE, PATIENTS, OPERATOR, "/status", True),
    (SERVICE, PATIENTS, OPERATOR, "/patients", False),  # the operator reads operations, not patients
    (SERVICE, PATIENTS, OPERATOR, "/status/", False),  # exact paths only
    (SERVICE, PATIENTS, PROMETHEUS, "/metrics", True),
    (SERVICE, PATIENTS, PROMETHEUS, "/status", False),
    (SERVICE, PATIENTS, PATIENTS, "/healthz", True),  # the exec probe presents the process's own
    (SERVICE, PATIENTS, PATIENTS, "/readyz", True),
    (SERVICE, PATIENTS, PATIENTS, "/patients", False),
    (SERVICE, BILLING, PATIENTS, "/readyz", False),  # its own id, not any service's
    (SERVICE, PATIENTS, ITSELF, "/healthz", False),  # the placeholder is no identity
    (IDENTITY, spiffe_id("identity"), BILLING, "/auth/jwks", True),
    (IDENTITY, spiffe_id("identity"), CONSOLE, "/auth/revoked-sessions", True),
    (IDENTITY, spiffe_id("identity"), BILLING, "/auth/token", False),
    (IDENTITY, spiffe_id("identity"), BILLING, "/users", False),
    (IDENTITY, spiffe_id("identity"), OPERATOR, "/auth/jwks", False),  # an operator is not a service
    (IDENTITY, spiffe_id("identity"), "spiffe://his.local/service/a/b", "/auth/jwks", False),
    (IDENTITY, spiffe_id("identity"), "spiffe://other.domain/service/billing", "/auth/jwks", False),
    (IDENTITY, spiffe_id("identity"), GATEWAY, "/users", True),
]


@pytest.mark.parametrize(("callers", "own", "caller", "path", "admitted"), TABLE)
def test_who_may_call_what(callers: Callers, own: str, caller: str | None, path: str, admitted: bool) -> None:
    assert callers.admits(caller, path, own=own) is admitted


def test_callers_must_be_spiffe_ids() -> None:
    with pytest.raises(ValueError, match="SPIFFE ids"):
        Callers.of(paths={"/auth/jwks": ["billing"]})
    with pytest.raises(ValueError, match="SPIFFE ids"):
        Callers.of(every=["gateway"])


def scope(path: str, caller: str | None) -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [],
        "query_string": b"",
        "extensions": {PEER: {"spiffe_id": caller}},
    }


async def call(app: Admit, s: Scope) -> tuple[int, dict[str, object]]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(s, receive, send)
    status = int(sent[0]["status"])
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, json.loads(body) if body else {}


class Route:
    """Stands for everything behind the allowlist: it counts the requests that reached it."""

    def __init__(self) -> None:
        self.reached: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def test_a_caller_not_admitted_gets_403_problem_and_reaches_no_route() -> None:
    route = Route()
    app = Admit(route, SERVICE, own=PATIENTS)
    status, body = await call(app, scope("/patients", BILLING))
    assert status == 403
    assert body["title"] == "Forbidden" and BILLING in str(body["detail"])
    status, body = await call(app, scope("/healthz", None))
    assert status == 403 and "without a SPIFFE id" in str(body["detail"])
    no_extension = scope("/healthz", None)
    del no_extension["extensions"]  # a listener that does not say who called: nobody is admitted
    assert (await call(app, no_extension))[0] == 403
    assert route.reached == []
    assert (await call(app, scope("/patients", GATEWAY)))[0] == 200
    assert (await call(app, scope("/healthz", PATIENTS)))[0] == 200
    assert route.reached == ["/patients", "/healthz"]


async def test_other_scopes_pass_through() -> None:
    route = Route()
    reached: list[str] = []

    async def lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["type"])

    await Admit(lifespan, SERVICE, own=PATIENTS)({"type": "lifespan"}, route, route)  # type: ignore[arg-type]
    assert reached == ["lifespan"]


# --- the matrix: every service's declaration × every path × every identity ---------------------

#: Every workload of the hospital that holds a certificate (the services, the gateway, the console).
WORKLOADS = {name: spiffe_id(name) for name in (*SERVICES, "gateway", "console")}
EVERY_SERVICE = frozenset(WORKLOADS.values())
#: Who calls a service's internal listener besides the gateway (on every path) and the operations
#: paths' callers, by service and path: the hops the design has (ADR 0029). Nothing else.
WHO_CALLS_WHAT: Mapping[str, Mapping[str, frozenset[str]]] = {
    # every service verifies tokens itself: the keys and the sessions signed out
    "identity": {
        "/auth/jwks": EVERY_SERVICE,
        "/auth/revoked-sessions": EVERY_SERVICE,
        # audit names the staff who read a patient's record (ADR 0028)
        "/staff": frozenset({spiffe_id("audit")}),
    },
    # patients asks for a resulted order's values, which the bus does not carry (ADR 0032)
    "laboratory": {"/lab/order-results": frozenset({spiffe_id("patients")})},
}
#: Identities no listener may admit beyond what they are: an id of another trust domain, a
#: path under a service's, no certificate, and the placeholders, which stand for ids.
STRANGERS: tuple[str | None, ...] = (
    "spiffe://other.domain/service/billing",
    "spiffe://his.local/service/billing/extra",
    None,
    ANY_SERVICE,
    ITSELF,
)
IDENTITIES: tuple[str | None, ...] = (*WORKLOADS.values(), OPERATOR, PROMETHEUS, *STRANGERS)


def declared(service: str) -> Callers:
    return importlib.import_module(f"his.{service}.app").build().callers  # type: ignore[no-any-return]


def paths_of(service: str) -> set[str]:
    """The paths to try on a service's listener: its public routes' upstream paths, its own
    router's, the operations paths, and every path any service names in its callers."""
    router = importlib.import_module(f"his.{service}.api.http").router
    own = {r.upstream_template for r in ROUTES if r.service == service} | {r.path for r in router.routes}
    named = {p for s in SERVICES for p in declared(s).paths} | {p for s in WHO_CALLS_WHAT.values() for p in s}
    return own | set(OPERATIONS) | named


def expected(service: str, peer: str | None, path: str) -> bool:
    """Whether ``peer`` may call ``path`` on ``service``'s listener, by the design."""
    own = WORKLOADS[service]
    operations = {
        "/healthz": {OPERATOR, own},  # the operator's health checks, the process's exec probe
        "/readyz": {OPERATOR, own},
        "/metrics": {OPERATOR, PROMETHEUS},
        "/status": {OPERATOR},
    }
    if peer == GATEWAY:  # it forwards the public API: every path
        return True
    if path in operations:
        return peer in operations[path]
    return peer in WHO_CALLS_WHAT.get(service, {}).get(path, frozenset())


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_admits_exactly_the_declared_callers(service: str) -> None:
    callers, own = declared(service), WORKLOADS[service]
    paths = paths_of(service)
    assert len(paths) > len(OPERATIONS), service
    wrong = [
        f"{peer} on {path}: {'admitted' if admitted else 'refused'}"
        for path in sorted(paths)
        for peer in IDENTITIES
        if (admitted := callers.admits(peer, path, own=own)) != expected(service, peer, path)
    ]
    assert not wrong, f"{service}'s listener, against WHO_CALLS_WHAT:\n" + "\n".join(wrong)


def test_the_table_names_only_services_and_paths_that_exist() -> None:
    assert set(WHO_CALLS_WHAT) <= set(SERVICES)
    for service, paths in WHO_CALLS_WHAT.items():
        assert set(paths) == set(declared(service).paths), service
