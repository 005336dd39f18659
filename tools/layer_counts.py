"""Counts of the application layer's shape, read from the source (no import, no IO beyond reading).

    python tools/layer_counts.py            # a table
    python tools/layer_counts.py --json     # the same figures as JSON

What it counts, in ``src/his`` (the generated gRPC code under ``src/his/proto`` left out):

- the length of every ``router()`` function in a service's ``api/`` package (its routes are
  closures inside it), and how many are over 60 lines; the ``api/`` modules that declare their
  routes on a module-level router instead (``his.kernel.web``), and the longest route there;
- in ``api/`` modules: lines calling ``store.*``, transactions opened (``.uow()``, ``.read()``),
  calls into ``handlers.*``, hand-written ``authenticate(request, ...)`` calls, ``also=``
  callbacks passed to handlers;
- routes, and those declaring neither a ``response_model`` nor a pydantic return type (a 204,
  which has no body, needs neither);
- ``dict[str, Any]`` and ``Any`` in the source, and how many of them are in the operator's
  tooling (``OPERATOR``: the CLI, ``his up``, the benchmarks, the soak, the embedded servers),
  whose JSON reports and process plumbing are not the application layer;
- the gateway's hand-written route entries, and the routes the services mark public
  (``his.kernel.web.public``), from which its table is generated;
- the services whose use cases work through ports (a ``ports.py`` declaring ``Units``) and the
  in-memory fakes of ``his.testing``;
- ``datetime.now()`` calls in the services (not the kernel, the CLI, benchmarks or the soak);
- ``# fmt: skip`` comments.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "his"
HTTP_VERBS = {"get", "post", "put", "patch", "delete"}
LONG = 60
#: Packages that are not services (their own clocks are the operator's, not a use case's).
TOOLING = {"kernel", "cli", "benchmarks", "reliability", "infra", "testing"}
#: The operator's packages.
OPERATOR = {"cli", "benchmarks", "reliability", "infra"}


def sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "proto" not in p.relative_to(SRC).parts[:1])


def is_api(path: Path) -> bool:
    return "api" in path.relative_to(SRC).parts[:-1]


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _is_any(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return node.id == "Any"
    return isinstance(node, ast.Attribute) and node.attr == "Any" and _root_name(node) == "typing"


def _returns_plain(fn: ast.AsyncFunctionDef | ast.FunctionDef) -> bool:
    ann = fn.returns
    if ann is None:
        return True
    text = ast.unparse(ann)
    return text.startswith(("dict", "list", "Any", "None", "Response", "JSONResponse")) or text in {"object"}


def count() -> dict[str, object]:
    figures: Counter[str] = Counter()
    routers: dict[str, int] = {}
    module_level: list[str] = []
    longest_route = 0
    for path in sources():
        text = path.read_text()
        rel = str(path.relative_to(ROOT))
        operator = path.relative_to(SRC).parts[0] in OPERATOR
        figures["dict[str, Any]"] += text.count("dict[str, Any]")
        figures["dict[str, Any] in the operator's tooling"] += text.count("dict[str, Any]") if operator else 0
        figures["# fmt: skip"] += text.count("# fmt: skip")
        if path.relative_to(SRC).parts[-1] == "ports.py" and "Units[" in text:
            figures["services whose use cases work through ports"] += 1
        if path.relative_to(SRC).parts[0] == "gateway":
            figures["gateway: hand-written route entries"] += len(re.findall(r"^\s*_r\(", text, re.M))
        if path.relative_to(SRC).parts[0] not in TOOLING:
            figures["routes marked public"] += len(re.findall(r"openapi_extra=public\(", text))
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if _is_any(node):
                figures["Any"] += 1
                figures["Any in the operator's tooling"] += 1 if operator else 0
            elif isinstance(node, ast.Call):
                f = node.func
                is_now = isinstance(f, ast.Attribute) and f.attr == "now" and ast.unparse(f.value).endswith("datetime")
                if is_now and path.relative_to(SRC).parts[0] not in TOOLING:
                    figures["datetime.now() in services"] += 1
        if not is_api(path):
            continue
        store_lines: set[int] = set()
        if any(
            isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "router" and "APIRouter(" in ast.unparse(n.value)
            for n in tree.body
        ):
            module_level.append(rel)
            for n in tree.body:
                routed = isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    ast.unparse(d).startswith("router.") for d in n.decorator_list
                )
                if routed and n.end_lineno:
                    longest_route = max(longest_route, n.end_lineno - n.lineno + 1)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "router" and node.end_lineno:
                routers[rel] = node.end_lineno - node.lineno + 1
            if isinstance(node, ast.Call):
                f = node.func
                root = _root_name(f)
                if root == "store":
                    store_lines.add(node.lineno)
                elif root == "handlers":
                    figures["api: calls into handlers"] += 1
                if isinstance(f, ast.Attribute) and f.attr in {"uow", "read"} and not node.args:
                    figures["api: transactions opened"] += 1
                if isinstance(f, ast.Name) and f.id == "authenticate":
                    figures["api: authenticate(request, ...) calls"] += 1
                if any(k.arg == "also" for k in node.keywords):
                    figures["api: also= callbacks"] += 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for d in node.decorator_list:
                    if isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr in HTTP_VERBS:
                        figures["routes"] += 1
                        declared = any(k.arg == "response_model" for k in d.keywords)
                        empty = any(
                            k.arg == "status_code" and isinstance(k.value, ast.Constant) and k.value.value == 204
                            for k in d.keywords
                        )
                        if not declared and not empty and _returns_plain(node):
                            figures["routes without a response schema"] += 1
        figures["api: lines calling store.*"] += len(store_lines)
    lengths = sorted(routers.values(), reverse=True)
    return {
        "router() lines": {k: routers[k] for k in sorted(routers, key=lambda k: -routers[k])},
        f"router() over {LONG} lines": sum(1 for n in lengths if n > LONG),
        "api modules on a module-level router": len(module_level),
        "longest route on a module-level router (lines)": longest_route,
        **dict(sorted(figures.items())),
    }


def main(argv: list[str]) -> int:
    figures = count()
    if "--json" in argv:
        print(json.dumps(figures, indent=2))
        return 0
    for key, value in figures.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {re.sub(r'^src/his/', '', k):40} {v:>5}")
        else:
            print(f"{key:45} {value:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
