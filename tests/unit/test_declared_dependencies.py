"""Every package the code imports is declared in pyproject.toml: the runtime's in
``[project].dependencies``, the tests' and tools' in the ``dev`` group (or the runtime's).

A package that arrives only as someone else's dependency can disappear with an upgrade of that
someone, and `pip install his` would then break at import time.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
LOCAL = {"his", "tests", "bench", "tools", "__future__"}


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime = {_name(r) for r in project["project"]["dependencies"]}
    dev = {_name(r) for r in project["dependency-groups"]["dev"] if isinstance(r, str)}
    return runtime, dev


def _top_level_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found - LOCAL - set(sys.stdlib_module_names)


def _undeclared(folders: list[str], allowed: set[str]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    problems = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for module in sorted(_top_level_imports(path)):
                candidates = {_name(d) for d in distributions.get(module, [])}
                if not candidates & allowed:
                    shown = ", ".join(sorted(candidates)) or "no installed distribution"
                    problems.append(f"{path.relative_to(ROOT)} imports {module} ({shown})")
    return problems


def test_the_runtime_imports_only_packages_it_declares() -> None:
    runtime, _ = _declared()
    problems = _undeclared(["src"], runtime)
    assert not problems, "declare in [project].dependencies:\n" + "\n".join(problems)


def test_tests_and_tools_import_only_declared_packages() -> None:
    runtime, dev = _declared()
    problems = _undeclared(["tests", "tools"], runtime | dev)
    assert not problems, "declare in the dev group (or the runtime's):\n" + "\n".join(problems)
