"""The committed generated code in src/his/proto is what `make proto` makes from proto/ now."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).parents[2]


def load_protogen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("protogen", ROOT / "tools" / "protogen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_committed_generated_code_matches_the_contracts(tmp_path: Path) -> None:
    protogen = load_protogen()
    protogen.generate(tmp_path / "proto")
    fresh, committed = tree(tmp_path / "proto"), tree(ROOT / "src" / "his" / "proto")
    assert sorted(fresh) == sorted(committed), "run `make proto` and commit src/his/proto"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}: run `make proto` and commit src/his/proto"
