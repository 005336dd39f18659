"""The API reference (docs/api.md): the public OpenAPI document as Markdown.

The document is the one the gateway serves at ``/openapi.json``, built the same way without
starting anything: each service's routes come from its own composition root (``app.py``), given
a context with no connections (nothing connects while routes are declared) and a throwaway
workload identity, and ``his.gateway.openapi.assemble`` puts them under their public paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

from his.cli.services import SERVICES
from his.kernel.json import Json, JsonObject, json_object, object_of, text

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js.client import JetStreamContext

    from his.kernel.db import Database
    from his.kernel.outbox import OutboxRelay

#: Responses every operation may give (``assemble`` adds them); the reference names them once.
GENERIC = {"problem", "the request does not match the schema"}
JSON = "application/json"


@contextlib.contextmanager
def _declaring_environment() -> Iterator[dict[str, str]]:
    """What the composition roots read from the environment while they declare their routes (the
    peers' addresses, identity's key passphrase), and a workload identity; restored afterwards.
    Nothing is reached: the addresses are never called."""
    from his.kernel.pki import LocalCA, spiffe_id

    nowhere = "127.0.0.1:9"  # the discard port: never connected to
    names = {f"HIS_{s.upper()}_GRPC": nowhere for s in SERVICES}
    names |= {"HIS_IDENTITY_URL": f"https://{nowhere}", "HIS_IDENTITY_KEY_PASSPHRASE": "declaring routes only"}
    # `his up` always gives billing its (test) payment provider, whose checkout is a public route.
    names |= {"HIS_PAYMENT_WEBHOOK_SECRET": "declaring routes only", "HIS_PAYMENT_WEBHOOK_URL": f"https://{nowhere}"}
    saved = {k: os.environ.get(k) for k in names}
    with tempfile.TemporaryDirectory(prefix="his-reference-") as tmp:
        identity = LocalCA(Path(tmp) / "pki").ensure().issue("reference", spiffe_id("api-reference"))
        os.environ.update(names)
        try:
            yield identity.env()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def service_documents() -> dict[str, JsonObject]:
    """Each service's OpenAPI document, as its process would serve it."""
    from fastapi import FastAPI

    from his.kernel import problems, web
    from his.kernel.config import ServiceSettings
    from his.kernel.service import ServiceContext

    async def build(tls: dict[str, str]) -> dict[str, JsonObject]:
        documents = {}
        for name in SERVICES:
            defn = importlib.import_module(f"his.{name}.app").build()
            settings = ServiceSettings(
                service=name, tls_cert=tls["HIS_TLS_CERT"], tls_key=tls["HIS_TLS_KEY"], tls_ca=tls["HIS_TLS_CA"]
            )
            # None for the database, NATS and the relay: nothing connects while routes are
            # declared, and routes only keep them for later.
            ctx = ServiceContext(
                name,
                settings,
                cast("Database", None),
                cast("NATS", None),
                cast("JetStreamContext", None),
                cast("OutboxRelay", None),
            )
            app = FastAPI(title=f"his {name}", description=defn.description, docs_url=None, redoc_url=None)
            if defn.routes is not None:
                web.mount(app, defn.routes(ctx))
            problems.install(app)
            documents[name] = json_object(app.openapi())
        return documents

    with _declaring_environment() as tls:
        return asyncio.run(build(tls))  # a running loop, as the gRPC channels the routes keep expect


def public_document() -> JsonObject:
    """The public document the gateway serves at /openapi.json."""
    from his.gateway.openapi import assemble
    from his.gateway.routing import table

    documents = service_documents()
    return json_object(assemble(documents, table(documents)))


def _member(doc: JsonObject, key: str) -> JsonObject:
    """``doc[key]``, an object, or an empty one when ``doc`` has none."""
    value = doc.get(key)
    return {} if value is None else object_of(value)


def _list(doc: JsonObject, key: str) -> list[Json]:
    """``doc[key]``, a list, or an empty one when ``doc`` has none."""
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"expected a list at {key!r}, got {type(value).__name__}")
    return value


def _text(doc: JsonObject, key: str) -> str:
    """``doc[key]``, text, or empty text when ``doc`` has none."""
    return text(doc.get(key, ""))


def _tag(op: JsonObject, default: str) -> str:
    """An operation's first tag (its service), or ``default`` when it has none."""
    return text((_list(op, "tags") or [default])[0])


class _Schemas:
    """Renders JSON Schemas of the document as short Markdown."""

    def __init__(self, document: JsonObject) -> None:
        self.components: JsonObject = _member(_member(document, "components"), "schemas")

    @staticmethod
    def name(ref: str) -> str:
        return ref.rsplit("/", 1)[1].split(".", 1)[-1]

    def resolve(self, schema: JsonObject) -> JsonObject:
        ref = schema.get("$ref")
        return dict(_member(self.components, ref.rsplit("/", 1)[1])) if isinstance(ref, str) else schema

    def type_of(self, schema: JsonObject) -> str:
        """A short type: ``uuid``, ``list of `Line```, ``one of `a`, `b```, ``string or null``."""
        if "$ref" in schema:
            target = self.resolve(schema)
            if "enum" in target and target.get("type") != "object":
                return self.type_of(target)
            return f"`{self.name(text(schema['$ref']))}`"
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return " or ".join(dict.fromkeys(self.type_of(object_of(s)) for s in _list(schema, key)))
        if "enum" in schema:
            return "one of " + ", ".join(f"`{v}`" for v in _list(schema, "enum"))
        if "const" in schema:
            return f"`{schema['const']}`"
        kind = schema.get("type", "any")
        if kind == "array":
            return f"list of {self.type_of(_member(schema, 'items'))}"
        if kind == "null":
            return "null"
        if kind == "string" and "format" in schema:
            return str(schema["format"])
        if kind == "string" and "pattern" in schema and "maxLength" not in schema:
            return f"string matching `{schema['pattern']}`"
        return str(kind)

    def refs_in(self, schema: JsonObject) -> list[str]:
        """The object schemas a schema names (directly, in unions or lists), in order."""
        found: list[str] = []

        def walk(node: Json) -> None:
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and self.resolve(node).get("type") == "object":
                    found.append(ref)
                    return
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(schema)
        return list(dict.fromkeys(found))

    def fields(self, ref: str, *, seen: set[str], named: bool = True) -> list[str]:
        """A table of an object schema's fields, then the tables of the objects it names."""
        schema = self.resolve({"$ref": ref})
        props = _member(schema, "properties")
        if not props:
            return ["A JSON object.", ""]
        required = set(_list(schema, "required"))
        lines = [f"`{self.name(ref)}`:", ""] if named else []
        lines += ["| field | type | required | notes |", "|---|---|---|---|"]
        for field, value in props.items():
            spec = object_of(value)
            notes = _cell(_text(spec, "description")) or _constraints(spec)
            needed = "yes" if field in required else "no"
            lines.append(f"| `{field}` | {self.type_of(spec)} | {needed} | {notes} |")
        lines.append("")
        seen.add(ref)
        for nested in self.refs_in(props):
            if nested not in seen:
                lines += self.fields(nested, seen=seen)
        return lines

    def inline(self, schema: JsonObject) -> str:
        """An answer's body in one line: its type and, for an object, its fields."""
        described = self.type_of(schema)
        target = self.resolve(_member(schema, "items") if schema.get("type") == "array" else schema)
        props = _member(target, "properties")
        if not props and described == "object":
            return "a JSON object"
        if props:
            described += ": " + ", ".join(f"`{k}` ({self.type_of(object_of(v))})" for k, v in props.items())
        return described


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _constraints(spec: JsonObject) -> str:
    said = []
    low, high = spec.get("minLength"), spec.get("maxLength")
    if low is not None or high is not None:
        said.append(f"{low or 0}–{high} characters" if high is not None else f"at least {low} characters")
    names = {
        "minimum": "≥ {}",
        "maximum": "≤ {}",
        "exclusiveMinimum": "> {}",
        "exclusiveMaximum": "< {}",
        "minItems": "at least {} items",
        "maxItems": "at most {} items",
    }
    said += [text.format(spec[key]) for key, text in names.items() if key in spec]
    if spec.get("default") is not None:
        said.append(f"default `{json.dumps(spec['default'])}`")
    return ", ".join(said)


def _prose(text: str) -> str:
    """A docstring as one Markdown paragraph (its reStructuredText ``code`` as Markdown `code`)."""
    return " ".join(text.split()).replace("``", "`")


def anchor(method: str, path: str) -> str:
    """The anchor a Markdown renderer gives the heading ``method path`` (GitHub's rule)."""
    return re.sub(r"[^a-z0-9 _-]", "", f"{method} {path}".lower()).replace(" ", "-")


def _operation(method: str, path: str, op: JsonObject, schemas: _Schemas) -> list[str]:
    lines = [f"### {method.upper()} {path}", ""]
    summary, description = op.get("summary", ""), _prose(text(op.get("description") or ""))
    lines += [f"**{summary}.** {description}".strip(), ""]
    lines += [
        "🔒 Needs a bearer token; who may call it is in the description."
        if op.get("security")
        else "Public: no token.",
        "",
    ]
    params = [object_of(p) for p in _list(op, "parameters")]
    if params:
        lines += ["| parameter | in | type | required | notes |", "|---|---|---|---|---|"]
        for p in params:
            spec = _member(p, "schema")
            notes = _cell(_text(p, "description")) or _constraints(spec)
            required = "yes" if p.get("required") else "no"
            lines.append(f"| `{p['name']}` | {p['in']} | {schemas.type_of(spec)} | {required} | {notes} |")
        lines.append("")
    declared = _member(_member(_member(op, "requestBody"), "content"), JSON).get("schema")
    if declared:
        body = object_of(declared)
        refs = [text(body["$ref"])] if "$ref" in body else schemas.refs_in(body)
        lines += [f"Request body (JSON, {schemas.type_of(body)}):", ""]
        seen: set[str] = set()
        for ref in refs:
            lines += schemas.fields(ref, seen=seen, named=len(refs) > 1)
    answers = []
    for code, answer in _member(op, "responses").items():
        response = object_of(answer)
        if response.get("description") in GENERIC and not code.startswith("2"):
            continue
        schema = _member(_member(response, "content"), JSON).get("schema")
        what = (
            schemas.inline(object_of(schema))
            if schema
            else ("no body" if code == "204" else _text(response, "description"))
        )
        if not code.startswith("2"):
            what = _cell(_text(response, "description")) + " (problem+json)"
        answers.append(f"- `{code}` {what}".rstrip())
    lines += ["Answers:", "", *answers, ""]
    return lines


def markdown(document: JsonObject) -> str:
    """docs/api.md: a table of every operation, then each with its parameters, body and answers."""
    schemas = _Schemas(document)
    operations = [
        (m, p, object_of(op)) for p, ops in object_of(document["paths"]).items() for m, op in object_of(ops).items()
    ]
    # One section per service, in the order `his up` starts them; paths in the gateway's order.
    order = {name: i for i, name in enumerate(SERVICES)}
    operations.sort(key=lambda o: order.get(_tag(o[2], ""), len(order)))
    lines = [
        "# API reference",
        "",
        "Generated by `his api reference` (`make api-reference`) from the OpenAPI document the gateway",
        "serves at `/openapi.json`; do not edit by hand. The gateway's `/docs` is an interactive explorer",
        "of the same document.",
        "",
        "Every path is under the gateway (`http://127.0.0.1:4004` by default, `HIS_GATEWAY_PORT`).",
        "Bodies are JSON; ids are UUIDs; times are RFC 3339 with an offset; money is a decimal string",
        "with its `currency`. 🔒 marks operations that need `Authorization: Bearer <access token>`",
        "(from `POST /api/auth/login`); who may call each is said in its description (see also",
        "[roles.md](roles.md)). Errors are `application/problem+json` (`type`, `title`, `status`,",
        "`detail`). Besides the answers listed, any operation may answer `400` (a malformed request),",
        "`413` (a body over 1 MiB), `422` (a request that does not match the schema, or a value the",
        "hospital does not know), `429` (rate limit, with `Retry-After`) and `503` (a service it needs",
        "is unavailable); a 🔒 operation also `401` (no valid token) and `403` (not allowed).",
        "",
        "| method | path | summary |",
        "|---|---|---|",
    ]
    for method, path, op in operations:
        lock = " 🔒" if op.get("security") else ""
        link = f"[`{path}`](#{anchor(method, path)})"
        lines.append(f"| `{method.upper()}` | {link}{lock} | {_cell(_text(op, 'summary'))} |")
    lines.append("")
    section = None
    for method, path, op in operations:
        tag = _tag(op, "other")
        if tag != section:
            section = tag
            lines += [f"## {tag}", ""]
        lines += _operation(method, path, op, schemas)
    return "\n".join(lines).rstrip() + "\n"
