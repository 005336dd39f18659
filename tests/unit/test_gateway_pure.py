"""Gateway logic without IO: route table, rate limiter, the assembled OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest

from his.gateway.limits import RateLimiter, retry_after
from his.gateway.openapi import assemble
from his.gateway.routing import ROUTES, Match, Route, RouteTableError, dumps, loads, resolve, table
from his.kernel.web import public


def _assembled(documents: dict[str, Any]) -> dict[str, Any]:
    """The public document of ``documents``, over the route table their ``public`` marks give."""
    return assemble(documents, table(documents))


def test_routes_resolve_with_ids_and_methods() -> None:
    m = resolve("GET", "/api/patients/123e4567-e89b-12d3-a456-426614174000")
    assert isinstance(m, Match) and m.route.service == "patients"
    assert m.upstream_path == "/patients/123e4567-e89b-12d3-a456-426614174000"
    me = resolve("GET", "/api/patients/me")
    assert isinstance(me, Match) and me.upstream_path == "/patients/me"
    assert resolve("DELETE", "/api/patients") is False  # known path, other method: 405
    assert resolve("GET", "/api/nowhere") is None
    assert resolve("GET", "/api/patients/a/b") is None  # ids never span segments
    assert resolve("GET", "/api/patients/..") is None  # nor stand for another upstream path
    assert resolve("GET", "/api/patients/.") is None


def test_only_auth_and_payment_provider_routes_are_public() -> None:
    """The payment provider's webhook carries its signature (billing verifies it) and the TEST
    provider's checkout stands for a provider's own site; signing in (with a password change or
    a second factor's enrolment that a sign-in needs) and resetting a forgotten password admit
    their callers by what they send; everything else needs a token."""
    public = {(r.method, r.upstream) for r in ROUTES if r.public}
    assert public == {
        ("POST", "/auth/register"),
        ("POST", "/auth/login"),
        ("POST", "/auth/login/password"),
        ("POST", "/auth/login/totp"),
        ("POST", "/auth/password-reset"),
        ("POST", "/auth/password-reset/confirm"),
        ("POST", "/auth/verify-email"),
        ("POST", "/auth/refresh"),
        ("POST", "/auth/logout"),
        ("GET", "/auth/jwks"),
        ("POST", "/payments/webhooks/{0}"),
        ("GET", "/test-payment-provider/checkout/{0}"),
        ("POST", "/test-payment-provider/checkout/{0}"),
    }


def test_token_bucket_allows_bursts_then_paces() -> None:
    limiter = RateLimiter(rate=10.0, burst=3)
    assert [limiter.take("ip:a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("ip:a", 0.0)
    assert wait > 0 and retry_after(wait) == "1"
    assert limiter.take("ip:b", 0.0) == 0.0  # other keys are unaffected
    assert limiter.take("ip:a", 0.1) == 0.0  # refilled one token after 100 ms


def test_limiter_forgets_the_oldest_keys() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=2)
    for key in ("a", "b", "c"):
        limiter.take(key, 0.0)
    assert limiter.take("a", 0.0) == 0.0  # "a" was evicted, so it starts with a full bucket


def test_public_document_takes_operations_from_services() -> None:
    patients = {
        "paths": {
            "/patients/{patient_id}": {
                "get": {
                    **public("/api/patients/{id}"),
                    "summary": "Get",
                    "parameters": [
                        {"name": "patient_id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Coverage"}}},
                        }
                    },
                }
            },
        },
        "components": {"schemas": {"Coverage": {"type": "object"}}},
    }
    login_op = {**public("/api/auth/login", without_token=True), "summary": "Login", "responses": {}}
    identity = {"paths": {"/auth/login": {"post": login_op}}}
    doc = _assembled({"patients": patients, "identity": identity})
    get = doc["paths"]["/api/patients/{id}"]["get"]
    assert get["security"] == [{"bearer": []}]
    assert get["parameters"][0]["name"] == "id"
    assert get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"] == (
        "#/components/schemas/patients.Coverage"
    )
    assert "patients.Coverage" in doc["components"]["schemas"]
    assert "x-his-public" not in get  # the mark is for the gateway, not for clients
    login = doc["paths"]["/api/auth/login"]["post"]
    assert "security" not in login and "401" not in login["responses"]
    assert login["responses"]["429"]["content"]["application/problem+json"]


def test_a_created_patient_links_to_where_its_id_is_used_next() -> None:
    path = {"name": "patient_id", "in": "path", "required": True, "schema": {"type": "string"}}
    patients = {
        "paths": {
            "/patients": {"post": {**public("/api/patients"), "responses": {"201": {"description": "created"}}}},
            "/patients/{patient_id}": {
                "get": {
                    **public("/api/patients/{id}"),
                    "parameters": [path],
                    "responses": {"200": {"description": "ok"}},
                }
            },
        }
    }
    doc = _assembled({"patients": patients})
    links = doc["paths"]["/api/patients"]["post"]["responses"]["201"]["links"]
    get = doc["paths"]["/api/patients/{id}"]["get"]
    assert links == {"GetPatient": {"operationId": get["operationId"], "parameters": {"id": "$response.body#/id"}}}


def test_a_route_with_two_ids_names_both_in_the_public_document() -> None:
    m = resolve("DELETE", "/api/patients/p-1/care-team/r-2")
    assert isinstance(m, Match) and m.upstream_path == "/patients/p-1/care-team/r-2"
    assert m.route.params == ("id", "relationship_id")
    fixed = resolve("GET", "/api/patients/emergency-access")  # not taken for an id
    assert isinstance(fixed, Match) and fixed.upstream_path == "/patients/emergency-access"
    assert resolve("POST", "/api/patients/emergency-access") is False
    path = {"name": "patient_id", "in": "path", "required": True, "schema": {"type": "string"}}
    rel = {"name": "relationship_id", "in": "path", "required": True, "schema": {"type": "string"}}
    patients = {
        "paths": {
            "/patients/{patient_id}/care-team/{relationship_id}": {
                "delete": {
                    **public("/api/patients/{id}/care-team/{relationship_id}"),
                    "parameters": [path, rel, {"name": "x-trace", "in": "header", "schema": {"type": "string"}}],
                    "responses": {"204": {"description": "ended"}},
                }
            }
        }
    }
    doc = _assembled({"patients": patients})
    op = doc["paths"]["/api/patients/{id}/care-team/{relationship_id}"]["delete"]
    assert [p["name"] for p in op["parameters"]] == ["id", "relationship_id"]
    assert path["name"] == "patient_id"  # the service's own document is not changed


def _doc(*routes: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, template, mark in routes:
        paths.setdefault(template, {})[method] = {**mark, "responses": {}}
    return {"paths": paths}


def test_the_route_table_comes_from_the_marks_fixed_segments_first() -> None:
    docs = {
        "patients": _doc(
            ("get", "/patients/{patient_id}", public("/api/patients/{id}")),
            ("get", "/patients/me", public("/api/patients/me")),
            ("get", "/patients/{patient_id}/internal", {}),  # not marked: not public
        ),
        "scheduling": _doc(
            ("post", "/appointments/{appointment_id}/{action}", public("/api/appointments/{id}/{action}")),
            ("post", "/appointments/{appointment_id}/reschedule", public("/api/appointments/{id}/reschedule")),
        ),
        "identity": _doc(("post", "/auth/login", public("/api/auth/login", without_token=True))),
    }
    routes = table(docs)
    assert [(r.method, r.path) for r in routes] == [
        ("POST", "/api/appointments/{id}/reschedule"),
        ("POST", "/api/appointments/{id}/{action}"),
        ("POST", "/api/auth/login"),
        ("GET", "/api/patients/me"),
        ("GET", "/api/patients/{id}"),
    ]
    assert [r.public for r in routes] == [False, False, True, False, False]
    step = routes[1]
    assert (
        step.upstream == "/appointments/{0}/{1}" and step.upstream_template == "/appointments/{appointment_id}/{action}"
    )
    assert loads(dumps(routes)) == tuple(routes)


def test_a_public_route_claimed_twice_or_with_other_parameters_is_refused() -> None:
    twice = {
        "patients": _doc(("get", "/patients/{patient_id}", public("/api/patients/{id}"))),
        "audit": _doc(("get", "/audit/{x}", public("/api/patients/{pid}"))),
    }
    with pytest.raises(RouteTableError, match="claimed"):
        table(twice)
    with pytest.raises(RouteTableError, match="parameters"):
        table({"patients": _doc(("get", "/patients", public("/api/patients/{id}")))})


def test_the_gateway_table_resolves_every_route_to_itself() -> None:
    """Each route of the committed table is the one its own path resolves to (none is shadowed
    by a route that comes before it)."""
    for route in ROUTES:
        concrete = route.path.replace("{", "x-").replace("}", "")
        m = resolve(route.method, concrete)
        assert isinstance(m, Match) and m.route == route, (route.method, route.path)
        assert isinstance(route, Route)
