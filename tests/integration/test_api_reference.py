"""docs/api.md is the public OpenAPI document as Markdown, and it is current."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from his.cli.reference import anchor, markdown, public_document, service_documents
from his.gateway.routing import ROUTES, dumps, table
from his.kernel.json import JsonObject, object_of

COMMITTED = Path(__file__).parents[2] / "docs" / "api.md"
ROUTE_TABLE = Path(__file__).parents[2] / "src" / "his" / "gateway" / "routes.json"


@pytest.fixture(scope="module")
def reference() -> tuple[JsonObject, str]:
    document = public_document()
    return document, markdown(document)


def test_the_committed_reference_is_current(reference: tuple[JsonObject, str]) -> None:
    _, text = reference
    assert COMMITTED.read_text() == text, "docs/api.md is stale: run `make api-reference` and commit it"


def test_the_gateway_route_table_is_the_one_the_services_declare() -> None:
    """The gateway loads routes.json; the services' routes (``public(...)``) are its source."""
    assert ROUTE_TABLE.read_text() == dumps(table(service_documents())), (
        "src/his/gateway/routes.json is stale: run `make api-reference` and commit it"
    )


def test_every_public_route_is_described(reference: tuple[JsonObject, str]) -> None:
    document, text = reference
    paths = object_of(document["paths"])
    for route in ROUTES:
        assert route.method.lower() in object_of(paths.get(route.path, {})), (
            f"{route.method} {route.path} has no operation"
        )
        assert f"\n### {route.method} {route.path}\n" in text
        assert f"(#{anchor(route.method, route.path)})" in text  # listed in the table at the top


def test_building_it_leaves_the_environment_as_it_was() -> None:
    before = dict(os.environ)
    public_document()
    assert dict(os.environ) == before
