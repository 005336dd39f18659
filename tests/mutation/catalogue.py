"""The list of seeded bugs (mutants) in ``tests/mutation/mutants/*.toml`` and its checks.

A mutant is one bug seeded into the real code: in ``file``, the text ``find`` (which must occur
exactly once) becomes ``replace``. ``tests`` name the tests that must fail on it. A bug that needs
two changes at once (a constraint dropped from a migration *and* the insert that names it) lists
its further changes under ``also``, each with its own ``file``, ``find`` and ``replace``:

```toml
[[mutant]]
id = "bed-charge-not-unique"
file = "src/his/admissions/store/migrations/0002_wards_beds_admissions.py"
find = '''…'''
replace = '''…'''
breaks = "what promise this breaks, in one line"
tests = ["tests/integration/test_admissions.py::test_name"]
also = [{ file = "src/his/admissions/store/__init__.py", find = '''…''', replace = '''…''' }]
```
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MUTANTS_DIR = Path("tests/mutation/mutants")
ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class CatalogueError(Exception):
    """A mutant file that cannot be read or a mutant that does not fit the code."""


@dataclass(frozen=True)
class Edit:
    """One change of a mutant: ``find`` becomes ``replace`` in ``file`` (relative to the repo)."""

    file: str
    find: str
    replace: str

    def apply(self, text: str) -> str:
        """``text`` with the edit made; raises if ``find`` does not occur exactly once (a stale mutant)."""
        n = text.count(self.find)
        if n != 1:
            raise CatalogueError(f"{self.file}: the text to replace occurs {n} times, not once (stale mutant)")
        return text.replace(self.find, self.replace)


@dataclass(frozen=True)
class Mutant:
    id: str
    edits: tuple[Edit, ...]
    breaks: str
    tests: tuple[str, ...]
    source: str  # the mutant file it comes from, relative to the repo

    @property
    def file(self) -> str:
        return self.edits[0].file

    @property
    def files(self) -> list[str]:
        return list(dict.fromkeys(e.file for e in self.edits))

    def mutated(self, root: Path) -> dict[str, str]:
        """The mutated text of each file the mutant changes, read from the tree at ``root``."""
        texts: dict[str, str] = {}
        for edit in self.edits:
            text = texts[edit.file] if edit.file in texts else (root / edit.file).read_text(encoding="utf-8")
            try:
                texts[edit.file] = edit.apply(text)
            except CatalogueError as exc:
                raise CatalogueError(f"mutant {self.id}: {exc}") from None
        return texts


def _text(table: dict[str, object], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise CatalogueError(f"{where}: {key!r} must be a non-empty string")
    return value


def _edit(table: object, where: str) -> Edit:
    if not isinstance(table, dict):
        raise CatalogueError(f"{where}: an edit must be a table with file, find and replace")
    edit = Edit(_text(table, "file", where), _text(table, "find", where), str(table.get("replace", "")))
    if "replace" not in table:
        raise CatalogueError(f"{where}: 'replace' is missing")
    if edit.find == edit.replace:
        raise CatalogueError(f"{where}: 'replace' is the same as 'find'")
    return edit


def load_file(path: Path, root: Path = REPO) -> list[Mutant]:
    source = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{source}: {exc}") from None
    known = {"id", "file", "find", "replace", "breaks", "tests", "also"}
    mutants: list[Mutant] = []
    for n, table in enumerate(doc.get("mutant", []), 1):
        where = f"{source}, mutant {n}"
        mid = _text(table, "id", where)
        where = f"{source}, mutant {mid}"
        if unknown := set(table) - known:
            raise CatalogueError(f"{where}: unknown keys {sorted(unknown)}")
        if not ID.match(mid):
            raise CatalogueError(f"{where}: the id must be kebab-case")
        also = table.get("also", [])
        if not isinstance(also, list):
            raise CatalogueError(f"{where}: 'also' must be a list of edits")
        edits = (_edit(table, where), *(_edit(t, f"{where}, also[{i}]") for i, t in enumerate(also)))
        tests = table.get("tests")
        if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t for t in tests):
            raise CatalogueError(f"{where}: 'tests' must be a non-empty list of test ids")
        mutants.append(Mutant(mid, edits, _text(table, "breaks", where), tuple(tests), source))
    return mutants


def load(root: Path = REPO) -> list[Mutant]:
    """Every mutant of every file, in file then list order; ids must be unique."""
    mutants: list[Mutant] = []
    for path in sorted((root / MUTANTS_DIR).glob("*.toml")):
        mutants.extend(load_file(path, root))
    seen: dict[str, str] = {}
    for m in mutants:
        if m.id in seen:
            raise CatalogueError(f"mutant id {m.id!r} appears in {seen[m.id]} and {m.source}")
        seen[m.id] = m.source
    return mutants


def test_file(test_id: str) -> str:
    """The file part of a pytest node id (``path::name[param]`` or a bare path)."""
    return test_id.split("::", 1)[0]


def problems(m: Mutant, root: Path = REPO) -> list[str]:
    """What does not fit the code in the tree at ``root``: missing files, stale text, unknown tests."""
    found: list[str] = []
    for f in m.files:
        if not (root / f).is_file():
            found.append(f"{m.id}: {f} does not exist")
    if not found:
        try:
            m.mutated(root)
        except CatalogueError as exc:
            found.append(str(exc))
    for t in m.tests:
        path = root / test_file(t)
        if not path.is_file():
            found.append(f"{m.id}: test file {test_file(t)} does not exist")
            continue
        parts = t.split("::")[1:]
        if parts:
            name = parts[-1].split("[", 1)[0]
            if not re.search(
                rf"^\s*(async\s+)?def {re.escape(name)}\(|^class {re.escape(name)}\b",
                path.read_text(encoding="utf-8"),
                re.M,
            ):
                found.append(f"{m.id}: {test_file(t)} has no test {name}")
    return found
