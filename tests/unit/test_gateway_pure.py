"""Gateway logic without IO: route table, rate limiter, the assembled OpenAPI document."""

from __future__ import annotations

from his.gateway.limits import RateLimiter, retry_after
from his.gateway.openapi import assemble
from his.gateway.routing import ROUTES, Match, resolve


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
    provider's checkout stands for a provider's own site; everything else needs a token."""
    public = {(r.method, r.upstream) for r in ROUTES if r.public}
    assert public == {
        ("POST", "/auth/register"),
        ("POST", "/auth/login"),
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
    identity = {"paths": {"/auth/login": {"post": {"summary": "Login", "responses": {}}}}}
    doc = assemble({"patients": patients, "identity": identity})
    get = doc["paths"]["/api/patients/{id}"]["get"]
    assert get["security"] == [{"bearer": []}]
    assert get["parameters"][0]["name"] == "id"
    assert get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"] == (
        "#/components/schemas/patients.Coverage"
    )
    assert "patients.Coverage" in doc["components"]["schemas"]
    login = doc["paths"]["/api/auth/login"]["post"]
    assert "security" not in login and "401" not in login["responses"]
    assert login["responses"]["429"]["content"]["application/problem+json"]


def test_a_created_patient_links_to_where_its_id_is_used_next() -> None:
    path = {"name": "patient_id", "in": "path", "required": True, "schema": {"type": "string"}}
    patients = {
        "paths": {
            "/patients": {"post": {"responses": {"201": {"description": "created"}}}},
            "/patients/{patient_id}": {"get": {"parameters": [path], "responses": {"200": {"description": "ok"}}}},
        }
    }
    doc = assemble({"patients": patients})
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
                    "parameters": [path, rel, {"name": "x-trace", "in": "header", "schema": {"type": "string"}}],
                    "responses": {"204": {"description": "ended"}},
                }
            }
        }
    }
    doc = assemble({"patients": patients})
    op = doc["paths"]["/api/patients/{id}/care-team/{relationship_id}"]["delete"]
    assert [p["name"] for p in op["parameters"]] == ["id", "relationship_id"]
    assert path["name"] == "patient_id"  # the service's own document is not changed
