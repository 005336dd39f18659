"""Import rules of STYLE.md, checked on the source: services never import each other, domain is pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src" / "his"
SERVICES = [
    "identity",
    "patients",
    "practitioners",
    "scheduling",
    "admissions",
    "laboratory",
    "inventory",
    "billing",
    "notifications",
    "audit",
    "gateway",
]
IO_LIBS = {"asyncpg", "sqlalchemy", "nats", "grpc", "fastapi", "starlette", "httpx", "uvicorn", "alembic"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_services_do_not_import_each_other(service: str) -> None:
    others = [s for s in SERVICES if s != service]
    for path in (SRC / service).rglob("*.py"):
        for mod in imports(path):
            for other in others:
                assert not (mod == f"his.{other}" or mod.startswith(f"his.{other}.")), f"{path} imports {mod}"


def test_kernel_knows_no_service() -> None:
    for path in (SRC / "kernel").rglob("*.py"):
        for mod in imports(path):
            assert not any(mod == f"his.{s}" or mod.startswith(f"his.{s}.") for s in SERVICES), f"{path}: {mod}"


def test_domain_and_policy_modules_are_pure() -> None:
    """Rules, and who may do what, are decided without IO (``his.access`` and each ``policy``)."""
    policies = sorted(SRC.glob("*/policy.py"))
    assert len(policies) >= 8, policies
    for path in [*SRC.glob("*/domain.py"), *policies, SRC / "access.py"]:
        for mod in imports(path):
            assert mod.split(".")[0] not in IO_LIBS, f"{path} imports {mod}"


def test_clients_know_only_the_contracts() -> None:
    """A shared client of a service's gRPC contract uses the contract, never the service's code."""
    for path in (SRC / "clients").rglob("*.py"):
        for mod in imports(path):
            assert not any(mod == f"his.{s}" or mod.startswith(f"his.{s}.") for s in SERVICES), f"{path}: {mod}"
