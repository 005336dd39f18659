"""One OpenAPI document for the whole public API, assembled from the services' own documents.

Each public route takes its operation (parameters, request body, responses, docstring) from the
service that serves it, under its public path. Schemas are prefixed with the service's name so
two services may both have a ``Coverage``. Non-public operations require a bearer token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from his.gateway.routing import ROUTES, Route
from his.kernel.json import Json, JsonObject, field, json_object, text
from his.kernel.problems import Problem
from his.kernel.web import PUBLIC

PROBLEM: JsonObject = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _at(node: Json, *keys: str) -> Json:
    """``node[k1][k2]…``, or None where a key is missing or a value on the way is not an object."""
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _object(node: Json) -> JsonObject:
    """``node`` if it is an object, else an empty one."""
    return node if isinstance(node, dict) else {}


def _rename_refs(node: Json, service: str) -> Json:
    if isinstance(node, dict):
        return {
            k: (
                f"#/components/schemas/{_schema_name(v.rsplit('/', 1)[1], service)}"
                if k == "$ref" and isinstance(v, str)
                else _rename_refs(v, service)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rename_refs(v, service) for v in node]
    return node


def _schema_name(name: str, service: str) -> str:
    """A service's schema under its public name: ``Problem`` is one schema for every service."""
    return name if name == "Problem" else f"{service}.{name}"


def assemble(
    documents: Mapping[str, JsonObject], routes: Sequence[Route] = ROUTES, *, version: str = "0.1.0"
) -> JsonObject:
    """Build the public document from ``{service: that service's /openapi.json}``, with the
    gateway's route table (or the one the documents give, ``routing.table``)."""
    paths: dict[str, JsonObject] = {}
    schemas: JsonObject = {
        "Problem": json_object(Problem.model_json_schema()),
    }
    for route in routes:
        doc = documents.get(route.service)
        if doc is None:
            continue
        upstream_template = route.upstream_template
        found = _at(doc, "paths", upstream_template, route.method.lower())
        if not isinstance(found, dict):
            continue
        op = _object(_rename_refs({k: v for k, v in found.items() if k != PUBLIC}, route.service))
        op["tags"] = [route.service]
        op["operationId"] = f"{route.service}_{route.method.lower()}_{upstream_template.strip('/').replace('/', '_')}"
        params = op.get("parameters", [])
        op["parameters"] = _public_parameters(
            params if isinstance(params, list) else [], upstream_template, route.params
        )
        responses = _object(op.get("responses"))
        op["responses"] = responses
        for code in ["400", "413", "429", "503"] + ([] if route.public else ["401", "403"]):
            responses.setdefault(code, {"description": "problem", "content": PROBLEM})
        responses.pop("422", None)
        responses["422"] = {"description": "the request does not match the schema", "content": PROBLEM}
        if not route.public:
            op["security"] = [{"bearer": []}]
        paths.setdefault(route.path, {})[route.method.lower()] = op
        for name, schema in _object(_at(doc, "components", "schemas")).items():
            if name != "Problem":
                schemas[_schema_name(name, route.service)] = _rename_refs(schema, route.service)
    _link(paths)
    _distinct_titles(schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "his — Hospital Information System",
            "version": version,
            "description": "The public API. Errors are application/problem+json.",
        },
        "paths": dict[str, Json](paths),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


#: Headers a client sends that an operation may declare (the others are the gateway's own).
CLIENT_HEADERS = frozenset({"idempotency-key"})


def _distinct_titles(schemas: JsonObject) -> None:
    """Give two services' schemas of one name distinct titles (``AdmissionsCreated``,
    ``PractitionersCreated``): client generators name their classes by title, and two classes of
    one name (or two enums of one name and other values) cannot both be generated."""
    names: dict[str, list[str]] = {}
    for key in schemas:
        names.setdefault(key.rsplit(".", 1)[-1], []).append(key)
    for keys in names.values():
        if len(keys) > 1:
            for key in keys:
                service, _, name = key.rpartition(".")
                schemas[key] = {**_object(schemas[key]), "title": f"{service.capitalize()}{name}"}


def _public_parameters(params: list[Json], upstream_template: str, public: tuple[str, ...]) -> list[Json]:
    """The operation's parameters under their public names; of the header parameters, only the
    client's own (``Idempotency-Key``), under their HTTP spelling."""
    renamed = dict(zip(re.findall(r"\{([^}/]+)\}", upstream_template), public, strict=False))
    out: list[Json] = []
    for param in params:
        p = _object(param)
        where, name = p.get("in"), text(field(p, "name"))
        if where == "path":
            out.append(dict(p, name=renamed.get(name, name)))
        elif where != "header":
            out.append(p)
        elif name.lower() in CLIENT_HEADERS:
            schema: JsonObject = {"type": "string", "minLength": 1, "maxLength": 255}
            out.append(dict(p, name="Idempotency-Key", required=True, schema=schema))
    return out


#: OpenAPI links: where the id a creation answers (``$response.body#/id``) is used next, by path
#: parameter. Clients and stateful test generators follow them (create, then read or act on it).
LINKS: dict[tuple[str, str], dict[str, tuple[str, str, str]]] = {
    ("/api/patients", "post"): {
        "GetPatient": ("/api/patients/{id}", "get", "id"),
        "UpdatePatient": ("/api/patients/{id}", "patch", "id"),
        "GetCareTeam": ("/api/patients/{id}/care-team", "get", "id"),
        "GetRecords": ("/api/patients/{id}/records", "get", "id"),
    },
    ("/api/practitioners", "post"): {
        "GetPractitioner": ("/api/practitioners/{id}", "get", "id"),
        "AddShift": ("/api/practitioners/{id}/shifts", "post", "id"),
        "GetSlots": ("/api/practitioners/{id}/slots", "get", "id"),
    },
    ("/api/appointments", "post"): {
        "GetAppointment": ("/api/appointments/{id}", "get", "id"),
        "RescheduleAppointment": ("/api/appointments/{id}/reschedule", "post", "id"),
        "StepAppointment": ("/api/appointments/{id}/{action}", "post", "id"),
    },
    ("/api/wards", "post"): {
        "GetWard": ("/api/wards/{id}", "get", "id"),
        "UpdateWard": ("/api/wards/{id}", "patch", "id"),
    },
    ("/api/admissions", "post"): {
        "GetAdmission": ("/api/admissions/{id}", "get", "id"),
        "GetAdmissionCharges": ("/api/admissions/{id}/charges", "get", "id"),
        "TransferAdmission": ("/api/admissions/{id}/transfer", "post", "id"),
        "DischargeAdmission": ("/api/admissions/{id}/discharge", "post", "id"),
    },
    ("/api/lab/orders", "post"): {
        "GetLabOrder": ("/api/lab/orders/{id}", "get", "id"),
        "StepLabOrder": ("/api/lab/orders/{id}/{action}", "post", "id"),
        "ResultLabOrder": ("/api/lab/orders/{id}/results", "post", "id"),
    },
}


def _link(paths: dict[str, JsonObject]) -> None:
    """Add ``LINKS`` to the 201 answers of the creations present, to operations present."""
    for (path, method), links in LINKS.items():
        created = _at(paths.get(path, {}), method, "responses", "201")
        if not isinstance(created, dict):
            continue
        found: JsonObject = {
            name: {"operationId": _at(paths[target], verb, "operationId"), "parameters": {param: "$response.body#/id"}}
            for name, (target, verb, param) in links.items()
            if verb in paths.get(target, {})
        }
        if found:
            created["links"] = found
